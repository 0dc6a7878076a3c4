#include "cors.hpp"

#include "json.hpp"

namespace cors {
namespace {

constexpr std::string_view kKeys[] = {
    "allow-origins", "allow-methods", "allow-headers",
    "expose-headers", "allow-credentials", "max-age",
};

// Headers this stage owns on the way out: the upstream's are dropped.
constexpr std::string_view kOwnedResponseHeaders[] = {
    "access-control-allow-origin",  "access-control-allow-credentials",
    "access-control-expose-headers", "access-control-allow-methods",
    "access-control-allow-headers", "access-control-max-age",
};

constexpr std::string_view kPreflightVary =
    "origin, access-control-request-method, access-control-request-headers";

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c + ('a' - 'A')) : c; }

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = lower(c);
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Untrusted text made safe to quote in a message: printable ASCII, at most 200 bytes.
std::string printable(std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size() && i < 200; ++i) {
        char c = s[i];
        out += (c >= 0x20 && c < 0x7F) ? c : '?';
    }
    if (s.size() > 200) out += "...";
    return out;
}

bool printable_ascii(std::string_view s) {
    for (char c : s)
        if (c < 0x20 || c >= 0x7F) return false;
    return true;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += sep;
        out += items[i];
    }
    return out;
}

std::string quoted(std::string_view s) {
    std::string out;
    json::append_quoted(out, s);
    return out;
}

// A hostname (letters, digits, '-', '_', dot-separated non-empty labels) or a bracketed
// IPv6 literal. Returns the number of labels, 0 if invalid.
size_t host_labels(std::string_view host) {
    if (host.empty()) return 0;
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') return 0;
        for (char c : host.substr(1, host.size() - 2))
            if (!(is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f') || c == ':' || c == '.'))
                return 0;
        return 1;
    }
    size_t labels = 1, label_len = 0;
    for (char c : host) {
        if (c == '.') {
            if (label_len == 0) return 0;
            ++labels;
            label_len = 0;
        } else if (is_alpha(c) || is_digit(c) || c == '-' || c == '_') {
            if (++label_len > 63) return 0;
        } else {
            return 0;
        }
    }
    return label_len == 0 ? 0 : labels;
}

uint32_t default_port(std::string_view scheme) {
    if (scheme == "http" || scheme == "ws") return 80;
    if (scheme == "https" || scheme == "wss") return 443;
    return 0;
}

bool origin_matches(const Origin& pattern, const Origin& origin) {
    if (pattern.scheme != origin.scheme || pattern.port != origin.port) return false;
    if (!pattern.wildcard) return pattern.host == origin.host;
    // "*.example.com" matches "a.example.com" and "a.b.example.com", not "example.com"
    // nor "badexample.com".
    const std::string& suffix = pattern.host;
    const std::string& host = origin.host;
    return host.size() > suffix.size() + 1 &&
           host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0 &&
           host[host.size() - suffix.size() - 1] == '.';
}

// A config value that must be a list of non-empty strings.
bool string_list(const json::Value& value, std::string_view key, std::vector<std::string>& out,
                 std::string& error) {
    if (value.kind != json::Kind::Array) {
        error = "`" + std::string(key) + "` must be a list of strings, got " +
                json::kind_name(value.kind);
        return false;
    }
    for (size_t i = 0; i < value.items.size(); ++i) {
        const json::Value& item = value.items[i];
        if (item.kind != json::Kind::String) {
            error = "`" + std::string(key) + "[" + json::uint_to_string(i) +
                    "]` must be a string, got " + json::kind_name(item.kind);
            return false;
        }
        if (item.text.empty()) {
            error = "`" + std::string(key) + "[" + json::uint_to_string(i) + "]` is empty";
            return false;
        }
        out.push_back(item.text);
    }
    return true;
}

// `["*"]` → true; a "*" among other entries is an error.
bool wildcard_list(const std::vector<std::string>& items, std::string_view key, bool& any,
                   std::string& error) {
    any = false;
    for (const std::string& item : items) {
        if (item != "*") continue;
        if (items.size() != 1) {
            error = "`*` must be the only entry of `" + std::string(key) + "`";
            return false;
        }
        any = true;
    }
    return true;
}

// Header names: valid tokens, kept lower-case.
bool header_list(const json::Value& value, std::string_view key, bool& any,
                 std::vector<std::string>& out, std::string& error) {
    std::vector<std::string> items;
    if (!string_list(value, key, items, error) || !wildcard_list(items, key, any, error))
        return false;
    if (any) return true;
    for (size_t i = 0; i < items.size(); ++i) {
        if (!is_token(items[i])) {
            error = "`" + std::string(key) + "[" + json::uint_to_string(i) + "]`: " +
                    quoted(items[i]) + " is not a valid header name";
            return false;
        }
        out.push_back(to_lower(items[i]));
    }
    return true;
}

const HeaderView* find_header(const std::vector<HeaderView>& headers, std::string_view name,
                              size_t* count) {
    const HeaderView* found = nullptr;
    size_t n = 0;
    for (const HeaderView& h : headers) {
        if (h.name == name) {
            if (!found) found = &h;
            ++n;
        }
    }
    if (count) *count = n;
    return found;
}

Answer refusal(std::string_view code, const std::string& message, std::string_view request_id) {
    Answer answer;
    answer.status = 403;
    answer.headers.push_back({"content-type", "application/json"});
    answer.headers.push_back({"vary", std::string(kPreflightVary)});
    answer.body = "{\"error\":" + quoted(code) + ",\"message\":" + quoted(message) +
                  ",\"request_id\":" + quoted(request_id) + "}";
    return answer;
}

// Whether a `vary` value already covers `origin`.
bool vary_covers_origin(std::string_view value) {
    while (!value.empty()) {
        size_t comma = value.find(',');
        std::string_view item = trim(value.substr(0, comma));
        if (item == "*" || iequals(item, "origin")) return true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return false;
}

}  // namespace

bool is_token(std::string_view text) {
    if (text.empty()) return false;
    for (char c : text) {
        if (is_alpha(c) || is_digit(c)) continue;
        switch (c) {
            case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
            case '+': case '-': case '.': case '^': case '_': case '`': case '|': case '~':
                continue;
            default:
                return false;
        }
    }
    return true;
}

bool parse_origin(std::string_view text, Origin& out, bool allow_wildcard) {
    out = Origin{};
    size_t sep = text.find("://");
    if (sep == std::string_view::npos || sep == 0) return false;
    std::string_view scheme = text.substr(0, sep);
    if (!is_alpha(scheme[0])) return false;
    for (char c : scheme)
        if (!(is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.')) return false;
    std::string_view rest = text.substr(sep + 3);
    if (rest.find_first_of("/?#@\\") != std::string_view::npos) return false;

    std::string_view host = rest, port;
    if (!rest.empty() && rest.front() == '[') {
        size_t close = rest.find(']');
        if (close == std::string_view::npos) return false;
        host = rest.substr(0, close + 1);
        std::string_view after = rest.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return false;
            port = after.substr(1);
            if (port.empty()) return false;
        }
    } else if (size_t colon = rest.find(':'); colon != std::string_view::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
        if (port.empty()) return false;
    }

    out.scheme = to_lower(scheme);
    if (!port.empty()) {
        if (port.size() > 5) return false;
        uint32_t value = 0;
        for (char c : port) {
            if (!is_digit(c)) return false;
            value = value * 10 + uint32_t(c - '0');
        }
        if (value == 0 || value > 65535) return false;
        out.port = value == default_port(out.scheme) ? 0 : value;
    }

    if (allow_wildcard && host.substr(0, 2) == "*.") {
        host.remove_prefix(2);
        // at least "example.com": "*.com" would allow a whole top-level domain
        if (host.front() == '[' || host_labels(host) < 2) return false;
        out.wildcard = true;
    } else if (host_labels(host) == 0) {
        return false;
    }
    out.host = to_lower(host);
    return true;
}

bool origin_allowed(const Config& config, std::string_view origin) {
    if (origin.empty() || origin.size() > kMaxOriginBytes || !printable_ascii(origin))
        return false;
    if (config.any_origin) return true;
    Origin parsed;
    if (!parse_origin(origin, parsed, false)) return false;
    for (const Origin& pattern : config.origins)
        if (origin_matches(pattern, parsed)) return true;
    return false;
}

bool parse_config(std::string_view json_text, Config& out, std::string& error) {
    out = Config{};
    json::Value root;
    std::string json_error;
    if (!json::parse(json_text, root, json_error)) {
        error = "config is not valid JSON: " + json_error;
        return false;
    }
    if (root.kind != json::Kind::Object) {
        error = std::string("config must be a table, got ") + json::kind_name(root.kind);
        return false;
    }
    for (const std::string& key : root.keys) {
        bool known = false;
        for (std::string_view k : kKeys) known = known || key == k;
        if (!known) {
            error = "unknown key " + quoted(key) +
                    " (expected allow-origins, allow-methods, allow-headers, expose-headers, "
                    "allow-credentials, max-age)";
            return false;
        }
    }

    if (const json::Value* v = root.find("allow-credentials")) {
        if (v->kind != json::Kind::Bool) {
            error = std::string("`allow-credentials` must be a boolean, got ") +
                    json::kind_name(v->kind);
            return false;
        }
        out.credentials = v->boolean;
    }

    // allow-origins: required
    const json::Value* origins = root.find("allow-origins");
    if (!origins) {
        error = "`allow-origins` is required: list the origins that may call this route "
                "(e.g. [\"https://app.example.com\"]), or [\"*\"] for any";
        return false;
    }
    std::vector<std::string> items;
    if (!string_list(*origins, "allow-origins", items, error) ||
        !wildcard_list(items, "allow-origins", out.any_origin, error))
        return false;
    if (items.empty()) {
        error = "`allow-origins` is empty: list at least one origin, or [\"*\"]";
        return false;
    }
    if (out.any_origin && out.credentials) {
        error = "`allow-origins = [\"*\"]` cannot be combined with `allow-credentials = true`: "
                "browsers refuse a wildcard origin on credentialed requests; list the origins";
        return false;
    }
    if (!out.any_origin) {
        for (size_t i = 0; i < items.size(); ++i) {
            const std::string& item = items[i];
            std::string where = "`allow-origins[" + json::uint_to_string(i) + "]`: ";
            if (item == "null") {
                error = where + "\"null\" is not accepted: it is the origin of sandboxed "
                        "frames and local files, so allowing it allows any page";
                return false;
            }
            Origin origin;
            if (!parse_origin(item, origin, true)) {
                error = where + quoted(item) +
                        " is not an origin: expected scheme://host[:port] (no path, no "
                        "trailing slash), or scheme://*.domain.tld for subdomains";
                return false;
            }
            out.origins.push_back(std::move(origin));
        }
    }

    // allow-methods: default GET, HEAD, POST
    if (const json::Value* v = root.find("allow-methods")) {
        items.clear();
        if (!string_list(*v, "allow-methods", items, error) ||
            !wildcard_list(items, "allow-methods", out.any_method, error))
            return false;
        if (items.empty()) {
            error = "`allow-methods` is empty: omit it for the default [\"GET\", \"HEAD\", "
                    "\"POST\"]";
            return false;
        }
        if (!out.any_method) {
            for (size_t i = 0; i < items.size(); ++i) {
                if (!is_token(items[i])) {
                    error = "`allow-methods[" + json::uint_to_string(i) + "]`: " +
                            quoted(items[i]) + " is not a valid method token";
                    return false;
                }
                out.methods.push_back(items[i]);
            }
        }
    } else {
        out.methods = {"GET", "HEAD", "POST"};
    }

    if (const json::Value* v = root.find("allow-headers"))
        if (!header_list(*v, "allow-headers", out.any_header, out.allow_headers, error))
            return false;

    if (const json::Value* v = root.find("expose-headers")) {
        if (!header_list(*v, "expose-headers", out.expose_all, out.expose_headers, error))
            return false;
        if (out.expose_all && out.credentials) {
            error = "`expose-headers = [\"*\"]` cannot be combined with `allow-credentials = "
                    "true`: browsers read it as a header named \"*\"; list the headers";
            return false;
        }
    }

    if (const json::Value* v = root.find("max-age")) {
        bool whole = v->kind == json::Kind::Number && !v->text.empty() &&
                     v->text.find_first_not_of("0123456789") == std::string::npos &&
                     v->text.size() <= 6;
        uint32_t seconds = 0;
        if (whole)
            for (char c : v->text) seconds = seconds * 10 + uint32_t(c - '0');
        if (!whole || seconds > kMaxMaxAge) {
            std::string got = v->kind == json::Kind::Number ? v->text
                                                             : json::kind_name(v->kind);
            error = "`max-age` must be a whole number of seconds from 0 to 86400, got " + got;
            return false;
        }
        out.has_max_age = true;
        out.max_age = seconds;
    }
    return true;
}

RequestDecision on_request(const Config& config, std::string_view method,
                           const std::vector<HeaderView>& headers, std::string_view request_id) {
    RequestDecision d;
    size_t origin_count = 0;
    const HeaderView* origin_header = find_header(headers, "origin", &origin_count);
    if (!origin_header) return d;  // not a CORS request
    std::string_view origin = origin_header->value;
    bool allowed = origin_count == 1 && origin_allowed(config, origin);

    size_t acrm_count = 0;
    const HeaderView* acrm = find_header(headers, "access-control-request-method", &acrm_count);
    if (method != "OPTIONS" || !acrm) {
        // An actual request (or an OPTIONS that is not a preflight): pass it on unchanged.
        if (allowed) {
            d.origin_var = std::string(origin);
        } else {
            d.log_level = LogLevel::Debug;
            d.log = "origin " + printable(origin) +
                    " is not allowed: the response gets no CORS headers";
        }
        return d;
    }

    // A preflight: answer it here.
    d.answer = true;
    if (!allowed) {
        std::string message = origin_count == 1
                                  ? "origin " + printable(origin) + " is not allowed"
                                  : std::string("more than one Origin header");
        d.log_level = LogLevel::Info;
        d.log = "preflight refused: " + message;
        d.response = refusal("cors_origin_not_allowed", message, request_id);
        return d;
    }

    std::string_view requested_method = acrm->value;
    bool method_ok = acrm_count == 1 && is_token(requested_method);
    if (method_ok && !config.any_method) {
        method_ok = false;
        for (const std::string& m : config.methods) method_ok = method_ok || m == requested_method;
    }
    if (!method_ok) {
        std::string message = "method " + printable(requested_method) + " is not allowed";
        if (!config.any_method) message += " (allowed: " + join(config.methods, ", ") + ")";
        d.log_level = LogLevel::Info;
        d.log = "preflight from " + printable(origin) + " refused: " + message;
        d.response = refusal("cors_method_not_allowed", message, request_id);
        return d;
    }

    // Access-Control-Request-Headers: a comma-separated list, possibly over several lines.
    std::vector<std::string> requested, refused;
    for (const HeaderView& h : headers) {
        if (h.name != "access-control-request-headers") continue;
        std::string_view rest = h.value;
        while (!rest.empty()) {
            size_t comma = rest.find(',');
            std::string_view item = trim(rest.substr(0, comma));
            if (!item.empty()) {
                std::string name = to_lower(item);
                bool ok = is_token(name);
                if (ok && !config.any_header) {
                    ok = false;
                    for (const std::string& a : config.allow_headers) ok = ok || a == name;
                }
                bool seen = false;
                for (const std::string& r : requested) seen = seen || r == name;
                if (ok && !seen) requested.push_back(std::move(name));
                else if (!ok) refused.push_back(printable(item));
            }
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
    }
    if (!refused.empty()) {
        size_t more = refused.size() > 10 ? refused.size() - 10 : 0;
        refused.resize(refused.size() - more);
        std::string message = "request headers not allowed: " + join(refused, ", ");
        if (more) message += " and " + json::uint_to_string(more) + " more";
        d.log_level = LogLevel::Info;
        d.log = "preflight from " + printable(origin) + " refused: " + message;
        d.response = refusal("cors_headers_not_allowed", message, request_id);
        return d;
    }

    Answer& a = d.response;
    a.status = 204;
    a.headers.push_back(
        {"access-control-allow-origin", config.any_origin ? "*" : std::string(origin)});
    a.headers.push_back({"access-control-allow-methods",
                         config.any_method ? std::string(requested_method)
                                           : join(config.methods, ", ")});
    const std::vector<std::string>& allow = config.any_header ? requested : config.allow_headers;
    if (!allow.empty()) a.headers.push_back({"access-control-allow-headers", join(allow, ", ")});
    if (config.credentials) a.headers.push_back({"access-control-allow-credentials", "true"});
    if (config.has_max_age)
        a.headers.push_back({"access-control-max-age", json::uint_to_string(config.max_age)});
    a.headers.push_back({"vary", std::string(kPreflightVary)});
    d.log_level = LogLevel::Debug;
    d.log = "preflight from " + std::string(origin) + " for " + std::string(requested_method) +
            " answered";
    return d;
}

ResponseEdit on_response(const Config& config, const std::vector<HeaderView>& headers,
                         const std::string_view* origin) {
    ResponseEdit e;
    e.drop.resize(headers.size(), false);
    bool vary_has_origin = false;
    for (size_t i = 0; i < headers.size(); ++i) {
        for (std::string_view owned : kOwnedResponseHeaders)
            if (headers[i].name == owned) e.drop[i] = true;
        if (headers[i].name == "vary" && vary_covers_origin(headers[i].value))
            vary_has_origin = true;
    }

    bool allowed = false;
    if (config.any_origin) {
        // The same answer for every origin (and for requests without one), so shared caches
        // may keep it: no `vary: origin`.
        allowed = true;
        e.add.push_back({"access-control-allow-origin", "*"});
    } else {
        allowed = origin && origin_allowed(config, *origin);
        if (allowed) e.add.push_back({"access-control-allow-origin", std::string(*origin)});
        // The answer depends on the Origin (with or without these headers) either way.
        if (!vary_has_origin) e.add.push_back({"vary", "origin"});
    }
    if (allowed) {
        if (config.credentials) e.add.push_back({"access-control-allow-credentials", "true"});
        if (config.expose_all) e.add.push_back({"access-control-expose-headers", "*"});
        else if (!config.expose_headers.empty())
            e.add.push_back({"access-control-expose-headers", join(config.expose_headers, ", ")});
    }
    return e;
}

Answer misconfigured(std::string_view request_id) {
    Answer answer;
    answer.status = 500;
    answer.headers.push_back({"content-type", "application/json"});
    answer.body = "{\"error\":\"stage_misconfigured\",\"message\":\"the CORS stage's config "
                  "is invalid; see the gateway log\",\"request_id\":" +
                  quoted(request_id) + "}";
    return answer;
}

}  // namespace cors
