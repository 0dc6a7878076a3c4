#include "hmac_auth.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "sha256.h"

/* === Config === */

#define MAX_ID 128
#define MAX_SUBJECT 256
#define MAX_REALM 128
#define MAX_HEADER_NAME 64

static char *dup_mem(const void *data, size_t len) {
    char *s = malloc(len + 1);
    if (!s) abort();
    if (len) memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

static int key_is(const json_member *m, const char *name) {
    return m->key_length == strlen(name) && memcmp(m->key, name, m->key_length) == 0;
}

/* "keys[3]" and the like, for messages. */
static void field(strbuf *err, const char *prefix, long index, const char *name) {
    if (!prefix[0] && index < 0 && !name) return; /* the config itself */
    sb_str(err, prefix);
    if (index >= 0) {
        sb_char(err, '[');
        sb_u64(err, (uint64_t)index);
        sb_char(err, ']');
    }
    if (name) {
        if (prefix[0]) sb_char(err, '.');
        sb_str(err, name);
    }
    sb_str(err, ": ");
}

static int wrong_type(strbuf *err, const char *prefix, long index, const char *name,
                      const char *expected, const json_value *got) {
    field(err, prefix, index, name);
    sb_str(err, "expected ");
    sb_str(err, expected);
    sb_str(err, ", got ");
    sb_str(err, json_type_name(got->type));
    return 0;
}

static int unknown_field(strbuf *err, const char *prefix, long index, const json_member *m,
                         const char *expected) {
    if (prefix[0] || index >= 0) field(err, prefix, index, NULL);
    sb_str(err, "unknown field `");
    sb_sanitized(err, m->key, m->key_length, 64);
    sb_str(err, "` (expected ");
    sb_str(err, expected);
    sb_char(err, ')');
    return 0;
}

static int is_token_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A header name: an HTTP token, stored lower-case. */
static int header_name(const json_value *v, const char *name, char **out, strbuf *err) {
    if (v->type != JSON_STRING) return wrong_type(err, "headers", -1, name, "a header name", v);
    int ok = v->length > 0 && v->length <= MAX_HEADER_NAME;
    for (size_t i = 0; ok && i < v->length; i++) ok = is_token_char((unsigned char)v->string[i]);
    if (!ok) {
        field(err, "headers", -1, name);
        sb_str(err, "`");
        sb_sanitized(err, v->string, v->length, 64);
        sb_str(err, "` is not a valid header name");
        return 0;
    }
    free(*out);
    *out = dup_mem(v->string, v->length);
    for (char *c = *out; *c; c++) {
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    }
    return 1;
}

static int parse_headers(const json_value *v, hmac_config *c, strbuf *err) {
    if (v->type != JSON_OBJECT) return wrong_type(err, "headers", -1, NULL, "a table", v);
    for (size_t i = 0; i < v->count; i++) {
        const json_member *m = &v->members[i];
        char **slot = key_is(m, "key-id")      ? &c->key_id_header
                      : key_is(m, "timestamp") ? &c->timestamp_header
                      : key_is(m, "signature") ? &c->signature_header
                                               : NULL;
        if (!slot) return unknown_field(err, "headers", -1, m, "key-id, timestamp, signature");
        if (!header_name(&m->value, m->key, slot, err)) return 0;
    }
    if (strcmp(c->key_id_header, c->timestamp_header) == 0 ||
        strcmp(c->key_id_header, c->signature_header) == 0 ||
        strcmp(c->timestamp_header, c->signature_header) == 0) {
        sb_str(err, "headers: key-id, timestamp and signature must be three different headers");
        return 0;
    }
    return 1;
}

/* "300ms", "90s", "5m", "1h", or a number of seconds. */
static int parse_skew(const json_value *v, uint64_t *out, strbuf *err) {
    uint64_t ms = 0;
    int ok = 0;
    if (v->type == JSON_NUMBER) {
        if (v->is_integer && v->integer >= 0 && v->integer <= (int64_t)(HMAC_MAX_SKEW_MS / 1000)) {
            ms = (uint64_t)v->integer * 1000;
            ok = 1;
        }
    } else if (v->type == JSON_STRING) {
        size_t i = 0;
        uint64_t n = 0;
        while (i < v->length && i < 10 && v->string[i] >= '0' && v->string[i] <= '9') {
            n = n * 10 + (uint64_t)(v->string[i] - '0');
            i++;
        }
        const char *unit = v->string + i;
        size_t unit_len = v->length - i;
        if (i > 0 && unit_len > 0 && unit_len <= 2) {
            uint64_t scale = 0;
            if (unit_len == 2 && memcmp(unit, "ms", 2) == 0) scale = 1;
            else if (unit_len == 1 && unit[0] == 's') scale = 1000;
            else if (unit_len == 1 && unit[0] == 'm') scale = 60000;
            else if (unit_len == 1 && unit[0] == 'h') scale = 3600000;
            if (scale) {
                ms = n * scale; /* n < 10^10, scale <= 3.6e6: no overflow */
                ok = 1;
            }
        }
    } else {
        return wrong_type(err, "", -1, "max-skew", "a duration such as \"5m\" or a number of seconds", v);
    }
    if (!ok || ms < 1000 || ms > HMAC_MAX_SKEW_MS) {
        sb_str(err, "max-skew: expected a duration from 1s to 1h, like \"5m\", \"90s\" or 300 (seconds), got ");
        if (v->type == JSON_STRING) {
            sb_char(err, '"');
            sb_sanitized(err, v->string, v->length, 32);
            sb_char(err, '"');
        } else {
            sb_sanitized(err, v->string, v->length, 32);
        }
        return 0;
    }
    *out = ms;
    return 1;
}

static int visible_ascii(const char *s, size_t len, int allow_space) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c > 0x7e || c < (allow_space ? 0x20 : 0x21)) return 0;
    }
    return 1;
}

static int parse_key(const json_value *v, long index, hmac_config *c, strbuf *err) {
    if (v->type != JSON_OBJECT) return wrong_type(err, "keys", index, NULL, "a table { id, secret, subject }", v);
    const json_value *id = NULL, *secret = NULL, *subject = NULL;
    for (size_t i = 0; i < v->count; i++) {
        const json_member *m = &v->members[i];
        if (key_is(m, "id")) id = &m->value;
        else if (key_is(m, "secret")) secret = &m->value;
        else if (key_is(m, "subject")) subject = &m->value;
        else return unknown_field(err, "keys", index, m, "id, secret, subject");
    }
    if (!id || !secret) {
        field(err, "keys", index, id ? "secret" : "id");
        sb_str(err, "required");
        return 0;
    }
    if (id->type != JSON_STRING) return wrong_type(err, "keys", index, "id", "a string", id);
    if (id->length == 0 || id->length > MAX_ID || !visible_ascii(id->string, id->length, 0)) {
        field(err, "keys", index, "id");
        sb_str(err, "use 1 to 128 visible ASCII characters (no spaces)");
        return 0;
    }
    for (size_t k = 0; k < c->key_count; k++) {
        if (strcmp(c->keys[k].id, id->string) == 0) {
            field(err, "keys", index, "id");
            sb_char(err, '`');
            sb_str(err, id->string);
            sb_str(err, "` is used twice");
            return 0;
        }
    }
    if (secret->type != JSON_STRING) return wrong_type(err, "keys", index, "secret", "a string", secret);
    if (secret->length < HMAC_MIN_SECRET) {
        field(err, "keys", index, "secret");
        sb_str(err, "must be at least 16 bytes, got ");
        sb_u64(err, secret->length);
        sb_str(err, " (use 32 random bytes, e.g. `openssl rand -hex 32`)");
        return 0;
    }
    for (size_t k = 0; k < c->key_count; k++) {
        if (c->keys[k].secret_len == secret->length &&
            memcmp(c->keys[k].secret, secret->string, secret->length) == 0) {
            field(err, "keys", index, "secret");
            sb_str(err, "the same secret as keys[");
            sb_u64(err, k);
            sb_str(err, "]; give every key its own secret");
            return 0;
        }
    }
    if (subject) {
        if (subject->type != JSON_STRING) return wrong_type(err, "keys", index, "subject", "a string", subject);
        int ok = subject->length > 0 && subject->length <= MAX_SUBJECT;
        for (size_t i = 0; ok && i < subject->length; i++) {
            unsigned char ch = (unsigned char)subject->string[i];
            ok = ch >= 0x20 && ch != 0x7f;
        }
        if (!ok) {
            field(err, "keys", index, "subject");
            sb_str(err, "use 1 to 256 bytes without control characters");
            return 0;
        }
    }
    hmac_key *key = &c->keys[c->key_count++];
    key->id = dup_mem(id->string, id->length);
    key->secret = (uint8_t *)dup_mem(secret->string, secret->length);
    key->secret_len = secret->length;
    key->subject = subject ? dup_mem(subject->string, subject->length) : dup_mem(id->string, id->length);
    return 1;
}

static int parse_config(const json_value *root, hmac_config *c, strbuf *err) {
    if (root->type != JSON_OBJECT) return wrong_type(err, "", -1, NULL, "a table", root);
    const json_value *keys = NULL, *headers = NULL;
    for (size_t i = 0; i < root->count; i++) {
        const json_member *m = &root->members[i];
        const json_value *v = &m->value;
        if (key_is(m, "keys")) {
            keys = v;
        } else if (key_is(m, "headers")) {
            headers = v;
        } else if (key_is(m, "max-skew")) {
            if (!parse_skew(v, &c->max_skew_ms, err)) return 0;
        } else if (key_is(m, "sign-body")) {
            if (v->type != JSON_BOOL) return wrong_type(err, "", -1, "sign-body", "true or false", v);
            c->sign_body = v->boolean;
        } else if (key_is(m, "realm")) {
            if (v->type != JSON_STRING) return wrong_type(err, "", -1, "realm", "a string", v);
            if (v->length == 0 || v->length > MAX_REALM || !visible_ascii(v->string, v->length, 1) ||
                memchr(v->string, '"', v->length) || memchr(v->string, '\\', v->length)) {
                sb_str(err, "realm: use 1 to 128 printable ASCII characters without `\"` or `\\`");
                return 0;
            }
            free(c->realm);
            c->realm = dup_mem(v->string, v->length);
        } else {
            return unknown_field(err, "", -1, m, "keys, max-skew, sign-body, headers, realm");
        }
    }
    if (!keys) {
        sb_str(err, "keys: required, a list of { id, secret, subject? }");
        return 0;
    }
    if (keys->type != JSON_ARRAY) return wrong_type(err, "", -1, "keys", "a list of { id, secret, subject? }", keys);
    if (keys->count == 0) {
        sb_str(err, "keys: give at least one key");
        return 0;
    }
    c->keys = calloc(keys->count, sizeof *c->keys);
    if (!c->keys) abort();
    for (size_t i = 0; i < keys->count; i++) {
        if (!parse_key(&keys->items[i], (long)i, c, err)) return 0;
    }
    if (headers && !parse_headers(headers, c, err)) return 0;
    return 1;
}

int hmac_config_parse(const char *json, size_t len, hmac_config *out, strbuf *err) {
    memset(out, 0, sizeof *out);
    out->max_skew_ms = HMAC_DEFAULT_SKEW_MS;
    out->key_id_header = dup_mem("x-key-id", 8);
    out->timestamp_header = dup_mem("x-timestamp", 11);
    out->signature_header = dup_mem("x-signature", 11);
    out->realm = dup_mem("wasmgate", 8);
    json_value root;
    if (!json_parse(json, len, &root, err)) {
        hmac_config_free(out);
        return 0;
    }
    int ok = parse_config(&root, out, err);
    json_free(&root);
    if (!ok) hmac_config_free(out);
    return ok;
}

void hmac_config_free(hmac_config *c) {
    for (size_t i = 0; i < c->key_count; i++) {
        free(c->keys[i].id);
        secure_zero(c->keys[i].secret, c->keys[i].secret_len);
        free(c->keys[i].secret);
        free(c->keys[i].subject);
    }
    free(c->keys);
    free(c->key_id_header);
    free(c->timestamp_header);
    free(c->signature_header);
    free(c->realm);
    memset(c, 0, sizeof *c);
}

/* === Requests === */

void hmac_string_to_sign(const char *method, size_t method_len, const char *uri, size_t uri_len,
                         const char *timestamp, size_t timestamp_len, int sign_body,
                         const uint8_t *body, size_t body_len, strbuf *out) {
    sb_mem(out, method, method_len);
    sb_char(out, '\n');
    sb_mem(out, uri, uri_len);
    sb_char(out, '\n');
    sb_mem(out, timestamp, timestamp_len);
    if (sign_body) {
        uint8_t digest[SHA256_DIGEST];
        char hex[2 * SHA256_DIGEST];
        sha256(body, body_len, digest);
        hex_encode(digest, sizeof digest, hex);
        sb_char(out, '\n');
        sb_mem(out, hex, sizeof hex);
    }
}

typedef struct {
    const char *value;   /* trimmed; NULL when absent or empty */
    size_t len;
    int repeated;
} found_header;

static int ascii_iequal(const char *a, size_t a_len, const char *b) {
    size_t b_len = strlen(b);
    if (a_len != b_len) return 0;
    for (size_t i = 0; i < a_len; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (x != y) return 0;
    }
    return 1;
}

/* The header `name`, trimmed. Given twice (even once empty) is `repeated`;
 * given once but empty counts as absent. */
static found_header find_header(const hmac_request *req, const char *name) {
    found_header f = {NULL, 0, 0};
    int seen = 0;
    for (size_t i = 0; i < req->header_count; i++) {
        const hmac_header *h = &req->headers[i];
        if (!ascii_iequal(h->name, h->name_len, name)) continue;
        if (seen++) {
            f.repeated = 1;
            break;
        }
        const char *v = (const char *)h->value;
        size_t len = h->value_len;
        while (len && (v[0] == ' ' || v[0] == '\t')) { v++; len--; }
        while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
        if (len) { f.value = v; f.len = len; }
    }
    return f;
}

static void refuse(hmac_verdict *out, const char *error, int level) {
    out->outcome = HMAC_REFUSE;
    out->status = 401;
    out->error = error;
    out->log_level = level;
}

/* "300 s", or "1500 ms" when not whole seconds. */
static void sb_duration(strbuf *sb, uint64_t ms) {
    sb_u64(sb, ms % 1000 ? ms : ms / 1000);
    sb_str(sb, ms % 1000 ? " ms" : " s");
}

static void log_prefix(hmac_verdict *out, const char *what) {
    sb_str(&out->log, "refused: ");
    sb_str(&out->log, what);
}

void hmac_verify(const hmac_config *c, const hmac_request *req, uint64_t now_ms, hmac_verdict *out) {
    memset(out, 0, sizeof *out);

    if (c->sign_body && !req->has_body) {
        out->outcome = HMAC_MISCONFIGURED;
        out->status = 500;
        out->error = "stage_misconfigured";
        sb_str(&out->message, "the gateway cannot check this request's signature");
        out->log_level = HMAC_LOG_ERROR;
        sb_str(&out->log, "sign-body = true but the stage does not buffer the body: "
                          "add body = { buffer = true } to the stage; refusing every request until then");
        return;
    }

    /* 1. The three headers, each exactly once. */
    const char *names[3] = {c->key_id_header, c->timestamp_header, c->signature_header};
    found_header found[3];
    int missing = 0;
    for (int i = 0; i < 3; i++) {
        found[i] = find_header(req, names[i]);
        if (found[i].repeated) {
            refuse(out, "invalid_credentials", HMAC_LOG_DEBUG);
            sb_str(&out->message, "the ");
            sb_str(&out->message, names[i]);
            sb_str(&out->message, " header must be given once");
            log_prefix(out, out->message.data);
            return;
        }
        if (!found[i].value) missing++;
    }
    if (missing) {
        refuse(out, "missing_credentials", HMAC_LOG_DEBUG);
        sb_str(&out->message, "the request must be signed with the headers ");
        sb_str(&out->message, names[0]);
        sb_str(&out->message, ", ");
        sb_str(&out->message, names[1]);
        sb_str(&out->message, " and ");
        sb_str(&out->message, names[2]);
        sb_str(&out->message, "; missing:");
        for (int i = 0, n = 0; i < 3; i++) {
            if (found[i].value) continue;
            sb_str(&out->message, n++ ? ", " : " ");
            sb_str(&out->message, names[i]);
        }
        log_prefix(out, "unsigned request, missing:");
        for (int i = 0, n = 0; i < 3; i++) {
            if (found[i].value) continue;
            sb_str(&out->log, n++ ? ", " : " ");
            sb_str(&out->log, names[i]);
        }
        return;
    }
    const found_header *key_id = &found[0], *timestamp = &found[1], *signature = &found[2];

    /* 2. The timestamp: Unix seconds, digits only, within max-skew of now. */
    uint64_t ts = 0;
    int ts_ok = timestamp->len <= 15;
    for (size_t i = 0; ts_ok && i < timestamp->len; i++) {
        char d = timestamp->value[i];
        ts_ok = d >= '0' && d <= '9';
        ts = ts * 10 + (uint64_t)(d - '0');
    }
    if (!ts_ok) {
        refuse(out, "invalid_credentials", HMAC_LOG_DEBUG);
        sb_str(&out->message, "the ");
        sb_str(&out->message, names[1]);
        sb_str(&out->message, " header must be the Unix time in seconds");
        log_prefix(out, out->message.data);
        return;
    }
    uint64_t ts_ms = ts * 1000;
    uint64_t off = ts_ms > now_ms ? ts_ms - now_ms : now_ms - ts_ms;
    if (off > c->max_skew_ms) {
        refuse(out, "timestamp_out_of_range", HMAC_LOG_INFO);
        sb_str(&out->message, "the ");
        sb_str(&out->message, names[1]);
        sb_str(&out->message, " header is more than ");
        sb_duration(&out->message, c->max_skew_ms);
        sb_str(&out->message, " away from the gateway's clock (it must be the current Unix time in seconds)");
        log_prefix(out, "timestamp ");
        sb_duration(&out->log, off >= 10000 ? off - off % 1000 : off);
        sb_str(&out->log, ts_ms > now_ms ? " in the future" : " in the past");
        sb_str(&out->log, " (max-skew ");
        sb_duration(&out->log, c->max_skew_ms);
        sb_str(&out->log, "), key id `");
        sb_sanitized(&out->log, key_id->value, key_id->len, MAX_ID);
        sb_char(&out->log, '`');
        if (ts > now_ms / 10) sb_str(&out->log, "; the client seems to send milliseconds, not seconds");
        return;
    }

    /* 3. The signature: 64 hex digits. */
    uint8_t presented[SHA256_DIGEST];
    if (signature->len != 2 * SHA256_DIGEST || !hex_decode(signature->value, SHA256_DIGEST, presented)) {
        refuse(out, "invalid_credentials", HMAC_LOG_DEBUG);
        sb_str(&out->message, "the ");
        sb_str(&out->message, names[2]);
        sb_str(&out->message, " header must be 64 hex digits (HMAC-SHA256)");
        log_prefix(out, "malformed signature header, key id `");
        sb_sanitized(&out->log, key_id->value, key_id->len, MAX_ID);
        sb_char(&out->log, '`');
        return;
    }

    /* 4. The key, and the HMAC. An unknown key id costs the same HMAC as a
     * known one and gets the same answer as a bad signature. */
    const hmac_key *key = NULL;
    for (size_t i = 0; i < c->key_count; i++) {
        if (strlen(c->keys[i].id) == key_id->len && memcmp(c->keys[i].id, key_id->value, key_id->len) == 0) {
            key = &c->keys[i];
        }
    }
    static const uint8_t no_key[HMAC_MIN_SECRET * 2] = {0};
    strbuf sts = {0};
    hmac_string_to_sign(req->method, req->method_len, req->uri, req->uri_len, timestamp->value,
                        timestamp->len, c->sign_body, req->body, req->body_len, &sts);
    uint8_t expected[SHA256_DIGEST];
    hmac_sha256(key ? key->secret : no_key, key ? key->secret_len : sizeof no_key, sts.data, sts.len,
                expected);
    sb_free(&sts);
    int match = ct_equal(expected, presented, SHA256_DIGEST);
    secure_zero(expected, sizeof expected);
    if (!key || !match) {
        refuse(out, "invalid_signature", HMAC_LOG_INFO);
        sb_str(&out->message, "the signature does not match the request, or the key is unknown");
        log_prefix(out, key ? "signature mismatch for key `" : "unknown key id `");
        sb_sanitized(&out->log, key_id->value, key_id->len, MAX_ID);
        sb_str(&out->log, "`");
        return;
    }
    out->outcome = HMAC_ACCEPT;
    out->key = key;
    out->log_level = HMAC_LOG_DEBUG;
    sb_str(&out->log, "signed by key `");
    sb_str(&out->log, key->id);
    sb_char(&out->log, '`');
}

void hmac_verdict_free(hmac_verdict *v) {
    sb_free(&v->message);
    sb_free(&v->log);
}

void hmac_refusal_body(const hmac_verdict *v, strbuf *out) {
    sb_str(out, "{\"error\":");
    sb_json_string(out, v->error);
    sb_str(out, ",\"message\":");
    sb_json_string(out, v->message.data ? v->message.data : "");
    sb_char(out, '}');
}

void hmac_challenge(const hmac_config *c, strbuf *out) {
    sb_str(out, "HMAC-SHA256 realm=\"");
    sb_str(out, c->realm);
    sb_str(out, "\", headers=\"");
    sb_str(out, c->key_id_header);
    sb_char(out, ' ');
    sb_str(out, c->timestamp_header);
    sb_char(out, ' ');
    sb_str(out, c->signature_header);
    sb_char(out, '"');
}
