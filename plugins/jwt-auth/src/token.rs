//! Verifying a JWT: signature with the right key, then the registered claims.
//! Pure: the clock comes in as an argument.

use std::fmt;

use serde_json::{Map, Value};

use crate::{
    jws::{self, Algorithm, Jws, MalformedToken},
    keys::Key,
};

/// What a token must satisfy, besides a valid signature.
pub struct Policy {
    /// Keys to verify with.
    pub keys: Vec<Key>,
    /// When set, only these algorithms are accepted.
    pub algorithms: Option<Vec<Algorithm>>,
    /// Accepted `iss` values; empty accepts any.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (the token must name at least one); empty skips the check.
    pub audiences: Vec<String>,
    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Whether a token without `exp` is refused.
    pub require_expiration: bool,
    /// Claims that must be present (and not null).
    pub required_claims: Vec<String>,
}

/// Why a token was refused. The `Display` text goes into the
/// `error_description` of the `WWW-Authenticate` challenge, so it says what is
/// wrong without echoing the token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// The token could not be decoded.
    Malformed(MalformedToken),
    /// The header names an algorithm this plugin does not verify (`none`, ...).
    UnsupportedAlgorithm(String),
    /// The algorithm is known but not allowed by the config.
    AlgorithmNotAllowed(Algorithm),
    /// The header has a `crit` member; no extensions are supported.
    CriticalExtension,
    /// No configured key has the token's `kid`.
    UnknownKeyId,
    /// No configured key can verify this algorithm.
    NoKeyForAlgorithm(Algorithm),
    /// No candidate key verified the signature.
    BadSignature,
    /// The payload is not a JSON object.
    PayloadNotJson,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// A registered claim has the wrong type.
    InvalidClaim(&'static str),
    /// A required claim is absent.
    MissingClaim(String),
    /// `iss` is not an accepted issuer.
    WrongIssuer,
    /// `aud` does not name an accepted audience.
    WrongAudience,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(why) => why.fmt(f),
            TokenError::UnsupportedAlgorithm(_) => {
                f.write_str("the token's algorithm is not supported")
            }
            TokenError::AlgorithmNotAllowed(alg) => write!(f, "the algorithm {alg} is not allowed"),
            TokenError::CriticalExtension => {
                f.write_str("the token uses an unsupported critical extension")
            }
            TokenError::UnknownKeyId => f.write_str("the token's key id is unknown"),
            TokenError::NoKeyForAlgorithm(alg) => write!(f, "no key is configured for {alg}"),
            TokenError::BadSignature => f.write_str("the token's signature is invalid"),
            TokenError::PayloadNotJson => f.write_str("the token's payload is not a JSON object"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet"),
            TokenError::InvalidClaim(name) => write!(f, "the token's `{name}` claim is invalid"),
            TokenError::MissingClaim(name) => write!(f, "the token has no `{name}` claim"),
            TokenError::WrongIssuer => f.write_str("the token's issuer is not accepted"),
            TokenError::WrongAudience => f.write_str("the token is not meant for this audience"),
        }
    }
}

/// Decodes `token` and checks its signature with the keys of `policy`.
///
/// Key selection: with a `kid` in the header, the keys with that id, or else
/// the keys that have no id; without a `kid`, every key. Of those, each that
/// may verify the token's algorithm is tried in turn.
pub fn verify_signature<'a>(token: &'a str, policy: &Policy) -> Result<Jws<'a>, TokenError> {
    let jws = jws::decode(token).map_err(TokenError::Malformed)?;
    if jws.header.crit.is_some() {
        return Err(TokenError::CriticalExtension);
    }
    let alg = Algorithm::from_name(&jws.header.alg)
        .ok_or_else(|| TokenError::UnsupportedAlgorithm(jws.header.alg.clone()))?;
    if let Some(allowed) = &policy.algorithms
        && !allowed.contains(&alg)
    {
        return Err(TokenError::AlgorithmNotAllowed(alg));
    }
    let candidates: Vec<&Key> = match &jws.header.kid {
        Some(kid) => {
            let named: Vec<&Key> = policy
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid.as_str()))
                .collect();
            if named.is_empty() {
                policy.keys.iter().filter(|key| key.kid.is_none()).collect()
            } else {
                named
            }
        }
        None => policy.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(TokenError::UnknownKeyId);
    }
    let usable: Vec<&Key> = candidates
        .into_iter()
        .filter(|key| key.algorithms.contains(&alg))
        .collect();
    if usable.is_empty() {
        return Err(TokenError::NoKeyForAlgorithm(alg));
    }
    let verified = usable.iter().any(|key| {
        key.material
            .verify(alg, jws.signing_input.as_bytes(), &jws.signature)
    });
    if verified {
        Ok(jws)
    } else {
        Err(TokenError::BadSignature)
    }
}

/// Verifies `token` completely at `now` (seconds since the epoch) and returns
/// its claims.
pub fn validate(token: &str, policy: &Policy, now: u64) -> Result<Map<String, Value>, TokenError> {
    let jws = verify_signature(token, policy)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&jws.payload).map_err(|_| TokenError::PayloadNotJson)?;
    check_claims(&claims, policy, now)?;
    Ok(claims)
}

/// Checks `exp`, `nbf`, `iss`, `aud` and the required claims.
pub fn check_claims(
    claims: &Map<String, Value>,
    policy: &Policy,
    now: u64,
) -> Result<(), TokenError> {
    // NumericDate may have a fraction; compare in f64, where a u64 of seconds
    // is exact for the next few hundred million years.
    let now = now as f64;
    let leeway = policy.leeway_seconds as f64;
    match claims.get("exp") {
        Some(exp) => {
            let exp = exp.as_f64().ok_or(TokenError::InvalidClaim("exp"))?;
            if now >= exp + leeway {
                return Err(TokenError::Expired);
            }
        }
        None if policy.require_expiration => {
            return Err(TokenError::MissingClaim("exp".to_string()));
        }
        None => {}
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().ok_or(TokenError::InvalidClaim("nbf"))?;
        if now + leeway < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if !policy.issuers.is_empty() {
        let iss = claims
            .get("iss")
            .ok_or_else(|| TokenError::MissingClaim("iss".to_string()))?
            .as_str()
            .ok_or(TokenError::InvalidClaim("iss"))?;
        if !policy.issuers.iter().any(|accepted| accepted == iss) {
            return Err(TokenError::WrongIssuer);
        }
    }
    if !policy.audiences.is_empty() {
        let audiences: Vec<&str> = match claims.get("aud") {
            None => return Err(TokenError::MissingClaim("aud".to_string())),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|aud| aud.as_str().ok_or(TokenError::InvalidClaim("aud")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(TokenError::InvalidClaim("aud")),
        };
        if !audiences
            .iter()
            .any(|aud| policy.audiences.iter().any(|accepted| accepted == aud))
        {
            return Err(TokenError::WrongAudience);
        }
    }
    for name in &policy.required_claims {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(TokenError::MissingClaim(name.clone()));
        }
    }
    Ok(())
}
