#include "strbuf.h"

#include <stdlib.h>
#include <string.h>

static void reserve(strbuf *sb, size_t extra) {
    if (sb->len + extra + 1 <= sb->cap) return;
    size_t cap = sb->cap ? sb->cap : 64;
    while (cap < sb->len + extra + 1) cap *= 2;
    char *data = realloc(sb->data, cap);
    if (!data) abort();
    sb->data = data;
    sb->cap = cap;
}

void sb_mem(strbuf *sb, const void *data, size_t len) {
    reserve(sb, len);
    if (len) memcpy(sb->data + sb->len, data, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void sb_str(strbuf *sb, const char *s) { sb_mem(sb, s, strlen(s)); }

void sb_char(strbuf *sb, char c) { sb_mem(sb, &c, 1); }

void sb_u64(strbuf *sb, uint64_t n) {
    char digits[20];
    size_t i = sizeof digits;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    sb_mem(sb, digits + i, sizeof digits - i);
}

void sb_sanitized(strbuf *sb, const void *data, size_t len, size_t max) {
    const unsigned char *p = data;
    size_t n = len > max ? max : len;
    for (size_t i = 0; i < n; i++) sb_char(sb, p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?');
    if (len > max) sb_str(sb, "...");
}

void sb_json_string(strbuf *sb, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_char(sb, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            sb_char(sb, '\\');
            sb_char(sb, (char)c);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            sb_mem(sb, esc, sizeof esc);
        } else {
            sb_char(sb, (char)c);
        }
    }
    sb_char(sb, '"');
}

char *sb_take(strbuf *sb) {
    if (!sb->data) sb_mem(sb, "", 0);
    char *s = sb->data;
    sb->data = NULL;
    sb->len = sb->cap = 0;
    return s;
}

void sb_free(strbuf *sb) {
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}
