//! What the host knows about a request beyond the request itself.

/// Who an auth stage found the caller to be.
///
/// ```
/// use wasmgate_plugin_sdk::Identity;
///
/// let identity = Identity::new("user-42").with_claim("scope", "read write");
/// assert_eq!(identity.claim("scope"), Some("read write"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The principal: a user id, a key's name, a token's `sub`.
    pub subject: String,
    /// Claims worth passing on to later stages (for example `scope`, `tenant`).
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// An identity with `subject` and no claims.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            claims: Vec::new(),
        }
    }

    /// Adds a claim.
    pub fn with_claim(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.claims.push((name.into(), value.into()));
        self
    }

    /// The first value of claim `name`.
    pub fn claim(&self, name: &str) -> Option<&str> {
        lookup(&self.claims, name)
    }
}

/// The request's context: route, client, request id, the identity an earlier
/// auth stage established, path parameters and request variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The name of the matched route.
    pub route: String,
    /// The client's IP address, as the gateway's socket saw it.
    pub client_ip: String,
    /// The request id (the `x-request-id` header, generated when absent).
    pub request_id: String,
    /// The identity an earlier auth stage established, if any.
    pub identity: Option<Identity>,
    /// Path parameters captured by the route, e.g. `("id", "42")` for `/users/{id}`.
    pub params: Vec<(String, String)>,
    /// Request variables set by earlier stages or phases with
    /// [`set_var`](crate::set_var).
    pub vars: Vec<(String, String)>,
}

impl Context {
    /// The path parameter `name`, if the route captured it.
    pub fn param(&self, name: &str) -> Option<&str> {
        lookup(&self.params, name)
    }

    /// The request variable `name`, if an earlier stage or phase set it.
    pub fn var(&self, name: &str) -> Option<&str> {
        lookup(&self.vars, name)
    }

    /// The authenticated subject, if an auth stage ran before this one.
    pub fn subject(&self) -> Option<&str> {
        self.identity
            .as_ref()
            .map(|identity| identity.subject.as_str())
    }

    /// Claim `name` of the authenticated identity, if any.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.identity
            .as_ref()
            .and_then(|identity| identity.claim(name))
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}
