/* A small strict JSON (RFC 8259) parser into a tree. Refuses what a lenient
 * parser would guess at: trailing commas, comments, leading zeros, control
 * characters in strings, lone surrogates, duplicate keys, trailing garbage,
 * nesting deeper than JSON_MAX_DEPTH. */
#ifndef HMAC_AUTH_JSON_H
#define HMAC_AUTH_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

#define JSON_MAX_DEPTH 32

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    int boolean;             /* JSON_BOOL */
    int is_integer;          /* JSON_NUMBER without fraction or exponent that fits int64 */
    int64_t integer;         /* ... and its value */
    char *string;            /* JSON_STRING: decoded UTF-8, NUL-terminated (may hold NULs) */
    size_t length;           /* ... its length in bytes */
    json_value *items;       /* JSON_ARRAY */
    json_member *members;    /* JSON_OBJECT, in document order */
    size_t count;            /* number of items or members */
};

struct json_member {
    char *key;
    size_t key_length;
    json_value value;
};

/* Parses `len` bytes. On error returns 0, frees what it built and appends a
 * message with the byte offset to `err`. */
int json_parse(const char *text, size_t len, json_value *out, strbuf *err);
void json_free(json_value *value);
/* "a string", "an array", ... for messages. */
const char *json_type_name(json_type type);

#endif
