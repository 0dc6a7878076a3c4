//! The `respond` terminal: a static answer (status, headers, body) or a redirect whose
//! `Location` is built from the route's path captures, without any upstream (Envoy's
//! `direct_response`).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::Terminal;
use crate::body::{Body, full};
use crate::config::{RespondConfig, TemplatePart};
use crate::pipeline::Flow;
use crate::pipeline::stage::{RequestParts, StageFuture};
use crate::rescue::GatewayError;

/// A route's static answer.
pub struct RespondTerminal(pub RespondConfig);

impl Terminal for RespondTerminal {
    fn serve<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        _request: RequestParts,
    ) -> StageFuture<'s, Response<Body>> {
        Box::pin(std::future::ready(self.answer(flow.params())))
    }

    fn kind(&self) -> &'static str {
        "respond"
    }
}

impl RespondTerminal {
    fn answer(&self, params: &[(String, String)]) -> Result<Response<Body>, GatewayError> {
        let config = &self.0;
        let mut response = Response::new(full(config.body.clone()));
        *response.status_mut() = config.status;
        *response.headers_mut() = config.headers.clone();
        if let Some(template) = &config.location {
            let mut location = String::new();
            for part in &template.parts {
                match part {
                    TemplatePart::Literal(text) => location.push_str(text),
                    TemplatePart::Capture(name) => {
                        if let Some((_, value)) = params.iter().find(|(k, _)| k == name) {
                            location.push_str(value);
                        }
                    }
                }
            }
            let value = HeaderValue::from_str(&location).map_err(|_| {
                GatewayError::BadRequest("the redirect target is not a valid header value".into())
            })?;
            response.headers_mut().insert(header::LOCATION, value);
        }
        if response.status() == StatusCode::NO_CONTENT {
            *response.body_mut() = crate::body::empty();
        }
        Ok(response)
    }
}
