// Native unit tests of the CORS logic (cors.cpp, json.hpp): no WebAssembly, no bindings.
// Run: plugins/cpp/cors/test.sh
#include <cstdio>
#include <string>
#include <vector>

#include "cors.hpp"
#include "json.hpp"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                          \
    do {                                                                     \
        ++checks;                                                            \
        if (!(cond)) {                                                       \
            ++failures;                                                      \
            std::printf("%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                    \
    } while (0)

static cors::Config config(const char* text) {
    cors::Config c;
    std::string error;
    if (!cors::parse_config(text, c, error)) {
        std::printf("config rejected: %s\n  %s\n", text, error.c_str());
        ++failures;
    }
    return c;
}

// The error message for a config that must be rejected ("" if it was accepted).
static std::string rejection(const char* text) {
    cors::Config c;
    std::string error;
    if (cors::parse_config(text, c, error)) return "";
    return error;
}

static bool contains(const std::string& haystack, const char* needle) {
    return haystack.find(needle) != std::string::npos;
}

static const cors::Header* find(const std::vector<cors::Header>& headers, const char* name) {
    for (const auto& h : headers)
        if (h.name == name) return &h;
    return nullptr;
}

static std::string value(const std::vector<cors::Header>& headers, const char* name) {
    const cors::Header* h = find(headers, name);
    return h ? h->value : "<absent>";
}

static void test_json() {
    json::Value v;
    std::string e;
    CHECK(json::parse(R"( {"a": [1, -2.5e3, true, null, "x\u00e9\ud83d\ude00\n"], "b": {}} )", v, e));
    CHECK(v.kind == json::Kind::Object && v.keys.size() == 2);
    CHECK(v.find("a")->items[1].text == "-2.5e3");
    CHECK(v.find("a")->items[4].text == "x\xC3\xA9\xF0\x9F\x98\x80\n");
    const char* bad[] = {
        "", "{", "{\"a\":1,}", "[1,]", "{\"a\":1,\"a\":2}", "01", "1.", "-", "+1", ".5",
        "\"\x01\"", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "nul", "true false", "{'a':1}",
        "[1] // c", "\"abc",
    };
    for (const char* text : bad) {
        json::Value x;
        std::string error;
        bool ok = json::parse(text, x, error);
        CHECK(!ok);
        if (ok) std::printf("  accepted: %s\n", text);
    }
    std::string deep(40, '[');
    deep += std::string(40, ']');
    CHECK(!json::parse(deep, v, e) && contains(e, "nested too deeply"));
    std::string out;
    json::append_quoted(out, "a\"b\\c\n\x01");
    CHECK(out == "\"a\\\"b\\\\c\\n\\u0001\"");
}

static void test_origin_parsing() {
    cors::Origin o;
    CHECK(cors::parse_origin("https://App.Example.com", o, false) && o.host == "app.example.com" && o.port == 0);
    CHECK(cors::parse_origin("https://app.example.com:443", o, false) && o.port == 0);
    CHECK(cors::parse_origin("http://localhost:8080", o, false) && o.port == 8080);
    CHECK(cors::parse_origin("http://[::1]:3000", o, false) && o.host == "[::1]" && o.port == 3000);
    CHECK(cors::parse_origin("HTTPS://x.io", o, false) && o.scheme == "https");
    CHECK(cors::parse_origin("https://*.example.com", o, true) && o.wildcard && o.host == "example.com");
    CHECK(!cors::parse_origin("https://*.example.com", o, false));
    CHECK(!cors::parse_origin("https://*.com", o, true));          // a whole TLD
    CHECK(!cors::parse_origin("https://*", o, true));
    CHECK(!cors::parse_origin("https://a.*.example.com", o, true));
    CHECK(!cors::parse_origin("https://app.example.com/", o, false));
    CHECK(!cors::parse_origin("https://app.example.com/path", o, false));
    CHECK(!cors::parse_origin("https://user@app.example.com", o, false));
    CHECK(!cors::parse_origin("https://app..example.com", o, false));
    CHECK(!cors::parse_origin("https://app.example.com.", o, false));
    CHECK(!cors::parse_origin("https://app.example.com:", o, false));
    CHECK(!cors::parse_origin("https://app.example.com:0", o, false));
    CHECK(!cors::parse_origin("https://app.example.com:65536", o, false));
    CHECK(!cors::parse_origin("https://app.example.com:12a", o, false));
    CHECK(!cors::parse_origin("app.example.com", o, false));
    CHECK(!cors::parse_origin("://app.example.com", o, false));
    CHECK(!cors::parse_origin("1http://x.io", o, false));
    CHECK(!cors::parse_origin("null", o, false));
    CHECK(!cors::parse_origin("https://", o, false));
    CHECK(!cors::parse_origin("https://[::1", o, false));
    CHECK(!cors::parse_origin("https://ex ample.com", o, false));
}

static void test_origin_matching() {
    cors::Config c = config(R"({"allow-origins": ["https://app.example.com", "https://*.example.org",
                                "http://localhost:3000"]})");
    CHECK(cors::origin_allowed(c, "https://app.example.com"));
    CHECK(cors::origin_allowed(c, "https://app.example.com:443"));   // default port
    CHECK(cors::origin_allowed(c, "https://APP.example.com"));
    CHECK(!cors::origin_allowed(c, "http://app.example.com"));       // scheme
    CHECK(!cors::origin_allowed(c, "https://app.example.com:8443")); // port
    CHECK(!cors::origin_allowed(c, "https://app.example.com.evil.io"));
    CHECK(!cors::origin_allowed(c, "https://evilapp.example.com"));
    CHECK(!cors::origin_allowed(c, "https://example.com"));
    CHECK(cors::origin_allowed(c, "https://a.example.org"));
    CHECK(cors::origin_allowed(c, "https://a.b.example.org"));
    CHECK(!cors::origin_allowed(c, "https://example.org"));          // not a subdomain
    CHECK(!cors::origin_allowed(c, "https://badexample.org"));
    CHECK(!cors::origin_allowed(c, "https://a.example.org.evil.io"));
    CHECK(!cors::origin_allowed(c, "http://a.example.org"));
    CHECK(cors::origin_allowed(c, "http://localhost:3000"));
    CHECK(!cors::origin_allowed(c, "http://localhost:3001"));
    CHECK(!cors::origin_allowed(c, "http://localhost"));
    CHECK(!cors::origin_allowed(c, "null"));
    CHECK(!cors::origin_allowed(c, ""));
    CHECK(!cors::origin_allowed(c, "https://app.example.com/"));
    CHECK(!cors::origin_allowed(c, std::string("https://app.example.com\0", 24)));
    CHECK(!cors::origin_allowed(c, "https://" + std::string(2000, 'a') + ".example.org"));

    cors::Config any = config(R"({"allow-origins": ["*"]})");
    CHECK(cors::origin_allowed(any, "https://anything.io"));
    CHECK(cors::origin_allowed(any, "null"));
    CHECK(!cors::origin_allowed(any, "bad\x01"));
}

static void test_config_validation() {
    cors::Config c = config(R"({"allow-origins": ["https://a.io"]})");
    CHECK(c.methods.size() == 3 && c.methods[0] == "GET" && !c.credentials && !c.has_max_age);
    c = config(R"({"allow-origins": ["https://a.io"], "allow-methods": ["GET", "PATCH"],
                   "allow-headers": ["Content-Type", "X-Api-Key"], "expose-headers": ["X-Request-Id"],
                   "allow-credentials": true, "max-age": 600})");
    CHECK(c.methods.size() == 2 && c.allow_headers[0] == "content-type" && c.allow_headers[1] == "x-api-key");
    CHECK(c.expose_headers[0] == "x-request-id" && c.credentials && c.has_max_age && c.max_age == 600);
    c = config(R"({"allow-origins": ["*"], "allow-methods": ["*"], "allow-headers": ["*"], "expose-headers": ["*"]})");
    CHECK(c.any_origin && c.any_method && c.any_header && c.expose_all);
    config(R"({"allow-origins": ["https://a.io"], "allow-headers": ["*"], "allow-credentials": true})");
    config(R"({"allow-origins": ["https://a.io"], "max-age": 0})");

    CHECK(contains(rejection(R"({"allow-origins": ["*"], "allow-credentials": true})"), "cannot be combined"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "expose-headers": ["*"], "allow-credentials": true})"), "cannot be combined"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-origin": []})"), "unknown key \"allow-origin\""));
    CHECK(contains(rejection(R"({})"), "`allow-origins` is required"));
    CHECK(contains(rejection(R"({"allow-origins": []})"), "is empty"));
    CHECK(contains(rejection(R"({"allow-origins": "https://a.io"})"), "must be a list of strings, got a string"));
    CHECK(contains(rejection(R"({"allow-origins": [1]})"), "`allow-origins[0]` must be a string, got a number"));
    CHECK(contains(rejection(R"({"allow-origins": ["*", "https://a.io"]})"), "`*` must be the only entry"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io/"]})"), "is not an origin"));
    CHECK(contains(rejection(R"({"allow-origins": ["null"]})"), "\"null\" is not accepted"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io", "https://*.io"]})"), "`allow-origins[1]`"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-methods": ["GET POST"]})"), "not a valid method token"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-methods": ["GET,POST"]})"), "not a valid method token"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-methods": [""]})"), "is empty"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-methods": []})"), "is empty"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-headers": ["x:y"]})"), "not a valid header name"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "expose-headers": "x"})"), "must be a list"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "allow-credentials": "yes"})"), "must be a boolean, got a string"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "max-age": -1})"), "got -1"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "max-age": 1.5})"), "whole number"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "max-age": 86401})"), "whole number"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "max-age": 1e3})"), "whole number"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"], "max-age": "600"})"), "got a string"));
    CHECK(contains(rejection(R"([])"), "must be a table, got a list"));
    CHECK(contains(rejection(R"({"allow-origins": ["https://a.io"],})"), "not valid JSON"));
}

using Headers = std::vector<cors::HeaderView>;

static void test_preflight() {
    cors::Config c = config(R"({"allow-origins": ["https://app.example.com"], "allow-methods": ["GET", "PUT"],
                                "allow-headers": ["content-type", "x-api-key"], "allow-credentials": true,
                                "max-age": 600})");
    Headers h = {{"origin", "https://app.example.com"},
                 {"access-control-request-method", "PUT"},
                 {"access-control-request-headers", "Content-Type, x-api-key"}};
    cors::RequestDecision d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(d.answer && d.response.status == 204 && d.response.body.empty());
    CHECK(value(d.response.headers, "access-control-allow-origin") == "https://app.example.com");
    CHECK(value(d.response.headers, "access-control-allow-methods") == "GET, PUT");
    CHECK(value(d.response.headers, "access-control-allow-headers") == "content-type, x-api-key");
    CHECK(value(d.response.headers, "access-control-allow-credentials") == "true");
    CHECK(value(d.response.headers, "access-control-max-age") == "600");
    CHECK(contains(value(d.response.headers, "vary"), "origin"));

    // refused: origin, method, headers
    h[0].value = "https://evil.example";
    d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(d.answer && d.response.status == 403);
    CHECK(contains(d.response.body, "\"error\":\"cors_origin_not_allowed\""));
    CHECK(contains(d.response.body, "\"request_id\":\"rid\""));
    CHECK(value(d.response.headers, "content-type") == "application/json");
    CHECK(!find(d.response.headers, "access-control-allow-origin"));
    h[0].value = "https://app.example.com";
    h[1].value = "DELETE";
    d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(d.response.status == 403 && contains(d.response.body, "cors_method_not_allowed"));
    CHECK(contains(d.response.body, "(allowed: GET, PUT)"));
    h[1].value = "put";  // methods are case-sensitive
    d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(d.response.status == 403);
    h[1].value = "PUT";
    h[2].value = "x-api-key, X-Other,, authorization ";
    d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(d.response.status == 403 && contains(d.response.body, "request headers not allowed: X-Other, authorization"));

    std::string many;
    for (int i = 0; i < 12; ++i) many += "x-h" + std::to_string(i) + ",";
    h[2].value = many;
    d = cors::on_request(c, "OPTIONS", h, "rid");
    CHECK(contains(d.response.body, "x-h9 and 2 more\""));

    // ACRH may be absent; two Origin headers are refused; hostile text is escaped
    Headers no_acrh = {{"origin", "https://app.example.com"}, {"access-control-request-method", "GET"}};
    CHECK(cors::on_request(c, "OPTIONS", no_acrh, "r").response.status == 204);
    Headers two = {{"origin", "https://app.example.com"}, {"origin", "https://app.example.com"},
                   {"access-control-request-method", "GET"}};
    d = cors::on_request(c, "OPTIONS", two, "r");
    CHECK(d.response.status == 403 && contains(d.response.body, "more than one Origin header"));
    Headers hostile = {{"origin", "https://\"x\n"}, {"access-control-request-method", "GET"}};
    d = cors::on_request(c, "OPTIONS", hostile, "r");
    CHECK(d.response.status == 403 && contains(d.response.body, "https://\\\"x?"));

    // wildcards: echo the request
    cors::Config any = config(R"({"allow-origins": ["*"], "allow-methods": ["*"], "allow-headers": ["*"]})");
    Headers w = {{"origin", "https://who.ever"}, {"access-control-request-method", "PURGE"},
                 {"access-control-request-headers", "X-A, x-a"}, {"access-control-request-headers", "x-b"}};
    d = cors::on_request(any, "OPTIONS", w, "r");
    CHECK(d.response.status == 204);
    CHECK(value(d.response.headers, "access-control-allow-origin") == "*");
    CHECK(value(d.response.headers, "access-control-allow-methods") == "PURGE");
    CHECK(value(d.response.headers, "access-control-allow-headers") == "x-a, x-b");
    CHECK(!find(d.response.headers, "access-control-allow-credentials"));
    CHECK(!find(d.response.headers, "access-control-max-age"));
}

static void test_actual_requests() {
    cors::Config c = config(R"({"allow-origins": ["https://app.example.com"]})");
    // allowed origin: pass through, remember the origin
    cors::RequestDecision d = cors::on_request(c, "GET", {{"origin", "https://app.example.com"}}, "r");
    CHECK(!d.answer && d.origin_var == "https://app.example.com");
    // OPTIONS without access-control-request-method is not a preflight
    d = cors::on_request(c, "OPTIONS", {{"origin", "https://app.example.com"}}, "r");
    CHECK(!d.answer && d.origin_var == "https://app.example.com");
    // not allowed: pass through, nothing remembered
    d = cors::on_request(c, "POST", {{"origin", "https://evil.example"}}, "r");
    CHECK(!d.answer && d.origin_var.empty() && d.log_level == cors::LogLevel::Debug);
    // no Origin: not CORS at all
    d = cors::on_request(c, "GET", {{"host", "x"}}, "r");
    CHECK(!d.answer && d.origin_var.empty() && d.log.empty());
}

static std::vector<cors::Header> edited(const cors::ResponseEdit& e, const Headers& in) {
    std::vector<cors::Header> out;
    for (size_t i = 0; i < in.size(); ++i)
        if (!e.drop[i]) out.push_back({std::string(in[i].name), std::string(in[i].value)});
    for (const auto& h : e.add) out.push_back(h);
    return out;
}

static void test_response() {
    cors::Config c = config(R"({"allow-origins": ["https://app.example.com"], "allow-credentials": true,
                                "expose-headers": ["X-Request-Id", "ETag"]})");
    Headers up = {{"content-type", "text/plain"}, {"access-control-allow-origin", "*"}};
    std::string_view origin = "https://app.example.com";
    auto out = edited(cors::on_response(c, up, &origin), up);
    CHECK(value(out, "content-type") == "text/plain");
    CHECK(value(out, "access-control-allow-origin") == "https://app.example.com");  // upstream's replaced
    CHECK(value(out, "access-control-allow-credentials") == "true");
    CHECK(value(out, "access-control-expose-headers") == "x-request-id, etag");
    CHECK(value(out, "vary") == "origin");
    int acao = 0;
    for (const auto& h : out) acao += h.name == "access-control-allow-origin";
    CHECK(acao == 1);

    // no origin remembered: only vary, and the upstream's CORS headers are gone
    out = edited(cors::on_response(c, up, nullptr), up);
    CHECK(!find(out, "access-control-allow-origin") && value(out, "vary") == "origin");
    // a remembered origin that the config does not allow (another stage's var)
    std::string_view other = "https://evil.example";
    out = edited(cors::on_response(c, up, &other), up);
    CHECK(!find(out, "access-control-allow-origin"));
    // an existing vary that covers origin is left alone
    Headers varied = {{"vary", "Accept-Encoding, Origin"}};
    out = edited(cors::on_response(c, varied, &origin), varied);
    int vary = 0;
    for (const auto& h : out) vary += h.name == "vary";
    CHECK(vary == 1);
    Headers varied2 = {{"vary", "accept-encoding"}};
    out = edited(cors::on_response(c, varied2, &origin), varied2);
    vary = 0;
    for (const auto& h : out) vary += h.name == "vary";
    CHECK(vary == 2);

    // "*": the same headers for everyone, no vary
    cors::Config any = config(R"({"allow-origins": ["*"], "expose-headers": ["*"]})");
    out = edited(cors::on_response(any, {}, nullptr), {});
    CHECK(value(out, "access-control-allow-origin") == "*");
    CHECK(value(out, "access-control-expose-headers") == "*");
    CHECK(!find(out, "vary") && !find(out, "access-control-allow-credentials"));
}

int main() {
    test_json();
    test_origin_parsing();
    test_origin_matching();
    test_config_validation();
    test_preflight();
    test_actual_requests();
    test_response();
    std::printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
