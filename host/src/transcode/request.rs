//! Builds a method's request message from an HTTP request: the path's variables, the query
//! parameters and the JSON body, each mapped to fields as the binding says.

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json};

use super::rules::{Binding, BodyRule, field_path};
use super::template::percent_decode;

/// Why a request cannot become a request message (a 400, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// The request message of `binding`'s method, from the path's `variables`, the `query`
/// string and the `body`.
pub fn build(
    binding: &Binding,
    variables: Vec<(Vec<String>, String)>,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, RequestError> {
    let input = binding.rpc.input();
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(body)
    };
    let mut message = match (&binding.body, body) {
        (BodyRule::Whole, Some(body)) => {
            let mut json = serde_json::Deserializer::from_slice(body);
            let message = deserialize(&input, &mut json)?;
            json.end()
                .map_err(|e| RequestError(format!("invalid JSON body: {e}")))?;
            message
        }
        (BodyRule::Field(field), Some(body)) => {
            let value: Json = serde_json::from_slice(body)
                .map_err(|e| RequestError(format!("invalid JSON body: {e}")))?;
            let mut wrapped = Map::new();
            wrapped.insert(field.name().to_string(), value);
            deserialize(&input, Json::Object(wrapped))?
        }
        _ => DynamicMessage::new(input.clone()),
    };
    let mut params = Map::new();
    for (path, value) in variables {
        let field = field_path(&input, &path).map_err(RequestError)?;
        let leaf = typed(&field, &value, &path.join("."))?;
        insert(&mut params, &path, leaf, false, &path.join("."))?;
    }
    for (name, value) in query_pairs(query.unwrap_or("")) {
        if matches!(binding.body, BodyRule::Whole) {
            return Err(RequestError(format!(
                "unknown query parameter `{}`: `{} {}` takes every field from the body",
                crate::text::untrusted(&name),
                binding.method,
                binding.pattern
            )));
        }
        let path: Vec<String> = name.split('.').map(str::to_string).collect();
        let field = field_path(&input, &path).map_err(|reason| {
            RequestError(format!(
                "unknown query parameter `{}`: {reason}",
                crate::text::untrusted(&name)
            ))
        })?;
        if let BodyRule::Field(body_field) = &binding.body
            && (body_field.name() == path[0] || body_field.json_name() == path[0])
        {
            return Err(RequestError(format!(
                "query parameter `{}` sets a field the body sets",
                crate::text::untrusted(&name)
            )));
        }
        if field.is_map() {
            return Err(RequestError(format!(
                "query parameter `{}` names a map field, which only the body can set",
                crate::text::untrusted(&name)
            )));
        }
        let leaf = typed(&field, &value, &name)?;
        insert(&mut params, &path, leaf, field.is_list(), &name)?;
    }
    if !params.is_empty() {
        let from_params = deserialize(&input, Json::Object(params))?;
        message
            .merge(from_params.encode_to_vec().as_slice())
            .map_err(|e| RequestError(format!("cannot merge parameters: {e}")))?;
    }
    Ok(message)
}

/// Deserializes a message, naming the field a problem is at.
fn deserialize<'de, D: serde::Deserializer<'de>>(
    input: &MessageDescriptor,
    json: D,
) -> Result<DynamicMessage, RequestError> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(json, &mut track);
    DynamicMessage::deserialize_with_options(input.clone(), tracked, &options).map_err(|error| {
        let path = track.path().to_string();
        let error = crate::text::untrusted(&error.to_string());
        if path.is_empty() || path == "." {
            RequestError(format!("invalid JSON body: {error}"))
        } else {
            RequestError(format!(
                "invalid JSON body at `{}`: {error}",
                crate::text::untrusted(&path)
            ))
        }
    })
}

/// A parameter's text as the JSON value its field takes.
fn typed(field: &FieldDescriptor, text: &str, name: &str) -> Result<Json, RequestError> {
    Ok(match field.kind() {
        Kind::Bool => match text {
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            _ => {
                return Err(RequestError(format!(
                    "parameter `{}` must be `true` or `false`",
                    crate::text::untrusted(name)
                )));
            }
        },
        Kind::Enum(_) => match text.parse::<i32>() {
            Ok(number) => Json::from(number),
            Err(_) => Json::String(text.to_string()),
        },
        Kind::Message(message)
            if !message.full_name().starts_with("google.protobuf.")
                || message.full_name() == "google.protobuf.Struct" =>
        {
            return Err(RequestError(format!(
                "parameter `{}` is a message; set its fields instead (`{}.FIELD=…`)",
                crate::text::untrusted(name),
                crate::text::untrusted(name)
            )));
        }
        _ => Json::String(text.to_string()),
    })
}

/// Puts `leaf` at `path` in the JSON tree; a repeated field collects every value.
fn insert(
    tree: &mut Map<String, Json>,
    path: &[String],
    leaf: Json,
    repeated: bool,
    name: &str,
) -> Result<(), RequestError> {
    let (last, parents) = path.split_last().expect("a field path is never empty");
    let mut node = tree;
    for part in parents {
        let next = node
            .entry(part.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        node = match next {
            Json::Object(map) => map,
            _ => {
                return Err(RequestError(format!(
                    "parameter `{}` goes inside a field set as a value",
                    crate::text::untrusted(name)
                )));
            }
        };
    }
    match (node.get_mut(last), repeated) {
        (None, false) => {
            node.insert(last.clone(), leaf);
        }
        (None, true) => {
            node.insert(last.clone(), Json::Array(vec![leaf]));
        }
        (Some(Json::Array(values)), true) => values.push(leaf),
        (Some(_), _) => {
            return Err(RequestError(format!(
                "parameter `{}` is given twice, but its field is not repeated",
                crate::text::untrusted(name)
            )));
        }
    }
    Ok(())
}

/// `a=1&b=x+y` → `[("a", "1"), ("b", "x y")]`, percent-decoded; empty pairs are skipped.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_decode(&text.replace('+', " "), true);
            (decode(name), decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prost_reflect::Value;

    use super::*;
    use crate::transcode::{Api, JsonOptions, Lookup, StreamFormat};

    const PROTO: &str = r#"syntax = "proto3";
package t;
import "google/api/annotations.proto";
message Filter { string theme = 1; bool open = 2; }
enum Kind { KIND_UNSPECIFIED = 0; BIG = 1; }
message Req { int64 id = 1; Filter filter = 2; repeated int32 ids = 3; Kind kind = 4; string note = 5; map<string, string> tags = 6; }
service S {
  rpc Get(Req) returns (Req) { option (google.api.http) = { get: "/v1/things/{id}" }; }
  rpc Put(Req) returns (Req) { option (google.api.http) = { put: "/v1/things/{id}" body: "filter" }; }
  rpc All(Req) returns (Req) { option (google.api.http) = { post: "/v1/things" body: "*" }; }
}
"#;

    fn api() -> Api {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("wasmgate-request-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let file = dir.join("t.proto");
        std::fs::write(&file, PROTO).expect("writing the proto");
        let api = Api::load(
            &[file],
            &[],
            &[],
            JsonOptions::default(),
            StreamFormat::Ndjson,
        );
        std::fs::remove_dir_all(&dir).ok();
        api.expect("loads")
    }

    fn build_for(
        api: &Api,
        method: http::Method,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Result<DynamicMessage, RequestError> {
        let Lookup::Found(binding, variables) = api.lookup(&method, path) else {
            panic!("no binding for {method} {path}");
        };
        build(binding, variables, query, body.as_bytes())
    }

    fn field(message: &DynamicMessage, name: &str) -> Value {
        message
            .get_field_by_name(name)
            .expect("a field")
            .into_owned()
    }

    #[test]
    fn path_query_and_body_fill_the_message() {
        let api = api();
        let message = build_for(
            &api,
            http::Method::GET,
            "/v1/things/42",
            Some("filter.theme=a+b&filter.open=true&ids=1&ids=2&kind=BIG&note=%E2%9C%93"),
            "",
        )
        .expect("builds");
        assert_eq!(field(&message, "id"), Value::I64(42));
        assert_eq!(
            field(&message, "ids"),
            Value::List(vec![Value::I32(1), Value::I32(2)])
        );
        assert_eq!(field(&message, "kind"), Value::EnumNumber(1));
        assert_eq!(field(&message, "note"), Value::String("✓".into()));
        let Value::Message(filter) = field(&message, "filter") else {
            panic!("a message");
        };
        assert_eq!(field(&filter, "theme"), Value::String("a b".into()));
        assert_eq!(field(&filter, "open"), Value::Bool(true));

        let message = build_for(
            &api,
            http::Method::PUT,
            "/v1/things/7",
            Some("note=x"),
            r#"{"theme": "t"}"#,
        )
        .expect("builds");
        assert_eq!(field(&message, "id"), Value::I64(7));
        assert_eq!(field(&message, "note"), Value::String("x".into()));
    }

    #[test]
    fn bad_parameters_and_bodies_are_named() {
        let api = api();
        let error = |method, path, query, body| {
            build_for(&api, method, path, query, body)
                .expect_err("refused")
                .0
        };
        let get = http::Method::GET;
        assert!(error(get.clone(), "/v1/things/1", Some("nope=1"), "").contains("`nope`"));
        assert!(
            error(get.clone(), "/v1/things/1", Some("filter.nope=1"), "").contains("`filter.nope`")
        );
        assert!(error(get.clone(), "/v1/things/1", Some("note=a&note=b"), "").contains("twice"));
        assert!(error(get.clone(), "/v1/things/1", Some("filter=x"), "").contains("is a message"));
        assert!(error(get.clone(), "/v1/things/1", Some("tags=x"), "").contains("map field"));
        assert!(
            error(get.clone(), "/v1/things/1", Some("filter.open=yes"), "")
                .contains("`true` or `false`")
        );
        assert!(error(get, "/v1/things/x", None, "").contains("invalid"));
        let post = http::Method::POST;
        assert!(
            error(post.clone(), "/v1/things", Some("note=x"), "{}")
                .contains("every field from the body")
        );
        assert!(
            error(
                post.clone(),
                "/v1/things",
                None,
                r#"{"filter": {"open": "no"}}"#
            )
            .contains("`filter.open`")
        );
        assert!(error(post.clone(), "/v1/things", None, r#"{"colour": 1}"#).contains("colour"));
        assert!(
            error(post, "/v1/things", None, r#"{"id": 1} trailing"#).contains("invalid JSON body")
        );
        let put = http::Method::PUT;
        assert!(error(put, "/v1/things/1", Some("filter.theme=x"), "{}").contains("the body sets"));
    }

    #[test]
    fn query_strings_are_split_and_decoded() {
        assert_eq!(
            query_pairs("a=1&&b=x+y%21&c&d="),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x y!".to_string()),
                ("c".to_string(), String::new()),
                ("d".to_string(), String::new()),
            ]
        );
    }
}
