//! hyper answers a request head it cannot parse (400) or that overflows its buffer (431)
//! by itself, with an empty body, before the gateway sees a request. These functions turn
//! such an answer into the gateway's JSON error, with a request id and an access-log line.

use std::io::Write;
use std::time::Instant;

use crate::access_log;
use crate::gateway::new_request_id;
use crate::rescue::GatewayError;

/// The JSON answer to send instead of `head`, when `head` is hyper's own answer to a
/// request head it refused from `client_ip`; `started` is when that head began to arrive.
pub(super) fn replacement(
    head: &[u8],
    max_header_bytes: usize,
    client_ip: &str,
    started: Instant,
) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let own_answer = head.ends_with(b"\r\n\r\n")
        && contains(head, b"\r\nconnection: close\r\n")
        && contains(head, b"\r\ncontent-length: 0\r\n");
    if !own_answer {
        return None;
    }
    let error = match rest.get(..4)? {
        b"400 " => GatewayError::BadRequest("the request head is not valid HTTP/1.1".into()),
        b"431 " => GatewayError::HeadersTooLarge {
            limit: max_header_bytes,
        },
        _ => return None,
    };
    let request_id = new_request_id();
    let body = error.json(&request_id);
    let mut answer = Vec::with_capacity(head.len() + body.len() + 128);
    let mut lines = head.split(|&b| b == b'\n');
    answer.extend_from_slice(lines.next()?);
    answer.push(b'\n');
    let _ = write!(
        answer,
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {request_id}\r\n",
        body.len()
    );
    if let Some(date) = lines.find(|line| line.starts_with(b"date: ")) {
        answer.extend_from_slice(date);
        answer.push(b'\n');
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(body.as_bytes());
    access_log::refused(
        error.status_and_code().0.as_u16(),
        &request_id,
        client_ip,
        started,
        body.len(),
    );
    Some(answer)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 12:29:45 GMT\r\n\r\n";

    #[test]
    fn hyper_refusals_become_json_errors() {
        let answer = replacement(HYPER_431, 4096, "127.0.0.1", Instant::now()).expect("replaced");
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(
            head.contains("\r\ndate: Mon, 23 Nov 2026 12:29:45 GMT"),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "headers_too_large");
        assert!(head.contains(&format!(
            "x-request-id: {}",
            json["request_id"].as_str().unwrap()
        )));

        let bad = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let text = String::from_utf8(replacement(bad, 4096, "127.0.0.1", Instant::now()).unwrap())
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.contains("\"error\":\"bad_request\""), "{text}");
    }

    #[test]
    fn other_writes_are_left_alone() {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(replacement(response, 4096, "127.0.0.1", Instant::now()).is_none());
        let body = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n";
        assert!(
            replacement(body, 4096, "127.0.0.1", Instant::now()).is_none(),
            "not a whole head"
        );
        assert!(
            replacement(b"\0\0\x12\x04\0\0\0\0\0", 4096, "127.0.0.1", Instant::now()).is_none(),
            "HTTP/2 SETTINGS"
        );
    }
}
