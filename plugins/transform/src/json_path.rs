//! Dot paths into JSON documents (`user.address.city`, `items.0.id`) and the
//! edits the body operations make with them.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A path of object keys and array indices, written with dots.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct JsonPath(Vec<String>);

impl TryFrom<String> for JsonPath {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!(
                "`{text}` is not a dot path (no empty segments: write `a.b.c`)"
            ));
        }
        Ok(JsonPath(segments))
    }
}

impl JsonPath {
    /// The path with its last segment replaced by `name`.
    pub fn sibling(&self, name: &str) -> JsonPath {
        let mut segments = self.0.clone();
        if let Some(last) = segments.last_mut() {
            *last = name.to_string();
        }
        JsonPath(segments)
    }

    fn split_last(&self) -> (&[String], &str) {
        match self.0.split_last() {
            Some((last, parents)) => (parents, last),
            None => (&[], ""),
        }
    }
}

fn index(segment: &str) -> Option<usize> {
    segment.parse().ok()
}

fn child_mut<'a>(value: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(segment),
        Value::Array(items) => index(segment).and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

/// Removes the value at `path` and returns it.
pub fn remove(document: &mut Value, path: &JsonPath) -> Option<Value> {
    let (parents, last) = path.split_last();
    let mut parent = document;
    for segment in parents {
        parent = child_mut(parent, segment)?;
    }
    match parent {
        Value::Object(map) => map.remove(last),
        Value::Array(items) => index(last)
            .filter(|i| *i < items.len())
            .map(|i| items.remove(i)),
        _ => None,
    }
}

/// Sets the value at `path`, creating objects for missing parents. Returns
/// `false` (and changes nothing) when a parent is a scalar or an index is
/// past the end of an array (one past the end appends).
pub fn set(document: &mut Value, path: &JsonPath, value: Value) -> bool {
    let (parents, last) = path.split_last();
    let mut parent = document;
    for segment in parents {
        if parent.is_null() {
            *parent = Value::Object(Map::new());
        }
        parent = match parent {
            Value::Object(map) => map
                .entry(segment.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(items) => match index(segment).and_then(|i| items.get_mut(i)) {
                Some(item) => item,
                None => return false,
            },
            _ => return false,
        };
    }
    if parent.is_null() {
        *parent = Value::Object(Map::new());
    }
    match parent {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
            true
        }
        Value::Array(items) => match index(last) {
            Some(i) if i < items.len() => {
                items[i] = value;
                true
            }
            Some(i) if i == items.len() => {
                items.push(value);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Moves the value at `from` to `to`. Returns whether anything moved.
pub fn move_value(document: &mut Value, from: &JsonPath, to: &JsonPath) -> bool {
    match remove(document, from) {
        Some(value) => {
            if set(document, to, value.clone()) {
                true
            } else {
                // Put it back rather than lose it.
                set(document, from, value);
                false
            }
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(text: &str) -> JsonPath {
        JsonPath::try_from(text.to_string()).unwrap()
    }

    #[test]
    fn set_creates_parents() {
        let mut doc = json!({ "a": 1 });
        assert!(set(&mut doc, &path("meta.source.name"), json!("gw")));
        assert_eq!(
            doc,
            json!({ "a": 1, "meta": { "source": { "name": "gw" } } })
        );
        assert!(!set(&mut doc, &path("a.b"), json!(1)), "a is a number");
    }

    #[test]
    fn arrays_by_index() {
        let mut doc = json!({ "items": [{ "id": 1 }, { "id": 2 }] });
        assert_eq!(remove(&mut doc, &path("items.0.id")), Some(json!(1)));
        assert!(set(&mut doc, &path("items.2"), json!("new")));
        assert!(!set(&mut doc, &path("items.9"), json!("far")));
        assert_eq!(remove(&mut doc, &path("items.1")), Some(json!({ "id": 2 })));
        assert_eq!(doc, json!({ "items": [{}, "new"] }));
    }

    #[test]
    fn rename_and_move() {
        let mut doc = json!({ "user": { "userName": "al", "pw": "x" } });
        let from = path("user.userName");
        assert!(move_value(&mut doc, &from, &from.sibling("user_name")));
        assert!(move_value(&mut doc, &path("user.user_name"), &path("name")));
        assert!(!move_value(&mut doc, &path("missing"), &path("x")));
        assert_eq!(doc, json!({ "user": { "pw": "x" }, "name": "al" }));
    }

    #[test]
    fn bad_paths() {
        assert!(JsonPath::try_from("a..b".to_string()).is_err());
        assert!(JsonPath::try_from(String::new()).is_err());
    }
}
