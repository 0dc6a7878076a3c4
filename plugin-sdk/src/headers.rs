//! HTTP header fields with case-insensitive names and byte values.

use std::fmt;

/// An ordered list of HTTP header fields.
///
/// Names are compared case-insensitively and stored lower-case (the host hands
/// them over lower-case, and HTTP/2 requires it). Values are bytes, because
/// HTTP allows values that are not UTF-8; every setter takes anything that is
/// `AsRef<[u8]>`, so `&str`, `String`, `&[u8]` and `Vec<u8>` all work, and
/// [`Headers::get_str`] reads a value back as text.
///
/// ```
/// use wasmgate_plugin_sdk::Headers;
///
/// let mut headers = Headers::new();
/// headers.set("Content-Type", "application/json");
/// headers.append("set-cookie", "a=1");
/// headers.append("set-cookie", "b=2");
/// assert_eq!(headers.get_str("content-type"), Some("application/json"));
/// assert_eq!(headers.get_all("Set-Cookie").count(), 2);
/// assert_eq!(headers.remove("set-cookie"), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of fields (a name that appears twice counts twice).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.position(name)
            .map(|index| self.fields[index].1.as_slice())
    }

    /// The first value of `name` as text; `None` when it is absent or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Replaces every value of `name` with `value`. The field keeps the
    /// position of its first occurrence, or goes to the end when it is new.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref().to_vec();
        match self.position(name) {
            Some(first) => {
                self.fields[first].1 = value;
                let mut index = 0;
                self.fields.retain(|(field, _)| {
                    let keep = index <= first || !field.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => self.fields.push((name.to_ascii_lowercase(), value)),
        }
    }

    /// Adds a value for `name` after any existing ones.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        self.fields
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
    }

    /// Removes every value of `name` and returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields
            .retain(|(field, _)| !field.eq_ignore_ascii_case(name));
        before - self.fields.len()
    }

    /// Renames every field called `from` to `to`, keeping values and order.
    /// Existing `to` fields are replaced. Returns whether `from` was present.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if !self.contains(from) {
            return false;
        }
        if !from.eq_ignore_ascii_case(to) {
            self.remove(to);
        }
        let to = to.to_ascii_lowercase();
        for (field, _) in &mut self.fields {
            if field.eq_ignore_ascii_case(from) {
                field.clone_from(&to);
            }
        }
        true
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    /// Builder form of [`Headers::append`].
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.append(name, value);
        self
    }

    /// The fields as the owned `(name, value)` pairs the host exchanges.
    pub fn into_vec(self) -> Vec<(String, Vec<u8>)> {
        self.fields
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(field, _)| field.eq_ignore_ascii_case(name))
    }
}

impl From<Vec<(String, Vec<u8>)>> for Headers {
    fn from(fields: Vec<(String, Vec<u8>)>) -> Self {
        Self { fields }
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name.as_ref(), value);
        }
        headers
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (name, value) in iter {
            self.append(name.as_ref(), value);
        }
    }
}

impl IntoIterator for Headers {
    type Item = (String, Vec<u8>);
    type IntoIter = std::vec::IntoIter<(String, Vec<u8>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_stored_lower_case() {
        let mut headers = Headers::new();
        headers.set("X-Request-Id", "abc");
        assert_eq!(headers.get("x-request-id"), Some(&b"abc"[..]));
        assert_eq!(headers.iter().next().unwrap().0, "x-request-id");
    }

    #[test]
    fn set_replaces_all_values_in_place() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        headers.set("A", "9");
        let fields: Vec<_> = headers.iter().collect();
        assert_eq!(fields, vec![("a", &b"9"[..]), ("b", &b"2"[..])]);
    }

    #[test]
    fn rename_replaces_the_target() {
        let mut headers: Headers = [("old", "1"), ("new", "x")].into_iter().collect();
        assert!(headers.rename("Old", "New"));
        assert_eq!(headers.get_all("new").collect::<Vec<_>>(), vec![&b"1"[..]]);
        assert!(!headers.rename("missing", "other"));
    }

    #[test]
    fn non_utf8_values_survive() {
        let mut headers = Headers::new();
        headers.set("x-bin", [0xff, 0x00]);
        assert_eq!(headers.get("x-bin"), Some(&[0xff, 0x00][..]));
        assert_eq!(headers.get_str("x-bin"), None);
    }
}
