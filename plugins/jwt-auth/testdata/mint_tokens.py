#!/usr/bin/env python3
"""Mints the JWT fixtures of jwt-auth's tests with an independent implementation.

The tokens in pyjwt_tokens.json are signed by PyJWT (with the `cryptography`
package), not by anything in this repository, so the plugin's tests check
interoperability rather than agreement with themselves. Keys are generated
afresh on every run; only public keys (and the HMAC secret) are written out.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pyjwt cryptography
    /tmp/venv/bin/python plugins/jwt-auth/testdata/mint_tokens.py

Every token is checked at NOW (seconds since the epoch); `expect` names the
outcome the plugin must reach with the JWKS config the file also describes:
"ok" or the name of a `TokenError` variant.
"""

import base64
import hashlib
import hmac
import json
import pathlib

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

NOW = 1_700_001_000
ISSUER = "https://issuer.example"
AUDIENCE = "gateway"
SECRET = "wasmgate-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEF"  # 64 bytes

CLAIMS = {
    "iss": ISSUER,
    "aud": AUDIENCE,
    "sub": "user-42",
    "iat": 1_700_000_000,
    "nbf": 1_700_000_000,
    "exp": 1_700_003_600,
    "scope": "read write",
    "roles": ["admin", "dev"],
    "tenant": "acme",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_pem(key) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def jwk(key, kid: str) -> dict:
    document = json.loads(jwt.algorithms.get_default_algorithms()[ALG_FOR_KID[kid]].to_jwk(key.public_key()))
    document["kid"] = kid
    return document


ALG_FOR_KID = {"rsa-1": "RS256", "ec256-1": "ES256", "ec384-1": "ES384", "ed-1": "EdDSA"}

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other_rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec256_key = ec.generate_private_key(ec.SECP256R1())
ec384_key = ec.generate_private_key(ec.SECP384R1())
ed_key = ed25519.Ed25519PrivateKey.generate()

jwks = {
    "keys": [
        {"kty": "oct", "kid": "hs", "k": b64url(SECRET.encode())},
        jwk(rsa_key, "rsa-1"),
        jwk(ec256_key, "ec256-1"),
        jwk(ec384_key, "ec384-1"),
        jwk(ed_key, "ed-1"),
    ]
}

tokens = []


def mint(name, expect, key, alg, kid=None, claims=None, **changes):
    payload = dict(CLAIMS if claims is None else claims)
    for claim, value in changes.items():
        if value is None:
            payload.pop(claim, None)
        else:
            payload[claim] = value
    headers = {"kid": kid} if kid else None
    token = jwt.encode(payload, key, algorithm=alg, headers=headers)
    tokens.append({"name": name, "alg": alg, "expect": expect, "token": token})


# One valid token per algorithm.
for alg in ("HS256", "HS384", "HS512"):
    mint(f"valid {alg}", "ok", SECRET, alg, kid="hs")
for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
    mint(f"valid {alg}", "ok", rsa_key, alg, kid="rsa-1")
mint("valid ES256", "ok", ec256_key, "ES256", kid="ec256-1")
mint("valid ES384", "ok", ec384_key, "ES384", kid="ec384-1")
mint("valid EdDSA", "ok", ed_key, "EdDSA", kid="ed-1")

# Without a kid, every key that fits the algorithm is tried.
mint("valid RS256 without kid", "ok", rsa_key, "RS256")
mint("audience list", "ok", rsa_key, "RS256", kid="rsa-1", aud=["other", AUDIENCE])
mint("expired within the leeway", "ok", rsa_key, "RS256", kid="rsa-1", exp=NOW - 30)

# Refusals.
mint("expired", "Expired", rsa_key, "RS256", kid="rsa-1", exp=NOW - 120)
mint("not yet valid", "NotYetValid", ec256_key, "ES256", kid="ec256-1", nbf=NOW + 600)
mint("wrong issuer", "WrongIssuer", ed_key, "EdDSA", kid="ed-1", iss="https://evil.example")
mint("wrong audience", "WrongAudience", SECRET, "HS256", kid="hs", aud="someone-else")
mint("no exp", "MissingClaim", SECRET, "HS256", kid="hs", exp=None)
mint("signed by another key", "BadSignature", other_rsa_key, "RS256", kid="rsa-1")
mint("unknown kid", "UnknownKeyId", rsa_key, "RS256", kid="rsa-2")
mint("wrong secret", "BadSignature", SECRET[::-1], "HS256", kid="hs")
mint("alg none", "UnsupportedAlgorithm", None, "none")

# Algorithm confusion: an HS256 token whose "secret" is the RSA public key.
# PyJWT refuses to do this, so sign it by hand.
header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
payload = b64url(json.dumps(CLAIMS).encode())
signature = hmac.new(public_pem(rsa_key).encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
tokens.append(
    {
        "name": "HS256 signed with the RSA public key",
        "alg": "HS256",
        "expect": "NoKeyForAlgorithm",
        "token": f"{header}.{payload}.{b64url(signature)}",
    }
)

fixture = {
    "generator": f"PyJWT {jwt.__version__}",
    "now": NOW,
    "issuer": ISSUER,
    "audience": AUDIENCE,
    "secret": SECRET,
    "pem": {
        "rsa": public_pem(rsa_key),
        "ec256": public_pem(ec256_key),
        "ec384": public_pem(ec384_key),
        "ed25519": public_pem(ed_key),
    },
    "jwks": jwks,
    "tokens": tokens,
}

out = pathlib.Path(__file__).with_name("pyjwt_tokens.json")
out.write_text(json.dumps(fixture, indent=2) + "\n")
print(f"wrote {len(tokens)} tokens to {out}")
