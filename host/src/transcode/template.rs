//! `google.api.http` path templates: parsing and matching.
//!
//! ```text
//! Template = "/" Segments [ ":" Verb ]      Segment  = "*" | "**" | LITERAL | Variable
//! Variable = "{" FieldPath [ "=" Segments ] "}"
//! ```
//! `{name}` is `{name=*}`; `*` matches one segment, `**` the rest of the path (zero or more
//! segments, only last). A single-segment variable is percent-decoded whole; a multi-segment
//! one keeps `%2F` encoded, so its slashes are the path's own.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: the remaining segments.
    Rest,
}

/// A variable: the field it sets and the template segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The field path, such as `["shelf", "name"]`.
    pub field: Vec<String>,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    verb: Option<String>,
    variables: Vec<Variable>,
}

impl Template {
    /// Parses a template such as `/v1/{name=shelves/*}/books:batchGet`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("path template `{text}` must start with `/`"));
        };
        let (body, verb) = split_verb(body);
        if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}', '*'])) {
            return Err(format!("path template `{text}` has an invalid `:verb`"));
        }
        let mut template = Self {
            segments: Vec::new(),
            verb: verb.map(str::to_string),
            variables: Vec::new(),
        };
        let mut rest = body;
        while !rest.is_empty() || template.segments.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner
                    .find('}')
                    .ok_or_else(|| format!("path template `{text}` has an unclosed `{{`"))?;
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                let field: Vec<String> = field.trim().split('.').map(str::to_string).collect();
                if field.iter().any(|part| !is_identifier(part)) {
                    return Err(format!(
                        "path template `{text}`: `{}` is not a field path",
                        field.join(".")
                    ));
                }
                if template.variables.iter().any(|v| v.field == field) {
                    return Err(format!(
                        "path template `{text}` binds `{}` twice",
                        field.join(".")
                    ));
                }
                let start = template.segments.len();
                for part in pattern.split('/') {
                    template.segments.push(segment(part, text, false)?);
                }
                template.variables.push(Variable {
                    field,
                    start,
                    end: template.segments.len(),
                });
                rest = &inner[close + 1..];
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                template.segments.push(segment(&rest[..end], text, true)?);
                rest = &rest[end..];
            }
            match rest.strip_prefix('/') {
                Some("") => {
                    return Err(format!("path template `{text}` ends with `/`"));
                }
                Some(next) => rest = next,
                None if rest.is_empty() => break,
                None => {
                    return Err(format!(
                        "path template `{text}`: expected `/` before `{rest}`"
                    ));
                }
            }
        }
        let rests = template
            .segments
            .iter()
            .filter(|s| **s == Segment::Rest)
            .count();
        if rests > 1 || (rests == 1 && template.segments.last() != Some(&Segment::Rest)) {
            return Err(format!(
                "path template `{text}`: `**` may appear once, as the last segment"
            ));
        }
        Ok(template)
    }

    /// The variables, in template order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// Matches a request path (no query); on a match, each variable's field path with its
    /// decoded value.
    pub fn matches(&self, path: &str) -> Option<Vec<(Vec<String>, String)>> {
        let body = path.strip_prefix('/')?;
        let body = match &self.verb {
            Some(verb) => body.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => body,
        };
        let parts: Vec<&str> = body.split('/').collect();
        let fixed = self.segments.len() - usize::from(self.ends_with_rest());
        if parts.len() < fixed || (!self.ends_with_rest() && parts.len() != fixed) {
            return None;
        }
        // Where each template segment starts in `parts`; `**` takes the rest.
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal != part => return None,
                Segment::One if part.is_empty() => return None,
                _ => {}
            }
        }
        let values = self
            .variables
            .iter()
            .map(|variable| {
                let end = if variable.end == self.segments.len() && self.ends_with_rest() {
                    parts.len()
                } else {
                    variable.end
                };
                let covered = &parts[variable.start..end];
                let value = if covered.len() == 1 && self.segments[variable.start] != Segment::Rest
                {
                    percent_decode(covered[0], true)
                } else {
                    covered
                        .iter()
                        .map(|part| percent_decode(part, false))
                        .collect::<Vec<_>>()
                        .join("/")
                };
                (variable.field.clone(), value)
            })
            .collect();
        Some(values)
    }

    fn ends_with_rest(&self) -> bool {
        self.segments.last() == Some(&Segment::Rest)
    }
}

/// Splits `a/b:verb` into `a/b` and `verb`; a `:` inside `{…}` is not a verb.
fn split_verb(body: &str) -> (&str, Option<&str>) {
    let last_slash = body.rfind('/').map_or(0, |i| i + 1);
    let close = body.rfind('}').map_or(0, |i| i + 1);
    let from = last_slash.max(close);
    match body[from..].rfind(':') {
        Some(colon) => (&body[..from + colon], Some(&body[from + colon + 1..])),
        None => (body, None),
    }
}

fn segment(part: &str, text: &str, top_level: bool) -> Result<Segment, String> {
    match part {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        "" => Err(format!("path template `{text}` has an empty segment")),
        literal if literal.contains(['{', '}', '*', '=']) => Err(format!(
            "path template `{text}`: `{literal}` is not a {}",
            if top_level {
                "segment"
            } else {
                "variable pattern segment"
            }
        )),
        literal => Ok(Segment::Literal(literal.to_string())),
    }
}

fn is_identifier(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percent-decodes `text` (invalid escapes stay as written); `%2F` stays encoded unless
/// `slashes`. Bytes that are not UTF-8 are replaced.
pub fn percent_decode(text: &str, slashes: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
            && (slashes || byte != b'/')
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        Template::parse(template)
            .expect("parses")
            .matches(path)
            .map(|v| v.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    fn pair(field: &str, value: &str) -> (String, String) {
        (field.to_string(), value.to_string())
    }

    #[test]
    fn simple_variables_take_one_segment() {
        assert_eq!(
            vars("/v1/shelves/{shelf}", "/v1/shelves/7"),
            Some(vec![pair("shelf", "7")])
        );
        assert_eq!(vars("/v1/shelves/{shelf}", "/v1/shelves/7/books"), None);
        assert_eq!(vars("/v1/shelves/{shelf}", "/v1/shelves/"), None);
        assert_eq!(
            vars("/v1/shelves/{shelf}", "/v1/shelves/a%20b"),
            Some(vec![pair("shelf", "a b")])
        );
    }

    #[test]
    fn patterned_and_nested_variables() {
        assert_eq!(
            vars("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            Some(vec![pair("name", "shelves/1/books/2")])
        );
        assert_eq!(
            vars("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/notes/2"),
            None
        );
        assert_eq!(
            vars("/v1/{book.name=shelves/*}/x", "/v1/shelves/3/x"),
            Some(vec![pair("book.name", "shelves/3")])
        );
    }

    #[test]
    fn double_star_takes_the_rest() {
        assert_eq!(
            vars("/files/{path=**}", "/files/a/b%2Fc/d"),
            Some(vec![pair("path", "a/b%2Fc/d")])
        );
        assert_eq!(vars("/files/**", "/files"), Some(vec![]));
        assert_eq!(vars("/v1/*/x", "/v1/a/x"), Some(vec![]));
        assert!(Template::parse("/a/**/b").is_err());
    }

    #[test]
    fn verbs_are_matched_and_stripped() {
        assert_eq!(
            vars("/v1/shelves/{shelf}:clear", "/v1/shelves/4:clear"),
            Some(vec![pair("shelf", "4")])
        );
        assert_eq!(vars("/v1/shelves/{shelf}:clear", "/v1/shelves/4"), None);
        assert_eq!(
            vars("/v1/shelves/{shelf}:clear", "/v1/shelves/4:other"),
            None
        );
        assert_eq!(
            vars("/v1/{name=shelves/*}:move", "/v1/shelves/5:move"),
            Some(vec![pair("name", "shelves/5")])
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "v1/x",
            "/v1/{x",
            "/v1//x",
            "/v1/x/",
            "/v1/{a}/{a}",
            "/v1/{1a}",
            "/v1/x:",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
