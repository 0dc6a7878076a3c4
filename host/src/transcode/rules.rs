//! The HTTP bindings of a compiled service: each method's `google.api.http` rule (and its
//! `additional_bindings`) checked against the method's messages.

use http::Method;
use http::uri::PathAndQuery;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

use super::template::Template;

/// Where the request message comes from besides the path and the query.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body: every field not in the path may come from the query.
    None,
    /// `body: "*"`: the whole JSON body is the request message; no query parameters.
    Whole,
    /// `body: "field"`: the JSON body is that field; other fields may come from the query.
    Field(FieldDescriptor),
}

/// One way to reach one method over HTTP.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The HTTP method.
    pub method: Method,
    /// The path template as written, for messages.
    pub pattern: String,
    /// The parsed template.
    pub template: Template,
    /// Where the body goes.
    pub body: BodyRule,
    /// The response field sent as the body instead of the whole response message.
    pub response_body: Option<FieldDescriptor>,
    /// The gRPC method.
    pub rpc: MethodDescriptor,
    /// `/package.Service/Method`.
    pub grpc_path: PathAndQuery,
}

/// The bindings of the methods `selectors` name (services or single methods by full name;
/// every service in the pool outside `google.*` when empty). Problems are listed, each
/// naming the service or method.
pub fn bindings(pool: &DescriptorPool, selectors: &[String]) -> Result<Vec<Binding>, Vec<String>> {
    let mut problems = Vec::new();
    let Some(http) = pool.get_extension_by_name("google.api.http") else {
        return Err(vec!["`google.api.http` is not defined (the gateway's annotations were shadowed by a file without it)".into()]);
    };
    let mut methods: Vec<(MethodDescriptor, bool)> = Vec::new();
    if selectors.is_empty() {
        for service in pool.services() {
            if !service.full_name().starts_with("google.") {
                methods.extend(service.methods().map(|m| (m, false)));
            }
        }
        if methods.is_empty() {
            problems.push("the .proto files define no service".to_string());
        }
    }
    for selector in selectors {
        if let Some(service) = pool.get_service_by_name(selector) {
            let annotated: Vec<MethodDescriptor> = service
                .methods()
                .filter(|m| m.options().has_extension(&http))
                .collect();
            if annotated.is_empty() {
                problems.push(format!(
                    "service `{selector}` has no method with a `google.api.http` option"
                ));
            }
            methods.extend(service.methods().map(|m| (m, false)));
            continue;
        }
        let method = selector.rsplit_once('.').and_then(|(service, method)| {
            pool.get_service_by_name(service)?
                .methods()
                .find(|m| m.name() == method)
        });
        match method {
            Some(method) => methods.push((method, true)),
            None => {
                let known: Vec<String> = pool
                    .services()
                    .filter(|s| !s.full_name().starts_with("google."))
                    .map(|s| s.full_name().to_string())
                    .collect();
                problems.push(format!(
                    "`{selector}` is neither a service nor a method in the .proto files (services: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ));
            }
        }
    }
    let mut bindings = Vec::new();
    for (method, named) in methods {
        let options = method.options();
        if !options.has_extension(&http) {
            if named {
                problems.push(format!(
                    "method `{}` has no `google.api.http` option",
                    method.full_name()
                ));
            }
            continue;
        }
        if method.is_client_streaming() {
            problems.push(format!(
                "method `{}` is client-streaming, which HTTP/JSON transcoding does not serve",
                method.full_name()
            ));
            continue;
        }
        let Value::Message(rule) = options.get_extension(&http).into_owned() else {
            continue;
        };
        let mut rules = vec![rule.clone()];
        if let Some(Value::List(more)) = rule
            .get_field_by_name("additional_bindings")
            .map(|v| v.into_owned())
        {
            rules.extend(more.into_iter().filter_map(|v| match v {
                Value::Message(m) => Some(m),
                _ => None,
            }));
        }
        for rule in rules {
            match binding(&method, &rule) {
                Ok(binding) => bindings.push(binding),
                Err(problem) => {
                    problems.push(format!("method `{}`: {problem}", method.full_name()))
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(bindings)
    } else {
        Err(problems)
    }
}

fn text_field(rule: &DynamicMessage, name: &str) -> String {
    rule.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One rule of one method, checked.
fn binding(rpc: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, String> {
    let mut found = None;
    for (field, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            found = Some((method, text_field(rule, field)));
        }
    }
    if rule.has_field_by_name("custom")
        && let Some(Value::Message(custom)) =
            rule.get_field_by_name("custom").map(|v| v.into_owned())
    {
        let kind = text_field(&custom, "kind");
        let method = Method::from_bytes(kind.as_bytes())
            .map_err(|_| format!("`{kind}` is not an HTTP method"))?;
        found = Some((method, text_field(&custom, "path")));
    }
    let (method, pattern) =
        found.ok_or("the HTTP rule has no pattern (get, put, post, delete, patch or custom)")?;
    let template = Template::parse(&pattern)?;
    let input = rpc.input();
    for variable in template.variables() {
        let field = field_path(&input, &variable.field)?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(format!(
                "`{pattern}` binds `{}`, which is not a singular scalar field",
                variable.field.join(".")
            ));
        }
    }
    let body = match text_field(rule, "body").as_str() {
        "" => BodyRule::None,
        "*" => BodyRule::Whole,
        name => BodyRule::Field(input.get_field_by_name(name).ok_or_else(|| {
            format!(
                "body field `{name}` is not a field of `{}`",
                input.full_name()
            )
        })?),
    };
    let response_body = match text_field(rule, "response_body").as_str() {
        "" => None,
        name => {
            let output = rpc.output();
            Some(output.get_field_by_name(name).ok_or_else(|| {
                format!(
                    "response_body field `{name}` is not a field of `{}`",
                    output.full_name()
                )
            })?)
        }
    };
    let grpc_path = format!("/{}/{}", rpc.parent_service().full_name(), rpc.name())
        .parse()
        .map_err(|_| format!("`{}` is not a usable gRPC path", rpc.full_name()))?;
    Ok(Binding {
        method,
        pattern,
        template,
        body,
        response_body,
        rpc: rpc.clone(),
        grpc_path,
    })
}

/// The field a dotted path names, through singular message fields.
pub fn field_path(message: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut current = message.clone();
    let mut found = None;
    for (index, part) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))
            .ok_or_else(|| {
                format!(
                    "`{}` is not a field of `{}`",
                    path[..=index].join("."),
                    message.full_name()
                )
            })?;
        if index + 1 < path.len() {
            match field.kind() {
                Kind::Message(next) if !field.is_list() && !field.is_map() => current = next,
                _ => {
                    return Err(format!(
                        "`{}` is not a message field, so `{}` cannot go inside it",
                        path[..=index].join("."),
                        path.join(".")
                    ));
                }
            }
        }
        found = Some(field);
    }
    found.ok_or_else(|| "an empty field path".to_string())
}

#[cfg(test)]
mod tests {
    use crate::transcode::{Api, JsonOptions, LoadError, StreamFormat};

    /// The problems loading a service with these methods (and messages `M`, `N`) gives.
    fn problems(methods: &str, selectors: &[&str]) -> Vec<String> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("wasmgate-rules-{}-{unique}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let file = dir.join("r.proto");
        std::fs::write(
            &file,
            format!(
                "syntax = \"proto3\";\npackage r;\nimport \"google/api/annotations.proto\";\n\
                 message N {{ string v = 1; }}\n\
                 message M {{ string name = 1; N inner = 2; repeated string tags = 3; }}\n\
                 service S {{\n{methods}\n}}\n"
            ),
        )
        .expect("writing the proto");
        let selectors: Vec<String> = selectors.iter().map(ToString::to_string).collect();
        let loaded = Api::load(
            &[file],
            &[],
            &selectors,
            JsonOptions::default(),
            StreamFormat::Ndjson,
        );
        std::fs::remove_dir_all(&dir).ok();
        match loaded {
            Ok(_) => Vec::new(),
            Err(LoadError::Rules(problems)) => problems,
            Err(other) => panic!("not a rules problem: {other}"),
        }
    }

    fn rpc(name: &str, rule: &str) -> String {
        format!("rpc {name}(M) returns (M) {{ option (google.api.http) = {{ {rule} }}; }}")
    }

    #[test]
    fn good_rules_bind() {
        let methods = [
            rpc("A", r#"get: "/v1/{name}""#),
            rpc("B", r#"post: "/v1/{inner.v=things/*}" body: "*""#),
            rpc(
                "C",
                r#"custom: { kind: "HEAD" path: "/v1/x" } additional_bindings { get: "/v2/x" } response_body: "inner""#,
            ),
        ]
        .join("\n");
        assert_eq!(problems(&methods, &[]), Vec::<String>::new());
    }

    #[test]
    fn bad_rules_name_the_method_and_what_is_wrong() {
        let cases = [
            (rpc("A", r#"get: "/v1/{nope}""#), "`nope` is not a field"),
            (rpc("A", r#"get: "/v1/{inner}""#), "not a singular scalar field"),
            (rpc("A", r#"get: "/v1/{tags}""#), "not a singular scalar field"),
            (rpc("A", r#"get: "/v1/{name.x}""#), "is not a message field"),
            (rpc("A", r#"post: "/v1" body: "nope""#), "body field `nope`"),
            (rpc("A", r#"get: "/v1" response_body: "nope""#), "response_body field `nope`"),
            (rpc("A", r#"get: "v1""#), "must start with `/`"),
            (rpc("A", r#"body: "*""#), "has no pattern"),
            (
                r#"rpc A(stream M) returns (M) { option (google.api.http) = { post: "/v1" body: "*" }; }"#.to_string(),
                "client-streaming",
            ),
        ];
        for (methods, expected) in cases {
            let found = problems(&methods, &[]);
            assert!(
                found
                    .iter()
                    .any(|p| p.contains("method `r.S.A`") && p.contains(expected)),
                "{expected}: {found:?}"
            );
        }
    }

    #[test]
    fn selectors_must_name_annotated_services_and_methods() {
        let methods = format!("{}\nrpc Plain(M) returns (M);", rpc("A", r#"get: "/v1""#));
        assert_eq!(problems(&methods, &["r.S"]), Vec::<String>::new());
        assert_eq!(problems(&methods, &["r.S.A"]), Vec::<String>::new());
        let found = problems(&methods, &["r.S.Plain", "r.T"]);
        assert!(
            found
                .iter()
                .any(|p| p.contains("method `r.S.Plain` has no")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("`r.T` is neither")),
            "{found:?}"
        );
        let found = problems("rpc Plain(M) returns (M);", &["r.S"]);
        assert!(
            found
                .iter()
                .any(|p| p.contains("service `r.S` has no method")),
            "{found:?}"
        );
    }
}
