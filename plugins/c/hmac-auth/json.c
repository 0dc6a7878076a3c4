#include "json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *text;
    size_t len;
    size_t pos;
    strbuf *err;
    int failed;
} parser;

static int fail(parser *p, const char *what) {
    if (!p->failed) {
        p->failed = 1;
        sb_str(p->err, "invalid JSON at byte ");
        sb_u64(p->err, p->pos);
        sb_str(p->err, ": ");
        sb_str(p->err, what);
    }
    return 0;
}

/* Arrays grow to 4, 8, 16, ... slots: `full` says when `count` slots are used up. */
static int full(size_t count) { return count == 0 || (count >= 4 && (count & (count - 1)) == 0); }

static void *grow(void *ptr, size_t count, size_t size) {
    size_t cap = count ? count * 2 : 4;
    void *p = realloc(ptr, cap * size);
    if (!p) abort();
    return p;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) return fail(p, "unexpected character");
    p->pos += n;
    return 1;
}

static int hex4(parser *p, uint32_t *out) {
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return fail(p, "bad \\u escape");
    }
    *out = v;
    return 1;
}

static void put_utf8(strbuf *sb, uint32_t cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) { b[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { b[0] = (char)(0xc0 | cp >> 6); b[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        b[0] = (char)(0xe0 | cp >> 12); b[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        b[0] = (char)(0xf0 | cp >> 18); b[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        b[2] = (char)(0x80 | (cp >> 6 & 0x3f)); b[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
    }
    sb_mem(sb, b, n);
}

/* The opening quote is at p->pos. */
static int string(parser *p, char **out, size_t *out_len) {
    strbuf sb = {0};
    p->pos++;
    for (;;) {
        if (p->pos >= p->len) { sb_free(&sb); return fail(p, "unterminated string"); }
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) { sb_free(&sb); return fail(p, "control character in string"); }
        if (c != '\\') { sb_char(&sb, (char)c); p->pos++; continue; }
        p->pos++;
        if (p->pos >= p->len) { sb_free(&sb); return fail(p, "unterminated string"); }
        char e = p->text[p->pos++];
        switch (e) {
        case '"': sb_char(&sb, '"'); break;
        case '\\': sb_char(&sb, '\\'); break;
        case '/': sb_char(&sb, '/'); break;
        case 'b': sb_char(&sb, '\b'); break;
        case 'f': sb_char(&sb, '\f'); break;
        case 'n': sb_char(&sb, '\n'); break;
        case 'r': sb_char(&sb, '\r'); break;
        case 't': sb_char(&sb, '\t'); break;
        case 'u': {
            uint32_t cp;
            if (!hex4(p, &cp)) { sb_free(&sb); return 0; }
            if (cp >= 0xdc00 && cp <= 0xdfff) { sb_free(&sb); return fail(p, "lone surrogate in \\u escape"); }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u') {
                    sb_free(&sb);
                    return fail(p, "lone surrogate in \\u escape");
                }
                p->pos += 2;
                if (!hex4(p, &lo)) { sb_free(&sb); return 0; }
                if (lo < 0xdc00 || lo > 0xdfff) { sb_free(&sb); return fail(p, "lone surrogate in \\u escape"); }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(&sb, cp);
            break;
        }
        default: sb_free(&sb); return fail(p, "unknown escape");
        }
    }
    *out_len = sb.len;
    *out = sb_take(&sb);
    return 1;
}

static int number(parser *p, json_value *v) {
    size_t start = p->pos;
    int negative = 0, integer = 1, overflow = 0;
    uint64_t magnitude = 0;
    if (p->text[p->pos] == '-') { negative = 1; p->pos++; }
    if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9') return fail(p, "bad number");
    if (p->text[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') return fail(p, "leading zero in number");
    } else {
        while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') {
            uint64_t d = (uint64_t)(p->text[p->pos++] - '0');
            if (magnitude > (UINT64_MAX - d) / 10) overflow = 1;
            else magnitude = magnitude * 10 + d;
        }
    }
    if (p->pos < p->len && p->text[p->pos] == '.') {
        integer = 0;
        p->pos++;
        if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9') return fail(p, "bad number");
        while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (p->text[p->pos] == 'e' || p->text[p->pos] == 'E')) {
        integer = 0;
        p->pos++;
        if (p->pos < p->len && (p->text[p->pos] == '+' || p->text[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9') return fail(p, "bad number");
        while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') p->pos++;
    }
    v->type = JSON_NUMBER;
    if (integer && !overflow && magnitude <= (uint64_t)INT64_MAX) {
        v->is_integer = 1;
        v->integer = negative ? -(int64_t)magnitude : (int64_t)magnitude;
    }
    strbuf sb = {0};
    sb_mem(&sb, p->text + start, p->pos - start);
    v->length = sb.len;
    v->string = sb_take(&sb);
    return 1;
}

static int value(parser *p, json_value *v, int depth);

static int array(parser *p, json_value *v, int depth) {
    v->type = JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == ']') { p->pos++; return 1; }
    for (;;) {
        if (full(v->count)) v->items = grow(v->items, v->count, sizeof *v->items);
        json_value *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        v->count++;
        if (!value(p, item, depth + 1)) return 0;
        skip_ws(p);
        if (p->pos >= p->len) return fail(p, "unterminated array");
        char c = p->text[p->pos++];
        if (c == ']') return 1;
        if (c != ',') { p->pos--; return fail(p, "expected `,` or `]`"); }
    }
}

static int object(parser *p, json_value *v, int depth) {
    v->type = JSON_OBJECT;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == '}') { p->pos++; return 1; }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->len || p->text[p->pos] != '"') return fail(p, "expected a string key");
        size_t key_at = p->pos;
        if (full(v->count)) v->members = grow(v->members, v->count, sizeof *v->members);
        json_member *m = &v->members[v->count];
        memset(m, 0, sizeof *m);
        v->count++;
        if (!string(p, &m->key, &m->key_length)) return 0;
        for (size_t i = 0; i + 1 < v->count; i++) {
            if (v->members[i].key_length == m->key_length && memcmp(v->members[i].key, m->key, m->key_length) == 0) {
                p->pos = key_at;
                fail(p, "duplicate key `");
                sb_sanitized(p->err, m->key, m->key_length, 64);
                sb_char(p->err, '`');
                return 0;
            }
        }
        skip_ws(p);
        if (p->pos >= p->len || p->text[p->pos] != ':') return fail(p, "expected `:`");
        p->pos++;
        if (!value(p, &m->value, depth + 1)) return 0;
        skip_ws(p);
        if (p->pos >= p->len) return fail(p, "unterminated object");
        char c = p->text[p->pos++];
        if (c == '}') return 1;
        if (c != ',') { p->pos--; return fail(p, "expected `,` or `}`"); }
    }
}

static int value(parser *p, json_value *v, int depth) {
    if (depth > JSON_MAX_DEPTH) return fail(p, "nested too deeply");
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "unexpected end of input");
    switch (p->text[p->pos]) {
    case '{': return object(p, v, depth);
    case '[': return array(p, v, depth);
    case '"': v->type = JSON_STRING; return string(p, &v->string, &v->length);
    case 't': v->type = JSON_BOOL; v->boolean = 1; return literal(p, "true");
    case 'f': v->type = JSON_BOOL; v->boolean = 0; return literal(p, "false");
    case 'n': v->type = JSON_NULL; return literal(p, "null");
    case '-': return number(p, v);
    default:
        if (p->text[p->pos] >= '0' && p->text[p->pos] <= '9') return number(p, v);
        return fail(p, "unexpected character");
    }
}

int json_parse(const char *text, size_t len, json_value *out, strbuf *err) {
    parser p = {text, len, 0, err, 0};
    memset(out, 0, sizeof *out);
    if (value(&p, out, 0)) {
        skip_ws(&p);
        if (p.pos == p.len) return 1;
        fail(&p, "unexpected text after the document");
    }
    json_free(out);
    return 0;
}

void json_free(json_value *v) {
    free(v->string);
    for (size_t i = 0; v->type == JSON_ARRAY && i < v->count; i++) json_free(&v->items[i]);
    for (size_t i = 0; v->type == JSON_OBJECT && i < v->count; i++) {
        free(v->members[i].key);
        json_free(&v->members[i].value);
    }
    free(v->items);
    free(v->members);
    memset(v, 0, sizeof *v);
}

const char *json_type_name(json_type type) {
    switch (type) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    default: return "an object";
    }
}
