//! JWS compact serialization: splitting, decoding and signature checks
//! (RFC 7515), for the algorithms of RFC 7518 and RFC 8037.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::{Sha256, Sha384, Sha512};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A JWS signature algorithm this plugin verifies. `none` is not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// ECDSA with P-384 and SHA-384.
    ES384,
    /// EdDSA (RFC 8037); this plugin supports the Ed25519 curve.
    EdDSA,
    /// Ed25519 under its fully-specified name (RFC 9864).
    Ed25519,
}

impl Algorithm {
    /// Parses a token header's `alg`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            "Ed25519" => Self::Ed25519,
            _ => return None,
        })
    }

    /// The HMAC algorithms, with the minimum key length RFC 7518 §3.2 asks for.
    pub const HMAC: [(Algorithm, usize); 3] = [
        (Algorithm::HS256, 32),
        (Algorithm::HS384, 48),
        (Algorithm::HS512, 64),
    ];

    /// The RSA algorithms.
    pub const RSA: [Algorithm; 6] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ];
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Public key material (or an HMAC secret) to verify signatures with.
#[derive(Clone)]
pub enum KeyMaterial {
    /// An HMAC secret.
    Hmac(Vec<u8>),
    /// An RSA public key.
    Rsa(Box<rsa::RsaPublicKey>),
    /// A P-256 public key.
    P256(p256::ecdsa::VerifyingKey),
    /// A P-384 public key.
    P384(p384::ecdsa::VerifyingKey),
    /// An Ed25519 public key.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl KeyMaterial {
    /// The algorithms this material can verify.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        match self {
            KeyMaterial::Hmac(secret) => Algorithm::HMAC
                .iter()
                .filter(|(_, min_len)| secret.len() >= *min_len)
                .map(|(alg, _)| *alg)
                .collect(),
            KeyMaterial::Rsa(_) => Algorithm::RSA.to_vec(),
            KeyMaterial::P256(_) => vec![Algorithm::ES256],
            KeyMaterial::P384(_) => vec![Algorithm::ES384],
            KeyMaterial::Ed25519(_) => vec![Algorithm::EdDSA, Algorithm::Ed25519],
        }
    }

    /// A short description for error messages: `an RSA key`.
    pub fn describe(&self) -> &'static str {
        match self {
            KeyMaterial::Hmac(_) => "an HMAC secret",
            KeyMaterial::Rsa(_) => "an RSA key",
            KeyMaterial::P256(_) => "a P-256 key",
            KeyMaterial::P384(_) => "a P-384 key",
            KeyMaterial::Ed25519(_) => "an Ed25519 key",
        }
    }

    /// Whether `signature` over `signing_input` is valid under `alg` with
    /// this material. A mismatch of algorithm and key type is `false`.
    pub fn verify(&self, alg: Algorithm, signing_input: &[u8], signature: &[u8]) -> bool {
        use Algorithm::*;
        match (self, alg) {
            (KeyMaterial::Hmac(secret), HS256) => {
                verify_hmac::<Hmac<Sha256>>(secret, signing_input, signature)
            }
            (KeyMaterial::Hmac(secret), HS384) => {
                verify_hmac::<Hmac<Sha384>>(secret, signing_input, signature)
            }
            (KeyMaterial::Hmac(secret), HS512) => {
                verify_hmac::<Hmac<Sha512>>(secret, signing_input, signature)
            }
            (KeyMaterial::Rsa(key), RS256) => verify_pkcs1::<Sha256>(key, signing_input, signature),
            (KeyMaterial::Rsa(key), RS384) => verify_pkcs1::<Sha384>(key, signing_input, signature),
            (KeyMaterial::Rsa(key), RS512) => verify_pkcs1::<Sha512>(key, signing_input, signature),
            (KeyMaterial::Rsa(key), PS256) => verify_pss::<Sha256>(key, signing_input, signature),
            (KeyMaterial::Rsa(key), PS384) => verify_pss::<Sha384>(key, signing_input, signature),
            (KeyMaterial::Rsa(key), PS512) => verify_pss::<Sha512>(key, signing_input, signature),
            (KeyMaterial::P256(key), ES256) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(signing_input, &signature).is_ok()),
            (KeyMaterial::P384(key), ES384) => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(signing_input, &signature).is_ok()),
            (KeyMaterial::Ed25519(key), EdDSA | Ed25519) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify_strict(signing_input, &signature).is_ok())
            }
            _ => false,
        }
    }
}

fn verify_hmac<M: Mac + hmac::digest::KeyInit>(
    secret: &[u8],
    input: &[u8],
    signature: &[u8],
) -> bool {
    match <M as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(input);
            // Constant-time comparison.
            mac.verify_slice(signature).is_ok()
        }
        Err(_) => false,
    }
}

fn verify_pkcs1<D>(key: &rsa::RsaPublicKey, input: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + rsa::pkcs8::AssociatedOid,
{
    let verifier = rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone());
    rsa::pkcs1v15::Signature::try_from(signature)
        .is_ok_and(|signature| verifier.verify(input, &signature).is_ok())
}

fn verify_pss<D>(key: &rsa::RsaPublicKey, input: &[u8], signature: &[u8]) -> bool
where
    D: sha2::Digest + sha2::digest::FixedOutputReset,
{
    // RFC 7518 §3.5: the salt is as long as the hash output.
    let verifier = rsa::pss::VerifyingKey::<D>::new(key.clone());
    rsa::pss::Signature::try_from(signature)
        .is_ok_and(|signature| verifier.verify(input, &signature).is_ok())
}

/// The parts of a JOSE header this plugin reads.
#[derive(Debug, Deserialize)]
pub struct Header {
    /// The signature algorithm, as written in the token.
    pub alg: String,
    /// The key id, if the token names one.
    #[serde(default)]
    pub kid: Option<String>,
    /// Extensions the recipient must understand (RFC 7515 §4.1.11).
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// A token split into its parts, with header and signature decoded.
#[derive(Debug)]
pub struct Jws<'a> {
    /// The decoded protected header.
    pub header: Header,
    /// `BASE64URL(header) '.' BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'a str,
    /// The decoded payload.
    pub payload: Vec<u8>,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Why a token could not be split and decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum MalformedToken {
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Not three dot-separated parts.
    NotThreeParts,
    /// A part is not unpadded base64url.
    BadBase64(&'static str),
    /// The header is not a JSON object with a string `alg`.
    BadHeader,
}

impl fmt::Display for MalformedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MalformedToken::TooLong => {
                write!(f, "the token is longer than {MAX_TOKEN_BYTES} bytes")
            }
            MalformedToken::NotThreeParts => {
                f.write_str("the token is not a signed JWT (header.payload.signature)")
            }
            MalformedToken::BadBase64(part) => write!(f, "the token's {part} is not base64url"),
            MalformedToken::BadHeader => f.write_str("the token's header is not valid"),
        }
    }
}

/// Splits and decodes a compact JWS. Does not verify anything.
pub fn decode(token: &str) -> Result<Jws<'_>, MalformedToken> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(MalformedToken::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MalformedToken::NotThreeParts);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| MalformedToken::BadBase64("header"))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| MalformedToken::BadHeader)?;
    let payload_bytes = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| MalformedToken::BadBase64("payload"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| MalformedToken::BadBase64("signature"))?;
    Ok(Jws {
        header,
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        payload: payload_bytes,
        signature,
    })
}

/// Decodes unpadded base64url, as JWK members use.
pub fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}
