// CORS logic for the `cors` transform stage: config, origin matching, the preflight answer
// and the headers added to responses. Plain C++ with no WIT types, so that
// `cors_test.cpp` can run it natively; `plugin.cpp` is the glue to the bindings.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cors {

// The request variable that carries an allowed Origin from on-request to on-response.
inline constexpr std::string_view kOriginVar = "cors.origin";

// Longest Origin header considered at all (a request variable holds at most 4 KiB).
inline constexpr size_t kMaxOriginBytes = 1024;

// Longest accepted `max-age`, in seconds (Firefox's cap; Chromium caps at 7200).
inline constexpr uint32_t kMaxMaxAge = 86400;

// A header as the logic sees the request's or response's: lower-case name, raw value.
struct HeaderView {
    std::string_view name;
    std::string_view value;
};

// A header to send.
struct Header {
    std::string name;
    std::string value;
};

// An origin, or an `allow-origins` entry: scheme and host lower-case, port 0 when it is
// the scheme's default (http/ws 80, https/wss 443) or absent.
struct Origin {
    std::string scheme;
    std::string host;       // for a wildcard entry, the part after "*."
    uint32_t port = 0;
    bool wildcard = false;  // "scheme://*.example.com": any subdomain, at any depth
};

struct Config {
    bool any_origin = false;              // allow-origins = ["*"]
    std::vector<Origin> origins;
    bool any_method = false;              // allow-methods = ["*"]: echo the requested method
    std::vector<std::string> methods;     // as configured (methods are case-sensitive)
    bool any_header = false;              // allow-headers = ["*"]: echo the requested headers
    std::vector<std::string> allow_headers;   // lower-case
    bool expose_all = false;              // expose-headers = ["*"]
    std::vector<std::string> expose_headers;  // lower-case
    bool credentials = false;
    bool has_max_age = false;
    uint32_t max_age = 0;
};

// Parses and checks a stage config (a JSON object). On error returns false and sets
// `error` to a message naming the key.
bool parse_config(std::string_view json_text, Config& out, std::string& error);

// Parses an origin ("https://app.example.com:8443"). With `allow_wildcard`, also accepts
// "https://*.example.com" (at least two labels after the "*."). No path, query, userinfo.
bool parse_origin(std::string_view text, Origin& out, bool allow_wildcard);

// Whether the request's Origin header value is allowed by the config.
bool origin_allowed(const Config& config, std::string_view origin);

// An HTTP token (RFC 9110 tchar+): method names and header field names.
bool is_token(std::string_view text);

// A response the stage answers with instead of calling the upstream.
struct Answer {
    uint16_t status = 0;
    std::vector<Header> headers;
    std::string body;
};

enum class LogLevel { None, Debug, Info, Warn, Error };

// What on-request decided.
struct RequestDecision {
    bool answer = false;        // true: answer the client with `response`
    Answer response;
    std::string origin_var;     // when passing through: the value of `kOriginVar`, if any
    LogLevel log_level = LogLevel::None;
    std::string log;
};

RequestDecision on_request(const Config& config, std::string_view method,
                           const std::vector<HeaderView>& headers, std::string_view request_id);

// What on-response does to the upstream's headers: drop some, append others.
struct ResponseEdit {
    std::vector<bool> drop;     // parallel to the response headers
    std::vector<Header> add;
};

// `origin` is the request variable `kOriginVar` if on-request set it, else nullptr.
ResponseEdit on_response(const Config& config, const std::vector<HeaderView>& headers,
                         const std::string_view* origin);

// The 500 the stage answers with when its config does not parse at request time.
Answer misconfigured(std::string_view request_id);

}  // namespace cors
