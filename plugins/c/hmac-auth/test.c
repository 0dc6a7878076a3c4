/* Native tests of hmac-auth's logic (no WIT, no wasm): plugins/c/hmac-auth/test.sh */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmac_auth.h"
#include "json.h"
#include "sha256.h"

static int failures, checks;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
static void check(int ok, const char *what, const char *file, int line) {
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what);
    }
}

static void check_str(const char *got, const char *want, int line) {
    checks++;
    if (!got || strcmp(got, want) != 0) {
        failures++;
        fprintf(stderr, "test.c:%d: FAILED:\n   got: %s\n  want: %s\n", line, got ? got : "(null)", want);
    }
}
#define CHECK_STR(got, want) check_str((got), (want), __LINE__)

static const char *hex(const uint8_t digest[SHA256_DIGEST]) {
    static char out[2 * SHA256_DIGEST + 1];
    hex_encode(digest, SHA256_DIGEST, out);
    out[2 * SHA256_DIGEST] = '\0';
    return out;
}

/* === SHA-256 (FIPS 180-4 examples) and HMAC-SHA256 (RFC 4231) === */

static void test_sha256(void) {
    uint8_t d[SHA256_DIGEST];
    sha256("", 0, d);
    CHECK_STR(hex(d), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256("abc", 3, d);
    CHECK_STR(hex(d), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256(two_blocks, strlen(two_blocks), d);
    CHECK_STR(hex(d), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million `a`, fed in uneven pieces to exercise the block buffering */
    char chunk[977];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx ctx;
    sha256_init(&ctx);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        sha256_update(&ctx, chunk, n);
        left -= n;
    }
    sha256_final(&ctx, d);
    CHECK_STR(hex(d), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_hmac(void) {
    uint8_t d[SHA256_DIGEST], key[131];
    /* RFC 4231 test case 1 */
    memset(key, 0x0b, 20);
    hmac_sha256(key, 20, "Hi There", 8, d);
    CHECK_STR(hex(d), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* test case 2: a key shorter than the block */
    const char *msg = "what do ya want for nothing?";
    hmac_sha256("Jefe", 4, msg, strlen(msg), d);
    CHECK_STR(hex(d), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* test case 3: 0xaa key, 50 bytes of 0xdd */
    uint8_t data[50];
    memset(key, 0xaa, 20);
    memset(data, 0xdd, sizeof data);
    hmac_sha256(key, 20, data, sizeof data, d);
    CHECK_STR(hex(d), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    /* test cases 6 and 7: a key longer than the block is hashed first */
    memset(key, 0xaa, sizeof key);
    msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    hmac_sha256(key, sizeof key, msg, strlen(msg), d);
    CHECK_STR(hex(d), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    msg = "This is a test using a larger than block-size key and a larger than block-size data. "
          "The key needs to be hashed before being used by the HMAC algorithm.";
    hmac_sha256(key, sizeof key, msg, strlen(msg), d);
    CHECK_STR(hex(d), "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");

    uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    CHECK(ct_equal(a, a, 4));
    CHECK(!ct_equal(a, b, 4));
    uint8_t bytes[2];
    CHECK(hex_decode("aB0f", 2, bytes) && bytes[0] == 0xab && bytes[1] == 0x0f);
    CHECK(!hex_decode("0g00", 2, bytes));
}

/* === JSON === */

static const char *json_error(const char *text) {
    static char message[256];
    json_value v;
    strbuf err = {0};
    if (json_parse(text, strlen(text), &v, &err)) {
        json_free(&v);
        return "(parsed)";
    }
    snprintf(message, sizeof message, "%s", err.data);
    sb_free(&err);
    return message;
}

static void test_json(void) {
    json_value v;
    strbuf err = {0};
    const char *doc = " {\"a\": [1, -2, 3.5e2, true, false, null], \"s\": \"\\u00e9\\ud83d\\ude00\\n\\\"\"} ";
    CHECK(json_parse(doc, strlen(doc), &v, &err));
    CHECK(v.type == JSON_OBJECT && v.count == 2);
    const json_value *a = &v.members[0].value;
    CHECK(a->type == JSON_ARRAY && a->count == 6);
    CHECK(a->items[1].is_integer && a->items[1].integer == -2);
    CHECK(a->items[2].type == JSON_NUMBER && !a->items[2].is_integer);
    CHECK(a->items[3].type == JSON_BOOL && a->items[3].boolean);
    CHECK(a->items[5].type == JSON_NULL);
    CHECK_STR(v.members[1].value.string, "\xc3\xa9\xf0\x9f\x98\x80\n\"");
    json_free(&v);

    CHECK_STR(json_error("[1,]"), "invalid JSON at byte 3: unexpected character");
    CHECK_STR(json_error("{\"a\":1,}"), "invalid JSON at byte 7: expected a string key");
    CHECK_STR(json_error("{\"a\":1,\"a\":2}"), "invalid JSON at byte 7: duplicate key `a`");
    CHECK_STR(json_error("01"), "invalid JSON at byte 1: leading zero in number");
    CHECK_STR(json_error("\"\\ud800\""), "invalid JSON at byte 7: lone surrogate in \\u escape");
    CHECK_STR(json_error("\"a\tb\""), "invalid JSON at byte 2: control character in string");
    CHECK_STR(json_error("{} x"), "invalid JSON at byte 3: unexpected text after the document");
    CHECK_STR(json_error("// c\n{}"), "invalid JSON at byte 0: unexpected character");
    CHECK_STR(json_error("\"abc"), "invalid JSON at byte 4: unterminated string");
    CHECK_STR(json_error("1."), "invalid JSON at byte 2: bad number");
    char deep[81] = {0};
    memset(deep, '[', 40);
    memset(deep + 40, ']', 40);
    CHECK_STR(json_error(deep), "invalid JSON at byte 33: nested too deeply");
    CHECK(strcmp(json_error("99999999999999999999"), "(parsed)") == 0); /* valid, just not an int64 */
}

/* === Config === */

#define SECRET_A "partner-a-secret-0123456789"
#define SECRET_B "partner-b-secret-9876543210"
#define KEYS "\"keys\": [{\"id\": \"partner-a\", \"secret\": \"" SECRET_A "\"}," \
             " {\"id\": \"partner-b\", \"secret\": \"" SECRET_B "\", \"subject\": \"Partner B\"}]"

static const char *config_error(const char *text) {
    static char message[512];
    hmac_config c;
    strbuf err = {0};
    if (hmac_config_parse(text, strlen(text), &c, &err)) {
        hmac_config_free(&c);
        return "(valid)";
    }
    snprintf(message, sizeof message, "%s", err.data);
    sb_free(&err);
    return message;
}

static void test_config(void) {
    hmac_config c;
    strbuf err = {0};
    const char *text = "{" KEYS "}";
    CHECK(hmac_config_parse(text, strlen(text), &c, &err));
    CHECK(c.key_count == 2 && c.max_skew_ms == 300000 && !c.sign_body);
    CHECK_STR(c.keys[0].subject, "partner-a");
    CHECK_STR(c.keys[1].subject, "Partner B");
    CHECK_STR(c.key_id_header, "x-key-id");
    hmac_config_free(&c);

    text = "{" KEYS ", \"max-skew\": \"90s\", \"sign-body\": true, \"realm\": \"orders api\","
           " \"headers\": {\"key-id\": \"X-Client\", \"signature\": \"x-sig\"}}";
    CHECK(hmac_config_parse(text, strlen(text), &c, &err));
    CHECK(c.max_skew_ms == 90000 && c.sign_body);
    CHECK_STR(c.key_id_header, "x-client");
    CHECK_STR(c.timestamp_header, "x-timestamp");
    CHECK_STR(c.signature_header, "x-sig");
    strbuf challenge = {0};
    hmac_challenge(&c, &challenge);
    CHECK_STR(challenge.data, "HMAC-SHA256 realm=\"orders api\", headers=\"x-client x-timestamp x-sig\"");
    sb_free(&challenge);
    hmac_config_free(&c);

    CHECK_STR(config_error("{" KEYS ", \"max-skew\": 120}"), "(valid)");
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": \"1500ms\"}"), "(valid)");
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": \"1h\"}"), "(valid)");

    CHECK_STR(config_error("{}"), "keys: required, a list of { id, secret, subject? }");
    CHECK_STR(config_error("{\"keys\": []}"), "keys: give at least one key");
    CHECK_STR(config_error("{\"keys\": {}}"), "keys: expected a list of { id, secret, subject? }, got an object");
    CHECK_STR(config_error("{" KEYS ", \"skew\": 1}"),
              "unknown field `skew` (expected keys, max-skew, sign-body, headers, realm)");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": \"" SECRET_A "\", \"sub\": \"x\"}]}"),
              "keys[0]: unknown field `sub` (expected id, secret, subject)");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\"}]}"), "keys[0].secret: required");
    CHECK_STR(config_error("{\"keys\": [{\"secret\": \"" SECRET_A "\"}]}"), "keys[0].id: required");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": \"short\"}]}"),
              "keys[0].secret: must be at least 16 bytes, got 5 (use 32 random bytes, e.g. `openssl rand -hex 32`)");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": 1234567890123456789}]}"),
              "keys[0].secret: expected a string, got a number");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a b\", \"secret\": \"" SECRET_A "\"}]}"),
              "keys[0].id: use 1 to 128 visible ASCII characters (no spaces)");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": \"" SECRET_A "\"},"
                           " {\"id\": \"a\", \"secret\": \"" SECRET_B "\"}]}"),
              "keys[1].id: `a` is used twice");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": \"" SECRET_A "\"},"
                           " {\"id\": \"b\", \"secret\": \"" SECRET_A "\"}]}"),
              "keys[1].secret: the same secret as keys[0]; give every key its own secret");
    CHECK_STR(config_error("{\"keys\": [{\"id\": \"a\", \"secret\": \"" SECRET_A "\", \"subject\": \"\"}]}"),
              "keys[0].subject: use 1 to 256 bytes without control characters");
    CHECK_STR(config_error("{\"keys\": [\"a\"]}"), "keys[0]: expected a table { id, secret, subject }, got a string");
    const char *skew = "max-skew: expected a duration from 1s to 1h, like \"5m\", \"90s\" or 300 (seconds), got ";
    char want[256];
    snprintf(want, sizeof want, "%s\"5 m\"", skew);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": \"5 m\"}"), want);
    snprintf(want, sizeof want, "%s\"2h\"", skew);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": \"2h\"}"), want);
    snprintf(want, sizeof want, "%s0", skew);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": 0}"), want);
    snprintf(want, sizeof want, "%s1.5", skew);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": 1.5}"), want);
    snprintf(want, sizeof want, "%s\"500ms\"", skew);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": \"500ms\"}"), want);
    CHECK_STR(config_error("{" KEYS ", \"max-skew\": true}"),
              "max-skew: expected a duration such as \"5m\" or a number of seconds, got a boolean");
    CHECK_STR(config_error("{" KEYS ", \"sign-body\": \"yes\"}"), "sign-body: expected true or false, got a string");
    CHECK_STR(config_error("{" KEYS ", \"headers\": {\"key\": \"x\"}}"),
              "headers: unknown field `key` (expected key-id, timestamp, signature)");
    CHECK_STR(config_error("{" KEYS ", \"headers\": {\"key-id\": \"x key\"}}"),
              "headers.key-id: `x key` is not a valid header name");
    CHECK_STR(config_error("{" KEYS ", \"headers\": {\"key-id\": \"x-timestamp\"}}"),
              "headers: key-id, timestamp and signature must be three different headers");
    CHECK_STR(config_error("{" KEYS ", \"realm\": \"a\\\"b\"}"),
              "realm: use 1 to 128 printable ASCII characters without `\"` or `\\`");
    CHECK_STR(config_error("[]"), "expected a table, got an array");
    CHECK_STR(config_error("{" KEYS ","), "invalid JSON at byte 158: expected a string key");
}

/* === Requests === */

static hmac_config config_with(const char *extra) {
    char text[1024];
    snprintf(text, sizeof text, "{" KEYS "%s}", extra);
    hmac_config c;
    strbuf err = {0};
    if (!hmac_config_parse(text, strlen(text), &c, &err)) {
        fprintf(stderr, "config: %s\n", err.data);
        exit(2);
    }
    return c;
}

#define NOW 1700000000000ull /* ms */

typedef struct {
    hmac_header headers[8];
    size_t count;
    hmac_request req;
} test_request;

static void add_header(test_request *t, const char *name, const char *value) {
    t->headers[t->count++] = (hmac_header){name, strlen(name), (const uint8_t *)value, strlen(value)};
    t->req.headers = t->headers;
    t->req.header_count = t->count;
}

static test_request request(const char *method, const char *uri) {
    test_request t;
    memset(&t, 0, sizeof t);
    t.req.method = method;
    t.req.method_len = strlen(method);
    t.req.uri = uri;
    t.req.uri_len = strlen(uri);
    return t;
}

/* What a client computes: hex(HMAC-SHA256(secret, string-to-sign)), in one of 16
 * static buffers used in turn (requests keep pointers to them). */
static char *sign(const char *secret, const test_request *t, const char *ts, int sign_body) {
    static char ring[16][2 * SHA256_DIGEST + 1];
    static int next;
    char *out = ring[next++ % 16];
    strbuf sts = {0};
    hmac_string_to_sign(t->req.method, t->req.method_len, t->req.uri, t->req.uri_len, ts, strlen(ts), sign_body,
                        t->req.body, t->req.body_len, &sts);
    uint8_t d[SHA256_DIGEST];
    hmac_sha256(secret, strlen(secret), sts.data, sts.len, d);
    sb_free(&sts);
    hex_encode(d, sizeof d, out);
    out[2 * SHA256_DIGEST] = '\0';
    return out;
}

/* Runs the verdict and returns its error code ("ok" on success); `body` gets the JSON. */
static const char *verdict_of(const hmac_config *c, test_request *t, uint64_t now, char *body,
                              const char **subject) {
    t->req.headers = t->headers; /* `other = t` copied the pointer to t's headers */
    hmac_verdict v;
    hmac_verify(c, &t->req, now, &v);
    static char code[64];
    snprintf(code, sizeof code, "%s", v.outcome == HMAC_ACCEPT ? "ok" : v.error);
    if (body) {
        strbuf b = {0};
        if (v.outcome != HMAC_ACCEPT) hmac_refusal_body(&v, &b);
        snprintf(body, 512, "%s", b.data ? b.data : "");
        sb_free(&b);
    }
    if (subject) *subject = v.outcome == HMAC_ACCEPT ? v.key->subject : NULL;
    /* nothing secret in the log line */
    CHECK(!v.log.data || (!strstr(v.log.data, "secret") && !strstr(v.log.data, "0123456789")));
    hmac_verdict_free(&v);
    return code;
}

static void test_string_to_sign(void) {
    strbuf sts = {0};
    hmac_string_to_sign("GET", 3, "/a?b=1", 6, "1700000000", 10, 0, NULL, 0, &sts);
    CHECK_STR(sts.data, "GET\n/a?b=1\n1700000000");
    sb_free(&sts);
    hmac_string_to_sign("POST", 4, "/", 1, "1", 1, 1, (const uint8_t *)"", 0, &sts);
    CHECK_STR(sts.data, "POST\n/\n1\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sb_free(&sts);

    /* The same signatures as `openssl dgst -sha256 -hmac` in the README. */
    test_request t = request("GET", "/orders/42?verbose=1");
    CHECK_STR(sign(SECRET_A, &t, "1700000000", 0), "51f6fa4a60372c6f9648f5e7cb98d417671dbc67bef6bb9742fa37c917957dc1");
    t = request("POST", "/orders?id=7");
    t.req.has_body = 1;
    t.req.body = (const uint8_t *)"{\"qty\":1}";
    t.req.body_len = 9;
    CHECK_STR(sign(SECRET_A, &t, "1700000000", 1), "427813dab7dc5469ce921613070cfc5036f601f9c83d26301dd69d53b95e283d");
}

static void test_verify(void) {
    hmac_config c = config_with("");
    char body[512];
    const char *subject;

    test_request t = request("GET", "/orders/42?verbose=1");
    add_header(&t, "x-key-id", "partner-a");
    add_header(&t, "x-timestamp", "1700000000");
    add_header(&t, "x-signature", sign(SECRET_A, &t, "1700000000", 0));
    CHECK_STR(verdict_of(&c, &t, NOW, body, &subject), "ok");
    CHECK_STR(subject, "partner-a");
    /* within the skew, both ways; outside it, refused */
    CHECK_STR(verdict_of(&c, &t, NOW + 300000, NULL, NULL), "ok");
    CHECK_STR(verdict_of(&c, &t, NOW - 300000, NULL, NULL), "ok");
    CHECK_STR(verdict_of(&c, &t, NOW + 301000, body, NULL), "timestamp_out_of_range");
    CHECK_STR(body, "{\"error\":\"timestamp_out_of_range\",\"message\":\"the x-timestamp header is more than 300 s "
                    "away from the gateway's clock (it must be the current Unix time in seconds)\"}");
    CHECK_STR(verdict_of(&c, &t, NOW - 301000, NULL, NULL), "timestamp_out_of_range");

    /* anything changed breaks the signature: method, URI, timestamp */
    test_request other = t;
    other.req.method = "PUT";
    other.req.method_len = 3;
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "invalid_signature");
    CHECK_STR(body, "{\"error\":\"invalid_signature\",\"message\":\"the signature does not match the request, "
                    "or the key is unknown\"}");
    other = t;
    other.req.uri = "/orders/43?verbose=1";
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_signature");
    other = t;
    other.headers[1].value = (const uint8_t *)"1700000001";
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_signature");
    /* another key's id with this key's signature; an unknown id */
    other = t;
    other.headers[0].value = (const uint8_t *)"partner-b";
    other.headers[0].value_len = 9;
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_signature");
    other.headers[0].value = (const uint8_t *)"partner-c";
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_signature");

    /* upper-case hex and surrounding whitespace are fine */
    char upper[80], padded[80];
    const char *sig = (const char *)t.headers[2].value;
    for (int i = 0; i < 64; i++) upper[i] = (char)(sig[i] >= 'a' && sig[i] <= 'f' ? sig[i] - 32 : sig[i]);
    upper[64] = '\0';
    other = t;
    other.headers[2].value = (const uint8_t *)upper;
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "ok");
    snprintf(padded, sizeof padded, " %s\t", sig);
    other.headers[2].value = (const uint8_t *)padded;
    other.headers[2].value_len = strlen(padded);
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "ok");

    /* malformed signature and timestamp */
    other = t;
    other.headers[2].value_len = 63;
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "invalid_credentials");
    CHECK_STR(body, "{\"error\":\"invalid_credentials\",\"message\":\"the x-signature header must be 64 hex digits "
                    "(HMAC-SHA256)\"}");
    other = t;
    other.headers[1].value = (const uint8_t *)"1700000000000"; /* milliseconds: far in the future */
    other.headers[1].value_len = 13;
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "timestamp_out_of_range");
    other.headers[1].value = (const uint8_t *)"-1700000000";
    other.headers[1].value_len = 11;
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "invalid_credentials");
    CHECK_STR(body, "{\"error\":\"invalid_credentials\",\"message\":\"the x-timestamp header must be the Unix time "
                    "in seconds\"}");
    other.headers[1].value = (const uint8_t *)"99999999999999999999";
    other.headers[1].value_len = 20;
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_credentials");

    /* missing, empty and repeated headers */
    test_request bare = request("GET", "/");
    CHECK_STR(verdict_of(&c, &bare, NOW, body, NULL), "missing_credentials");
    CHECK_STR(body, "{\"error\":\"missing_credentials\",\"message\":\"the request must be signed with the headers "
                    "x-key-id, x-timestamp and x-signature; missing: x-key-id, x-timestamp, x-signature\"}");
    other = t;
    other.headers[2].value_len = 0;
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "missing_credentials");
    CHECK(strstr(body, "missing: x-signature\"") != NULL);
    other = t;
    add_header(&other, "x-key-id", "partner-b");
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "invalid_credentials");
    CHECK(strstr(body, "the x-key-id header must be given once") != NULL);
    /* header names compare case-insensitively */
    other = t;
    other.headers[0].name = "X-Key-Id";
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "ok");
    hmac_config_free(&c);

    /* subject */
    c = config_with("");
    test_request b = request("DELETE", "/x");
    add_header(&b, "x-key-id", "partner-b");
    add_header(&b, "x-timestamp", "1700000000");
    add_header(&b, "x-signature", sign(SECRET_B, &b, "1700000000", 0));
    CHECK_STR(verdict_of(&c, &b, NOW, NULL, &subject), "ok");
    CHECK_STR(subject, "Partner B");
    hmac_config_free(&c);

    /* sign-body: the body hash is part of the signature; no buffered body fails closed */
    c = config_with(", \"sign-body\": true, \"max-skew\": \"10s\", \"headers\": {\"timestamp\": \"x-date\"}");
    test_request p = request("POST", "/orders?id=7");
    p.req.has_body = 1;
    p.req.body = (const uint8_t *)"{\"qty\":1}";
    p.req.body_len = 9;
    add_header(&p, "x-key-id", "partner-a");
    add_header(&p, "x-date", "1700000000");
    add_header(&p, "x-signature", sign(SECRET_A, &p, "1700000000", 1));
    CHECK_STR(verdict_of(&c, &p, NOW, NULL, NULL), "ok");
    CHECK_STR(verdict_of(&c, &p, NOW + 11000, NULL, NULL), "timestamp_out_of_range");
    hmac_config_free(&c);
    c = config_with(", \"sign-body\": true, \"max-skew\": \"2500ms\", \"headers\": {\"timestamp\": \"x-date\"}");
    CHECK_STR(verdict_of(&c, &p, NOW + 2500, NULL, NULL), "ok");
    CHECK_STR(verdict_of(&c, &p, NOW - 2501, body, NULL), "timestamp_out_of_range");
    CHECK(strstr(body, "more than 2500 ms away") != NULL);
    other = p;
    other.req.body = (const uint8_t *)"{\"qty\":9}";
    CHECK_STR(verdict_of(&c, &other, NOW, NULL, NULL), "invalid_signature");
    other = p;
    other.req.has_body = 0;
    other.req.body = NULL;
    other.req.body_len = 0;
    CHECK_STR(verdict_of(&c, &other, NOW, body, NULL), "stage_misconfigured");
    CHECK_STR(body, "{\"error\":\"stage_misconfigured\",\"message\":\"the gateway cannot check this request's "
                    "signature\"}");
    /* an empty body is signed as the hash of nothing */
    test_request g = request("GET", "/");
    g.req.has_body = 1;
    g.req.body = (const uint8_t *)"";
    add_header(&g, "x-key-id", "partner-a");
    add_header(&g, "x-date", "1700000000");
    add_header(&g, "x-signature", sign(SECRET_A, &g, "1700000000", 1));
    CHECK_STR(verdict_of(&c, &g, NOW, NULL, NULL), "ok");
    hmac_config_free(&c);
}

int main(void) {
    test_sha256();
    test_hmac();
    test_json();
    test_config();
    test_string_to_sign();
    test_verify();
    if (failures) {
        fprintf(stderr, "%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("hmac-auth: all %d checks passed\n", checks);
    return 0;
}
