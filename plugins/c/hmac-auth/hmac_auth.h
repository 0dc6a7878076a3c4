/* hmac-auth's logic, free of the WIT bindings so that it also builds and runs
 * natively (test.c): the config, the string to sign, and the verdict on a request. */
#ifndef HMAC_AUTH_H
#define HMAC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

#define HMAC_MIN_SECRET 16                  /* bytes */
#define HMAC_DEFAULT_SKEW_MS 300000u         /* 5 minutes */
#define HMAC_MAX_SKEW_MS 3600000u            /* 1 hour */

/* The values of the WIT enum `level`. */
enum { HMAC_LOG_TRACE, HMAC_LOG_DEBUG, HMAC_LOG_INFO, HMAC_LOG_WARN, HMAC_LOG_ERROR };

typedef struct {
    char *id;                 /* the x-key-id value; visible ASCII */
    uint8_t *secret;
    size_t secret_len;
    char *subject;            /* the identity's subject: `subject`, or the id */
} hmac_key;

typedef struct {
    hmac_key *keys;
    size_t key_count;
    uint64_t max_skew_ms;
    int sign_body;
    char *key_id_header;      /* lower-case */
    char *timestamp_header;
    char *signature_header;
    char *realm;
} hmac_config;

/* Parses and checks a stage config (JSON). On error returns 0 and appends a
 * message naming the field to `err`. */
int hmac_config_parse(const char *json, size_t len, hmac_config *out, strbuf *err);
void hmac_config_free(hmac_config *config);

typedef struct {
    const char *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
} hmac_header;

typedef struct {
    const char *method;
    size_t method_len;
    const char *uri;          /* path and query */
    size_t uri_len;
    const hmac_header *headers;
    size_t header_count;
    int has_body;             /* the stage buffers the body */
    const uint8_t *body;
    size_t body_len;
} hmac_request;

typedef enum { HMAC_ACCEPT, HMAC_REFUSE, HMAC_MISCONFIGURED } hmac_outcome;

typedef struct {
    hmac_outcome outcome;
    const hmac_key *key;      /* HMAC_ACCEPT: the key that signed */
    uint16_t status;          /* otherwise: 401, or 500 when misconfigured */
    const char *error;        /* the `error` code of the JSON body */
    strbuf message;           /* the `message` for the client */
    int log_level;            /* HMAC_LOG_*, for `log` */
    strbuf log;               /* for the gateway's log: never a secret or a signature */
} hmac_verdict;

/* METHOD "\n" URI "\n" TIMESTAMP, plus "\n" hex(SHA-256(body)) when `sign_body`. */
void hmac_string_to_sign(const char *method, size_t method_len, const char *uri, size_t uri_len,
                         const char *timestamp, size_t timestamp_len, int sign_body,
                         const uint8_t *body, size_t body_len, strbuf *out);

/* Decides on one request at `now_ms` (Unix milliseconds). Free the verdict after. */
void hmac_verify(const hmac_config *config, const hmac_request *req, uint64_t now_ms,
                 hmac_verdict *out);
void hmac_verdict_free(hmac_verdict *verdict);

/* {"error": ..., "message": ...} of a refusal. */
void hmac_refusal_body(const hmac_verdict *verdict, strbuf *out);
/* The WWW-Authenticate challenge: HMAC-SHA256 realm="...", headers="...". */
void hmac_challenge(const hmac_config *config, strbuf *out);

#endif
