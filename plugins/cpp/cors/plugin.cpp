// Glue between the wit-bindgen C++ bindings (world `transform`) and the CORS logic in
// cors.cpp. Every call runs on a fresh instance: the config is parsed on each call, and the
// request's Origin travels to on-response as the request variable "cors.origin".
//
// Ownership (wit-bindgen cpp): arguments arrive as owning wit::string / wit::vector; what
// we return is handed to the host and freed by the `cabi_post_*` functions, so everything
// returned must be malloc'd (wit::string::from_view, wit::vector::allocate) or moved from
// an argument.
#include <cstring>

#include "cors.hpp"
#include "transform_cpp.h"

namespace wt = ::wasmgate::plugin::types;
namespace host = ::wasmgate::plugin::host;
using WitHeader = std::tuple<wit::string, wit::vector<uint8_t>>;
using WitHeaders = wit::vector<WitHeader>;

#if __has_include(<__verbose_abort>)
#include <__verbose_abort>
// libc++ reports a failed check (e.g. a length_error under -fno-exceptions) by printing to
// stderr before aborting, which would import WASI's fd_write. A trap is enough here: the
// gateway logs it as a failed stage.
_LIBCPP_BEGIN_NAMESPACE_STD
[[noreturn]] void __libcpp_verbose_abort(char const*, ...) noexcept { __builtin_trap(); }
_LIBCPP_END_NAMESPACE_STD
#endif

namespace {

std::string_view view(const wit::vector<uint8_t>& bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::vector<cors::HeaderView> views(const WitHeaders& headers) {
    std::vector<cors::HeaderView> out;
    out.reserve(headers.size());
    for (size_t i = 0; i < headers.size(); ++i)
        out.push_back({std::get<0>(headers[i]).get_view(), view(std::get<1>(headers[i]))});
    return out;
}

wit::vector<uint8_t> bytes(std::string_view text) {
    auto out = wit::vector<uint8_t>::allocate(text.size());
    if (!text.empty()) memcpy(out.data(), text.data(), text.size());
    return out;
}

WitHeader to_wit(const cors::Header& header) {
    return WitHeader(wit::string::from_view(header.name), bytes(header.value));
}

wt::Response to_wit(const cors::Answer& answer) {
    // wit::vector is fixed-size: allocate, then construct every element in place.
    auto headers = WitHeaders::allocate(answer.headers.size());
    for (size_t i = 0; i < answer.headers.size(); ++i)
        headers.initialize(i, to_wit(answer.headers[i]));
    std::optional<wit::vector<uint8_t>> body;
    if (!answer.body.empty()) body.emplace(bytes(answer.body));
    return wt::Response{answer.status, std::move(headers), std::move(body)};
}

void log(cors::LogLevel level, std::string_view message) {
    switch (level) {
        case cors::LogLevel::None: return;
        case cors::LogLevel::Debug: host::Log(wt::Level::kDebug, message); return;
        case cors::LogLevel::Info: host::Log(wt::Level::kInfo, message); return;
        case cors::LogLevel::Warn: host::Log(wt::Level::kWarn, message); return;
        case cors::LogLevel::Error: host::Log(wt::Level::kError, message); return;
    }
}

// The stage config from the host. validate-config has accepted it at load, so failing
// here means the host and the plugin disagree: log it, and let the caller fail closed.
bool load_config(cors::Config& config) {
    wit::string text = host::Config();
    std::string error;
    if (cors::parse_config(text.get_view(), config, error)) return true;
    log(cors::LogLevel::Error, "invalid config at request time: " + error);
    return false;
}

}  // namespace

std::expected<wt::Request, wt::Response> exports::transform::OnRequest(wt::Request req,
                                                                        wt::Context ctx) {
    cors::Config config;
    if (!load_config(config))
        return std::unexpected(to_wit(cors::misconfigured(ctx.request_id.get_view())));

    cors::RequestDecision decision = cors::on_request(config, req.method.get_view(),
                                                      views(req.headers),
                                                      ctx.request_id.get_view());
    log(decision.log_level, decision.log);
    if (decision.answer) return std::unexpected(to_wit(decision.response));
    if (!decision.origin_var.empty()) host::SetVar(cors::kOriginVar, decision.origin_var);

    // Unchanged. The headers returned replace the request's, so hand back all of them;
    // body none = keep the body as it was (no copy back into the host).
    return wt::Request{std::move(req.method), std::move(req.uri), std::move(req.headers),
                       std::nullopt};
}

wt::Response exports::transform::OnResponse(wt::Response resp, wt::Context ctx) {
    cors::Config config;
    if (!load_config(config))  // no CORS headers: the browser blocks the response
        return wt::Response{resp.status, std::move(resp.headers), std::nullopt};

    std::optional<std::string_view> origin;
    for (size_t i = 0; i < ctx.vars.size(); ++i)
        if (std::get<0>(ctx.vars[i]).get_view() == cors::kOriginVar)
            origin = std::get<1>(ctx.vars[i]).get_view();

    cors::ResponseEdit edit =
        cors::on_response(config, views(resp.headers), origin ? &*origin : nullptr);

    size_t kept = 0;
    for (bool drop : edit.drop) kept += !drop;
    auto headers = WitHeaders::allocate(kept + edit.add.size());
    size_t next = 0;
    for (size_t i = 0; i < resp.headers.size(); ++i)
        if (!edit.drop[i]) headers.initialize(next++, std::move(resp.headers[i]));
    for (const cors::Header& header : edit.add) headers.initialize(next++, to_wit(header));
    // body none = keep the upstream's body as it is
    return wt::Response{resp.status, std::move(headers), std::nullopt};
}

std::expected<void, wit::string> exports::wasmgate::plugin::config_check::ValidateConfig(
    wit::string config) {
    cors::Config parsed;
    std::string error;
    if (cors::parse_config(config.get_view(), parsed, error)) return {};
    return std::unexpected(wit::string::from_view(error));
}
