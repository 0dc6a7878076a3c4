/* A growable byte buffer for building messages without stdio (printf would pull
 * in most of libc's formatting code). Out of memory aborts (a trap in wasm). */
#ifndef HMAC_AUTH_STRBUF_H
#define HMAC_AUTH_STRBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;   /* NUL-terminated once anything was added; may be NULL when empty */
    size_t len;
    size_t cap;
} strbuf;

void sb_mem(strbuf *sb, const void *data, size_t len);
void sb_str(strbuf *sb, const char *s);
void sb_char(strbuf *sb, char c);
void sb_u64(strbuf *sb, uint64_t n);
/* Client- or config-supplied text for a message: printable ASCII kept, anything
 * else as `?`, cut at `max` bytes with `...`. */
void sb_sanitized(strbuf *sb, const void *data, size_t len, size_t max);
/* A JSON string literal, quotes included. Bytes must be UTF-8. */
void sb_json_string(strbuf *sb, const char *s);
/* Hands the text over (the caller frees it) and empties the buffer. */
char *sb_take(strbuf *sb);
void sb_free(strbuf *sb);

#endif
