/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), small and dependency-free. */
#ifndef HMAC_AUTH_SHA256_H
#define HMAC_AUTH_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BLOCK 64
#define SHA256_DIGEST 32

typedef struct {
    uint32_t state[8];
    uint64_t length;            /* bytes hashed so far */
    uint8_t block[SHA256_BLOCK];
    size_t used;                /* bytes waiting in `block` */
} sha256_ctx;

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const void *data, size_t len);
void sha256_final(sha256_ctx *ctx, uint8_t out[SHA256_DIGEST]);
void sha256(const void *data, size_t len, uint8_t out[SHA256_DIGEST]);

/* HMAC-SHA256, streaming: init with the key, update with the message in parts, final. */
typedef struct {
    sha256_ctx inner;
    uint8_t opad_key[SHA256_BLOCK];
} hmac_sha256_ctx;

void hmac_sha256_init(hmac_sha256_ctx *ctx, const void *key, size_t key_len);
void hmac_sha256_update(hmac_sha256_ctx *ctx, const void *data, size_t len);
void hmac_sha256_final(hmac_sha256_ctx *ctx, uint8_t out[SHA256_DIGEST]);
void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                 uint8_t out[SHA256_DIGEST]);

/* Lower-case hex of `len` bytes into `out` (2 * len characters, no terminator). */
void hex_encode(const uint8_t *bytes, size_t len, char *out);
/* Decodes exactly 2 * len hex digits (either case); 0 on a non-hex digit. */
int hex_decode(const char *hex, size_t len, uint8_t *out);
/* 1 when a and b are equal; the time taken does not depend on where they differ. */
int ct_equal(const uint8_t *a, const uint8_t *b, size_t len);
/* Overwrites memory in a way the optimiser keeps. */
void secure_zero(void *p, size_t len);

#endif
