//! Verification keys from the config: HMAC secrets, PEM public keys and JWKs.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde::Deserialize;
use serde_json::Value;

use crate::jws::{Algorithm, KeyMaterial, base64url};

/// RFC 7518 §3.3: RSA keys of 2048 bits or larger.
const MIN_RSA_BITS: usize = 2048;

/// A key the plugin may verify tokens with.
#[derive(Clone, Deserialize)]
#[serde(try_from = "KeyConfig")]
pub struct Key {
    /// The key id tokens select it with (`kid` header), if it has one.
    pub kid: Option<String>,
    /// The algorithms this key may verify: those its material supports,
    /// narrowed to one when the config or the JWK names an `alg`.
    pub algorithms: Vec<Algorithm>,
    /// The secret or public key.
    pub material: KeyMaterial,
}

impl Key {
    fn new(
        kid: Option<String>,
        alg: Option<Algorithm>,
        material: KeyMaterial,
    ) -> Result<Self, String> {
        let supported = material.algorithms();
        let algorithms = match alg {
            Some(alg) if supported.contains(&alg) => vec![alg],
            Some(alg) => {
                let hint = match material {
                    KeyMaterial::Hmac(_) if alg.to_string().starts_with("HS") => {
                        " (RFC 7518 asks for a secret at least as long as the hash: 32, 48 or 64 bytes)"
                    }
                    _ => "",
                };
                return Err(format!(
                    "`alg` {alg} does not fit {}{hint}",
                    material.describe()
                ));
            }
            None if supported.is_empty() => {
                return Err(format!(
                    "{} is too short: HMAC secrets need at least 32 bytes",
                    material.describe()
                ));
            }
            None => supported,
        };
        Ok(Self {
            kid,
            algorithms,
            material,
        })
    }
}

/// One entry of `keys`: exactly one of `secret`, `secret-base64` or `pem`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeyConfig {
    /// The key id that tokens name in their `kid` header.
    #[serde(default)]
    kid: Option<String>,
    /// Restricts the key to one algorithm.
    #[serde(default)]
    alg: Option<Algorithm>,
    /// An HMAC secret, as text (its UTF-8 bytes are the key).
    #[serde(default)]
    secret: Option<String>,
    /// An HMAC secret, base64 (standard or URL-safe alphabet).
    #[serde(default)]
    secret_base64: Option<String>,
    /// A PEM public key: `PUBLIC KEY` (RSA, P-256, P-384 or Ed25519) or
    /// `RSA PUBLIC KEY`.
    #[serde(default)]
    pem: Option<String>,
}

impl TryFrom<KeyConfig> for Key {
    type Error = String;

    fn try_from(config: KeyConfig) -> Result<Self, String> {
        let material = match (config.secret, config.secret_base64, config.pem) {
            (Some(secret), None, None) => KeyMaterial::Hmac(secret.into_bytes()),
            (None, Some(encoded), None) => KeyMaterial::Hmac(decode_base64(&encoded)?),
            (None, None, Some(pem)) => parse_pem(&pem)?,
            (None, None, None) => {
                return Err("give one of `secret`, `secret-base64` or `pem`".to_string());
            }
            _ => return Err("give only one of `secret`, `secret-base64` or `pem`".to_string()),
        };
        Key::new(config.kid, config.alg, material)
    }
}

fn decode_base64(encoded: &str) -> Result<Vec<u8>, String> {
    let trimmed = encoded.trim().trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(encoded.trim()))
        .map_err(|err| format!("`secret-base64` is not base64: {err}"))
}

/// Parses a PEM public key of any supported type.
pub fn parse_pem(pem: &str) -> Result<KeyMaterial, String> {
    use p256::pkcs8::DecodePublicKey;
    use rsa::pkcs1::DecodeRsaPublicKey;

    let pem = pem.trim();
    let label = pem
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.split_once("-----"))
        .map(|(label, _)| label)
        .ok_or("`pem` is not PEM (it must start with `-----BEGIN ...-----`)")?;
    match label {
        "PUBLIC KEY" => {
            if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(pem) {
                return rsa_material(key);
            }
            if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
                return Ok(KeyMaterial::P256(key));
            }
            if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
                return Ok(KeyMaterial::P384(key));
            }
            if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
                return Ok(KeyMaterial::Ed25519(key));
            }
            Err("`pem` is not an RSA, P-256, P-384 or Ed25519 public key".to_string())
        }
        "RSA PUBLIC KEY" => rsa::RsaPublicKey::from_pkcs1_pem(pem)
            .map_err(|err| format!("`pem` is not a valid RSA public key: {err}"))
            .and_then(rsa_material),
        "CERTIFICATE" => Err(
            "`pem` is a certificate; give its public key (`openssl x509 -pubkey -noout -in cert.pem`)"
                .to_string(),
        ),
        label if label.contains("PRIVATE") => Err(format!(
            "`pem` is a private key ({label}); give only the public key (`openssl pkey -pubout`)"
        )),
        label => Err(format!("`pem` holds a {label}, not a public key")),
    }
}

fn rsa_material(key: rsa::RsaPublicKey) -> Result<KeyMaterial, String> {
    use rsa::traits::PublicKeyParts;
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    Ok(KeyMaterial::Rsa(Box::new(key)))
}

/// A static JWKS document (RFC 7517 §5): `{ "keys": [ ... ] }`, given either
/// as a table or as the document's JSON text.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
pub struct Jwks(pub Vec<Key>);

impl TryFrom<Value> for Jwks {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let document = match value {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|err| format!("the JWKS text is not JSON: {err}"))?,
            other => other,
        };
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWKS document needs a `keys` array")?;
        let mut parsed = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            if let Some(key) = jwk_to_key(jwk).map_err(|err| format!("keys[{index}]: {err}"))? {
                parsed.push(key);
            }
        }
        Ok(Jwks(parsed))
    }
}

/// Converts one JWK. `Ok(None)` for keys this plugin does not use: encryption
/// keys (`"use": "enc"`) and key types or curves it does not support, which
/// a JWKS copied from an identity provider may well contain.
pub fn jwk_to_key(jwk: &Value) -> Result<Option<Key>, String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let required = |name: &str| -> Result<Vec<u8>, String> {
        let text = member(name).ok_or_else(|| format!("missing `{name}`"))?;
        base64url(text).ok_or_else(|| format!("`{name}` is not base64url"))
    };
    let kty = member("kty").ok_or("missing `kty`")?;
    if member("use").is_some_and(|usage| usage != "sig") {
        return Ok(None);
    }
    if kty != "oct" && jwk.get("d").is_some() {
        return Err("holds a private key (`d`); give only the public key".to_string());
    }
    let alg = match member("alg") {
        None => None,
        Some(name) => match Algorithm::from_name(name) {
            Some(alg) => Some(alg),
            // An algorithm this plugin does not verify: the key is of no use.
            None => return Ok(None),
        },
    };
    let material = match (kty, member("crv")) {
        ("oct", _) => KeyMaterial::Hmac(required("k")?),
        ("RSA", _) => {
            let n = rsa::BigUint::from_bytes_be(&required("n")?);
            let e = rsa::BigUint::from_bytes_be(&required("e")?);
            let key =
                rsa::RsaPublicKey::new(n, e).map_err(|err| format!("invalid RSA key: {err}"))?;
            rsa_material(key)?
        }
        ("EC", Some("P-256")) => KeyMaterial::P256(
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&uncompressed_point(
                &required("x")?,
                &required("y")?,
                32,
            )?)
            .map_err(|_| "the point is not on the P-256 curve".to_string())?,
        ),
        ("EC", Some("P-384")) => KeyMaterial::P384(
            p384::ecdsa::VerifyingKey::from_sec1_bytes(&uncompressed_point(
                &required("x")?,
                &required("y")?,
                48,
            )?)
            .map_err(|_| "the point is not on the P-384 curve".to_string())?,
        ),
        ("OKP", Some("Ed25519")) => {
            let x: [u8; 32] = required("x")?
                .try_into()
                .map_err(|_| "an Ed25519 `x` must be 32 bytes".to_string())?;
            KeyMaterial::Ed25519(
                ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| "`x` is not an Ed25519 public key".to_string())?,
            )
        }
        _ => return Ok(None),
    };
    Key::new(member("kid").map(str::to_string), alg, material).map(Some)
}

/// The SEC1 encoding `04 || x || y` of an EC point given by its coordinates.
fn uncompressed_point(x: &[u8], y: &[u8], size: usize) -> Result<Vec<u8>, String> {
    if x.len() != size || y.len() != size {
        return Err(format!(
            "EC coordinates for this curve must be {size} bytes"
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    Ok(point)
}
