//! ip-filter: an `auth` stage that lets clients through, or refuses them, by
//! their IP address. The binding glue: the WIT world `auth` through the C
//! bindings `wit-bindgen c` generates (translated to Zig by `zig translate-c`
//! as the module `auth_c`). The policy itself is in `filter.zig`.

const std = @import("std");
const c = @import("auth_c");
const filter = @import("filter.zig");
const ipnet = @import("ipnet.zig");

/// A panic traps. std's default handler prints to stderr, which imports WASI
/// (29 functions in a ReleaseSafe build); with this, only `host` is imported.
pub const panic = std.debug.no_panic;

const Allocator = std.mem.Allocator;
const Level = enum(u8) { trace, debug, info, warn, @"error" };

// === Exports ===

/// `config-check.validate-config`: runs once when the gateway loads the stage.
export fn exports_wasmgate_plugin_config_check_validate_config(config: *c.auth_string_t, err: *c.auth_string_t) bool {
    defer c.auth_string_free(config);
    var arena_state = std.heap.ArenaAllocator.init(std.heap.c_allocator);
    defer arena_state.deinit();
    var message: []const u8 = "";
    _ = filter.parseConfig(arena_state.allocator(), bytes(config.*), &message) catch |e| {
        err.* = hostString(switch (e) {
            error.InvalidConfig => message,
            error.OutOfMemory => "out of memory while reading the config",
        });
        return false;
    };
    return true;
}

/// `authenticate`: `true` with `ret` filled lets the request on; `false` with
/// `err` filled answers the client with that response.
export fn exports_auth_authenticate(
    req: *c.auth_request_t,
    ctx: *c.auth_context_t,
    ret: *c.auth_identity_t,
    err: *c.auth_response_t,
) bool {
    // Arguments belong to the callee; so does the memory returned, which the
    // generated post-return function frees with `free`.
    defer c.auth_request_free(req);
    defer c.auth_context_free(ctx);
    var arena_state = std.heap.ArenaAllocator.init(std.heap.c_allocator);
    defer arena_state.deinit();
    return authenticate(arena_state.allocator(), req, ctx, ret, err) catch @trap();
}

fn authenticate(
    arena: Allocator,
    req: *const c.auth_request_t,
    ctx: *const c.auth_context_t,
    ret: *c.auth_identity_t,
    err: *c.auth_response_t,
) Allocator.Error!bool {
    const request_id = bytes(ctx.request_id);

    var config = std.mem.zeroes(c.auth_string_t);
    c.wasmgate_plugin_host_config(&config);
    defer c.auth_string_free(&config);
    var message: []const u8 = "";
    const policy = filter.parseConfig(arena, bytes(config), &message) catch |e| switch (e) {
        // validate-config ran at load, so this is a host bug; refuse anyway.
        error.InvalidConfig => {
            log(.@"error", try std.fmt.allocPrint(arena, "invalid config: {s} (request {s})", .{ message, request_id }));
            err.* = refusal(500, "stage_misconfigured", "the ip-filter stage's config is invalid");
            return false;
        },
        error.OutOfMemory => return error.OutOfMemory,
    };

    // Every `x-forwarded-for` field line, in order (names are lower-case).
    var forwarded_for: std.ArrayList([]const u8) = .empty;
    for (list(req.headers)) |header| {
        if (std.mem.eql(u8, bytes(header.f0), "x-forwarded-for")) {
            try forwarded_for.append(arena, bytes(header.f1));
        }
    }

    const addr = switch (try filter.clientAddress(arena, policy, bytes(ctx.client_ip), forwarded_for.items)) {
        .addr => |addr| addr,
        .unknown => |why| {
            log(.warn, try std.fmt.allocPrint(arena, "refused: cannot tell the client address: {s} (request {s})", .{ why, request_id }));
            err.* = refusal(policy.status, "forbidden", "client address could not be determined");
            return false;
        },
    };
    var addr_buf: [ipnet.max_text_len]u8 = undefined;
    const addr_text = addr.format(&addr_buf);

    switch (filter.decide(policy, addr)) {
        .allowed => {
            ret.* = identity(ctx, addr_text);
            return true;
        },
        .denied => |rule| {
            var rule_buf: [ipnet.max_text_len]u8 = undefined;
            const rule_text = rule.format(&rule_buf);
            log(.info, try std.fmt.allocPrint(arena, "refused {s}: in deny {s} (request {s})", .{ addr_text, rule_text, request_id }));
        },
        .not_allowed => {
            log(.info, try std.fmt.allocPrint(arena, "refused {s}: not in allow (request {s})", .{ addr_text, request_id }));
        },
    }
    err.* = refusal(policy.status, "forbidden", "client address not allowed");
    return false;
}

/// The identity to pass on: subject = the address, claim `ip` = the address.
/// After an earlier auth stage (say jwt-auth), the identity it established is
/// kept, with the `ip` claim added (or replaced), since the gateway hands on
/// only the last auth stage's identity.
fn identity(ctx: *const c.auth_context_t, addr_text: []const u8) c.auth_identity_t {
    const earlier: []const c.auth_tuple2_string_string_t = if (ctx.identity.is_some) list(ctx.identity.val.claims) else &.{};
    const claims: [*]c.auth_tuple2_string_string_t = @ptrCast(@alignCast(malloc((earlier.len + 1) * @sizeOf(c.auth_tuple2_string_string_t))));
    var count: usize = 0;
    for (earlier) |claim| {
        if (std.mem.eql(u8, bytes(claim.f0), "ip")) continue;
        claims[count] = .{ .f0 = hostString(bytes(claim.f0)), .f1 = hostString(bytes(claim.f1)) };
        count += 1;
    }
    claims[count] = .{ .f0 = hostString("ip"), .f1 = hostString(addr_text) };
    count += 1;
    return .{
        .subject = hostString(if (ctx.identity.is_some) bytes(ctx.identity.val.subject) else addr_text),
        .claims = .{ .ptr = claims, .len = count },
    };
}

// === Helpers ===

/// A JSON answer: `{"error": code, "message": message}`. `code` and
/// `message` are constants here, so they need no escaping.
fn refusal(status: u16, comptime code: []const u8, comptime message: []const u8) c.auth_response_t {
    const body = "{\"error\":\"" ++ code ++ "\",\"message\":\"" ++ message ++ "\"}";
    const headers: [*]c.wasmgate_plugin_types_header_t = @ptrCast(@alignCast(malloc(@sizeOf(c.wasmgate_plugin_types_header_t))));
    const content_type = hostString("application/json");
    headers[0] = .{
        .f0 = hostString("content-type"),
        .f1 = .{ .ptr = content_type.ptr, .len = content_type.len },
    };
    const body_string = hostString(body);
    return .{
        .status = status,
        .headers = .{ .ptr = headers, .len = 1 },
        .body = .{ .is_some = true, .val = .{ .ptr = body_string.ptr, .len = body_string.len } },
    };
}

fn log(level: Level, message: []const u8) void {
    var text = c.auth_string_t{ .ptr = @constCast(message.ptr), .len = message.len };
    c.wasmgate_plugin_host_log(@backingInt(level), &text);
}

/// A copy in `malloc`ed memory, as the post-return function expects.
fn hostString(text: []const u8) c.auth_string_t {
    if (text.len == 0) return .{ .ptr = null, .len = 0 };
    const ptr: [*]u8 = @ptrCast(malloc(text.len));
    @memcpy(ptr[0..text.len], text);
    return .{ .ptr = ptr, .len = text.len };
}

fn malloc(size: usize) *anyopaque {
    return std.c.malloc(size) orelse @trap();
}

fn bytes(value: anytype) []const u8 {
    if (value.len == 0) return "";
    return value.ptr[0..value.len];
}

fn list(value: anytype) []const std.meta.Child(@TypeOf(value.ptr)) {
    if (value.len == 0) return &.{};
    return value.ptr[0..value.len];
}
