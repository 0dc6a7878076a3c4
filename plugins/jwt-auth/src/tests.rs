//! Tests: RFC example tokens, tokens minted by PyJWT (an independent
//! implementation, see `testdata/mint_tokens.py`), config errors, and the
//! stage end to end against the SDK's native stand-in host.

use serde_json::{Value, json};
use wasmgate_plugin_sdk::{Auth, Context, Request, parse_config, testing};

use super::*;
use crate::token::{Policy, TokenError, validate, verify_signature};

fn policy_from_jwks(jwks: Value) -> Policy {
    let config: Config = parse_config(&json!({ "jwks": jwks }).to_string()).unwrap();
    Policy {
        require_expiration: false,
        ..config.policy()
    }
}

// === RFC 7515 appendix A and RFC 8037 appendix A ===

/// RFC 7515 A.1-A.3 all sign this payload (with CRLFs in it).
const RFC_CLAIMS: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
/// One second before the RFC tokens' `exp` (1300819380).
const RFC_NOW: u64 = 1_300_819_379;

#[test]
fn rfc7515_a1_hs256() {
    let token = format!(
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC_CLAIMS}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    let policy = policy_from_jwks(json!({ "keys": [{
        "kty": "oct",
        "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
    }]}));
    let claims = validate(
        &token,
        &Policy {
            leeway_seconds: 0,
            ..policy
        },
        RFC_NOW,
    )
    .unwrap();
    assert_eq!(claims["iss"], "joe");
    assert_eq!(claims["http://example.com/is_root"], true);
}

#[test]
fn rfc7515_a2_rs256() {
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.{RFC_CLAIMS}.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
    );
    let policy = policy_from_jwks(json!({ "keys": [{
        "kty": "RSA",
        "e": "AQAB",
        "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    }]}));
    assert_eq!(validate(&token, &policy, RFC_NOW).unwrap()["iss"], "joe");
    // The same key must not verify the token as PS256 or with a changed payload.
    let tampered = token.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Ei", 1);
    assert_eq!(
        validate(&tampered, &policy, RFC_NOW).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn rfc7515_a3_es256() {
    let token = format!(
        "eyJhbGciOiJFUzI1NiJ9.{RFC_CLAIMS}.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    );
    let policy = policy_from_jwks(json!({ "keys": [{
        "kty": "EC",
        "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
    }]}));
    assert_eq!(validate(&token, &policy, RFC_NOW).unwrap()["iss"], "joe");
    // After `exp` plus the leeway, the same token has expired.
    assert_eq!(
        validate(&token, &policy, RFC_NOW + 61).unwrap_err(),
        TokenError::Expired
    );
}

#[test]
fn rfc8037_a4_ed25519() {
    // The payload is "Example of Ed25519 signing": a valid JWS, but not a JWT.
    let token = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    let policy = policy_from_jwks(json!({ "keys": [{
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }]}));
    let jws = verify_signature(token, &policy).unwrap();
    assert_eq!(jws.payload, b"Example of Ed25519 signing");
    assert_eq!(
        validate(token, &policy, 0).unwrap_err(),
        TokenError::PayloadNotJson
    );
    let mut forged = token.to_string();
    forged.replace_range(forged.len() - 3..forged.len() - 2, "A");
    assert_eq!(
        verify_signature(&forged, &policy).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn malformed_tokens() {
    let policy = policy_from_jwks(
        json!({ "keys": [{ "kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow" }] }),
    );
    for (token, expected) in [
        ("abc", "NotThreeParts"),
        ("a.b.c.d", "NotThreeParts"),
        ("!!.e30.", "BadBase64(\"header\")"),
        ("e30.e30.", "BadHeader"),
        ("eyJhbGciOiJIUzI1NiJ9.e30=.", "BadBase64(\"payload\")"),
    ] {
        let error = validate(token, &policy, 0).unwrap_err();
        assert_eq!(
            format!("{error:?}"),
            format!("Malformed({expected})"),
            "{token}"
        );
    }
    let crit = "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.e30.AAAA";
    assert_eq!(
        validate(crit, &policy, 0).unwrap_err(),
        TokenError::CriticalExtension
    );
}

// === tokens minted by PyJWT ===

const PYJWT: &str = include_str!("../testdata/pyjwt_tokens.json");

fn pyjwt() -> Value {
    serde_json::from_str(PYJWT).unwrap()
}

#[test]
fn pyjwt_tokens_with_a_jwks() {
    let fixture = pyjwt();
    let config: Config = parse_config(
        &json!({
            "jwks": fixture["jwks"],
            "issuer": fixture["issuer"],
            "audience": ["api", fixture["audience"]],
        })
        .to_string(),
    )
    .unwrap();
    JwtAuth::validate(&config).unwrap();
    let policy = config.policy();
    let now = fixture["now"].as_u64().unwrap();
    let tokens = fixture["tokens"].as_array().unwrap();
    assert!(tokens.len() > 20);
    for case in tokens {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let outcome = validate(case["token"].as_str().unwrap(), &policy, now);
        match (&outcome, expect) {
            (Ok(claims), "ok") => assert_eq!(claims["sub"], "user-42", "{name}"),
            (Err(error), expect) => {
                assert!(
                    format!("{error:?}").starts_with(expect),
                    "{name}: expected {expect}, got {error:?}"
                )
            }
            (Ok(_), expect) => panic!("{name}: expected {expect}, but the token was accepted"),
        }
    }
}

#[test]
fn pyjwt_tokens_with_pem_keys_and_a_secret() {
    let fixture = pyjwt();
    let pem = &fixture["pem"];
    let config: Config = parse_config(
        &json!({
            "keys": [
                { "secret": fixture["secret"] },
                { "pem": pem["rsa"] },
                { "pem": pem["ec256"] },
                { "pem": pem["ec384"] },
                { "pem": pem["ed25519"] },
            ],
            "issuer": fixture["issuer"],
            "audience": fixture["audience"],
        })
        .to_string(),
    )
    .unwrap();
    let policy = config.policy();
    let now = fixture["now"].as_u64().unwrap();
    let mut accepted = 0;
    for case in fixture["tokens"].as_array().unwrap() {
        // PEM keys have no `kid`, so a token naming any kid falls back to them:
        // every token valid under the JWKS is valid here too, and "unknown
        // kid" becomes a signature check that passes.
        let expect = case["expect"].as_str().unwrap();
        let outcome = validate(case["token"].as_str().unwrap(), &policy, now);
        match expect {
            "ok" | "UnknownKeyId" => {
                outcome.unwrap_or_else(|err| panic!("{}: {err:?}", case["name"]));
                accepted += 1;
            }
            _ => assert!(outcome.is_err(), "{}", case["name"]),
        }
    }
    assert_eq!(accepted, 16);
}

#[test]
fn allow_list_of_algorithms() {
    let fixture = pyjwt();
    let config: Config = parse_config(
        &json!({ "jwks": fixture["jwks"], "algorithms": ["ES256", "EdDSA"], "require-expiration": false })
            .to_string(),
    )
    .unwrap();
    let policy = config.policy();
    let now = fixture["now"].as_u64().unwrap();
    let token = |name: &str| {
        fixture["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["name"] == name)
            .unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(validate(&token("valid ES256"), &policy, now).is_ok());
    assert_eq!(
        validate(&token("valid RS256"), &policy, now).unwrap_err(),
        TokenError::AlgorithmNotAllowed(Algorithm::RS256)
    );
}

// === config errors ===

fn config_error(config: Value) -> String {
    match parse_config::<Config>(&config.to_string()) {
        Err(error) => error,
        Ok(config) => JwtAuth::validate(&config).unwrap_err(),
    }
}

#[test]
fn config_errors_name_the_field() {
    assert!(config_error(json!({})).starts_with("no usable key"));
    assert_eq!(
        config_error(json!({ "keys": [{ "secret": "short" }] })),
        "keys[0]: an HMAC secret is too short: HMAC secrets need at least 32 bytes"
    );
    assert!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(40), "alg": "HS512" }] }))
            .starts_with("keys[0]: `alg` HS512 does not fit an HMAC secret")
    );
    assert_eq!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(32), "pem": "x" }] })),
        "keys[0]: give only one of `secret`, `secret-base64` or `pem`"
    );
    assert!(
        config_error(json!({ "keys": [{ "pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----" }] }))
            .starts_with("keys[0]: `pem` is a private key")
    );
    assert!(
        config_error(json!({ "keys": [{ "pem": "hello" }] }))
            .starts_with("keys[0]: `pem` is not PEM")
    );
    assert!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(32), "alg": "none" }] }))
            .starts_with("keys[0].alg: unknown variant `none`")
    );
    assert!(
        config_error(json!({ "jwks": { "keys": [{ "kty": "RSA", "e": "AQAB" }] } }))
            .starts_with("jwks: keys[0]: missing `n`")
    );
    assert!(
        config_error(json!({ "jwks": "{ not json" }))
            .starts_with("jwks: the JWKS text is not JSON")
    );
    assert_eq!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(32) }], "audience": 5 })),
        "audience: expected a string or a list of strings"
    );
    assert_eq!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(32) }], "algorithms": ["RS256"] })),
        "algorithms: no configured key can verify any of these algorithms"
    );
    assert!(
        config_error(json!({ "keys": [{ "secret": "x".repeat(32) }], "isuser": "x" }))
            .starts_with("isuser: unknown field `isuser`")
    );
}

#[test]
fn jwks_skips_keys_it_cannot_use_and_accepts_json_text() {
    let fixture = pyjwt();
    let mut jwks = fixture["jwks"].clone();
    let keys = jwks["keys"].as_array_mut().unwrap();
    keys.push(json!({ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" }));
    keys.push(json!({ "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" }));
    let text = jwks.to_string();
    let config: Config = parse_config(&json!({ "jwks": text }).to_string()).unwrap();
    assert_eq!(config.keys().count(), 5);
}

#[test]
fn small_rsa_keys_are_refused() {
    // A 512-bit modulus.
    let jwks = json!({ "keys": [{ "kty": "RSA", "e": "AQAB", "n": "wPfEI7QdqDhLl2nDn3o5mG9qYkzu6t8T4Ck3z5Cqm4gv8Q0oZ4z4e3hH2I0cKZkB5RrX6Ns5JqXN0HkI2c3LBQ" }] });
    assert!(config_error(json!({ "jwks": jwks })).contains("at least 2048"));
}

// === the stage, end to end on the native stand-in host ===

fn stage_config(extra: Value) -> Config {
    let fixture = pyjwt();
    let mut config = json!({
        "jwks": fixture["jwks"],
        "issuer": fixture["issuer"],
        "audience": fixture["audience"],
        "forward-claims": ["scope", "roles", "missing"],
        "realm": "orders",
        "token": { "query": "access_token", "cookie": "session" },
    });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    parse_config(&config.to_string()).unwrap()
}

fn valid_token() -> String {
    pyjwt()["tokens"][0]["token"].as_str().unwrap().to_string()
}

fn authenticate(config: &Config, req: Request) -> Result<Identity, Response> {
    testing::reset();
    testing::set_now_millis(pyjwt()["now"].as_u64().unwrap() * 1000);
    JwtAuth::authenticate(config, &req, &Context::default())
}

#[test]
fn a_valid_bearer_token_yields_the_identity() {
    let req =
        Request::new("GET", "/").with_header("Authorization", format!("bearer  {}", valid_token()));
    let identity = authenticate(&stage_config(json!({})), req).unwrap();
    assert_eq!(identity.subject, "user-42");
    assert_eq!(
        identity.claims,
        vec![
            ("scope".to_string(), "read write".to_string()),
            ("roles".to_string(), "admin,dev".to_string()),
        ]
    );
}

#[test]
fn a_missing_token_gets_a_bare_challenge() {
    let refusal = authenticate(&stage_config(json!({})), Request::new("GET", "/")).unwrap_err();
    assert_eq!(refusal.status, 401);
    assert_eq!(
        refusal.header_str("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
    // Another scheme is no bearer token either.
    let basic = Request::new("GET", "/").with_header("authorization", "Basic dXNlcjpwYXNz");
    let refusal = authenticate(&stage_config(json!({})), basic).unwrap_err();
    assert_eq!(
        refusal.header_str("www-authenticate"),
        Some("Bearer realm=\"orders\"")
    );
}

#[test]
fn an_invalid_token_gets_an_invalid_token_challenge() {
    let fixture = pyjwt();
    let expired = fixture["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["name"] == "expired")
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let req = Request::new("GET", "/").with_header("authorization", format!("Bearer {expired}"));
    let refusal = authenticate(&stage_config(json!({})), req).unwrap_err();
    assert_eq!(refusal.status, 401);
    assert_eq!(
        refusal.header_str("www-authenticate"),
        Some(
            "Bearer realm=\"orders\", error=\"invalid_token\", error_description=\"the token has expired\""
        )
    );
    let body: Value = refusal.body_json().unwrap();
    assert_eq!(
        body,
        json!({ "error": "invalid_token", "message": "the token has expired" })
    );
}

#[test]
fn tokens_from_the_query_or_a_cookie() {
    let config = stage_config(json!({}));
    let query = Request::new("GET", &format!("/x?access_token={}", valid_token()));
    assert_eq!(authenticate(&config, query).unwrap().subject, "user-42");
    let cookie = Request::new("GET", "/")
        .with_header("cookie", format!("theme=dark; session={}", valid_token()));
    assert_eq!(authenticate(&config, cookie).unwrap().subject, "user-42");
}

#[test]
fn a_custom_header_without_scheme_and_subject_claim() {
    let config = stage_config(
        json!({ "token": { "header": "x-token", "scheme": "" }, "subject-claim": "tenant" }),
    );
    let req = Request::new("GET", "/").with_header("x-token", valid_token());
    assert_eq!(authenticate(&config, req).unwrap().subject, "acme");
    let config = stage_config(json!({ "subject-claim": "nope" }));
    let req =
        Request::new("GET", "/").with_header("authorization", format!("Bearer {}", valid_token()));
    let refusal = authenticate(&config, req).unwrap_err();
    assert!(
        refusal
            .header_str("www-authenticate")
            .unwrap()
            .contains("has no `nope` claim")
    );
}

// === the README's examples ===

#[path = "../../readme_examples.rs"]
mod readme_examples;

/// The `config` of every stage of `plugin` in this plugin's README examples.
fn readme_configs(plugin: &str) -> Vec<String> {
    readme_examples::stage_configs(include_str!("../README.md"), plugin)
}

#[test]
fn readme_examples_are_valid() {
    let configs = readme_configs("jwt-auth");
    assert!(
        !configs.is_empty(),
        "the README has no example of this plugin"
    );
    for config in configs {
        let parsed: Config = parse_config(&config).unwrap_or_else(|err| panic!("{err}\n{config}"));
        JwtAuth::validate(&parsed).unwrap_or_else(|err| panic!("{err}\n{config}"));
    }
}
