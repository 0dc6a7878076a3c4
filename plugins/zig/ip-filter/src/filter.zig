//! The ip-filter policy: reading the stage config, finding the client's
//! address, and deciding. No WebAssembly here, so `zig test src/filter.zig`
//! runs it natively (with the tests of `ipnet.zig`).

const std = @import("std");
const ipnet = @import("ipnet.zig");

const Allocator = std.mem.Allocator;
const Addr = ipnet.Addr;
const Cidr = ipnet.Cidr;

pub const default_status: u16 = 403;
/// The most proxy hops `trust-forwarded-for` may name.
pub const max_hops: u32 = 32;

/// The stage config, checked.
pub const Policy = struct {
    /// Networks let through. Empty: every address not denied.
    allow: []const Cidr = &.{},
    /// Networks refused; deny wins over allow.
    deny: []const Cidr = &.{},
    /// 0: the socket's address. N > 0: the Nth entry of `X-Forwarded-For`
    /// counted from the right.
    forwarded_hops: u32 = 0,
    /// The status of a refusal.
    status: u16 = default_status,
};

pub const ConfigError = error{ InvalidConfig, OutOfMemory };

const known_keys = "`allow`, `deny`, `trust-forwarded-for`, `status`";

/// Parses and checks the config JSON. On `error.InvalidConfig`, `message`
/// says what is wrong, naming the key or entry. Allocates from `arena` and
/// never frees.
pub fn parseConfig(arena: Allocator, text: []const u8, message: *[]const u8) ConfigError!Policy {
    const root = std.json.parseFromSliceLeaky(std.json.Value, arena, text, .{
        // Numbers stay text: they are checked here, and no float parser is linked in.
        .parse_numbers = false,
    }) catch |err| switch (err) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return invalid(arena, message, "config is not valid JSON ({s})", .{@errorName(err)}),
    };
    const object = switch (root) {
        .object => |object| object,
        else => return invalid(arena, message, "config must be a table, got {s}", .{kind(root)}),
    };

    var policy = Policy{};
    var iterator = object.iterator();
    while (iterator.next()) |entry| {
        const key = entry.key_ptr.*;
        const value = entry.value_ptr.*;
        if (std.mem.eql(u8, key, "allow")) {
            policy.allow = try parseList(arena, "allow", value, message);
        } else if (std.mem.eql(u8, key, "deny")) {
            policy.deny = try parseList(arena, "deny", value, message);
        } else if (std.mem.eql(u8, key, "trust-forwarded-for")) {
            policy.forwarded_hops = try parseInteger(arena, key, value, 0, max_hops, "a number of proxy hops", message);
        } else if (std.mem.eql(u8, key, "status")) {
            policy.status = @intCast(try parseInteger(arena, key, value, 400, 599, "an HTTP error status", message));
        } else {
            return invalid(arena, message, "unknown field `{s}`, expected one of " ++ known_keys, .{key});
        }
    }

    if (policy.allow.len == 0 and policy.deny.len == 0) {
        return invalid(arena, message, "give at least one network in `allow` or `deny` " ++
            "(with neither, the stage would let every client through)", .{});
    }
    // An allow entry inside a deny entry can never let anyone through:
    // almost certainly a mistake in the config.
    for (policy.allow, 0..) |allowed, i| {
        for (policy.deny, 0..) |denied, j| {
            if (denied.prefix <= allowed.prefix and denied.contains(allowed.addr)) {
                var a: [ipnet.max_text_len]u8 = undefined;
                var d: [ipnet.max_text_len]u8 = undefined;
                return invalid(arena, message, "allow[{d}]: \"{s}\" lies inside deny[{d}] \"{s}\"; " ++
                    "deny wins, so this entry would let no one through", .{ i, allowed.format(&a), j, denied.format(&d) });
            }
        }
    }
    return policy;
}

fn parseList(arena: Allocator, comptime name: []const u8, value: std.json.Value, message: *[]const u8) ConfigError![]const Cidr {
    const items = switch (value) {
        .array => |array| array.items,
        else => return invalid(arena, message, "`" ++ name ++ "` must be a list of networks " ++
            "(\"10.0.0.0/8\", \"2001:db8::/32\"), got {s}", .{kind(value)}),
    };
    const networks = try arena.alloc(Cidr, items.len);
    for (items, 0..) |item, i| {
        const text = switch (item) {
            .string => |text| text,
            else => return invalid(arena, message, name ++ "[{d}]: expected a network as a string, got {s}", .{ i, kind(item) }),
        };
        var issue: ipnet.CidrIssue = undefined;
        networks[i] = ipnet.parseCidr(text, &issue) catch {
            var buf: [ipnet.max_text_len]u8 = undefined;
            return switch (issue) {
                .address => invalid(arena, message, name ++ "[{d}]: \"{s}\" is not an IPv4 or IPv6 network " ++
                    "(expected an address with an optional /prefix, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")", .{ i, text }),
                .prefix_syntax => invalid(arena, message, name ++ "[{d}]: \"{s}\" has a malformed prefix length " ++
                    "(expected /0 to /32 for IPv4, /0 to /128 for IPv6)", .{ i, text }),
                .prefix_range => |max| invalid(arena, message, name ++ "[{d}]: \"{s}\": prefix length out of range " ++
                    "(at most /{d} for {s})", .{ i, text, max, if (max == 32) "IPv4" else "IPv6" }),
                .host_bits => |network| invalid(arena, message, name ++ "[{d}]: \"{s}\" has host bits set " ++
                    "(bits past the prefix length); did you mean \"{s}\"?", .{ i, text, network.format(&buf) }),
            };
        };
        for (networks[0..i], 0..) |earlier, j| {
            if (earlier.eql(networks[i])) {
                return invalid(arena, message, name ++ "[{d}]: \"{s}\" is the same network as " ++ name ++ "[{d}]", .{ i, text, j });
            }
        }
    }
    return networks;
}

fn parseInteger(
    arena: Allocator,
    key: []const u8,
    value: std.json.Value,
    min: u32,
    max: u32,
    comptime what: []const u8,
    message: *[]const u8,
) ConfigError!u32 {
    const digits = switch (value) {
        .number_string => |digits| digits,
        else => return invalid(arena, message, "`{s}` must be " ++ what ++ " ({d} to {d}), got {s}", .{ key, min, max, kind(value) }),
    };
    const number = std.fmt.parseInt(u32, digits, 10) catch
        return invalid(arena, message, "`{s}` must be " ++ what ++ " ({d} to {d}), got {s}", .{ key, min, max, digits });
    if (number < min or number > max) {
        return invalid(arena, message, "`{s}` must be " ++ what ++ " ({d} to {d}), got {d}", .{ key, min, max, number });
    }
    return number;
}

fn kind(value: std.json.Value) []const u8 {
    return switch (value) {
        .null => "null",
        .bool => "a boolean",
        .integer, .float, .number_string => "a number",
        .string => "a string",
        .array => "a list",
        .object => "a table",
    };
}

fn invalid(arena: Allocator, message: *[]const u8, comptime format: []const u8, args: anytype) ConfigError {
    message.* = try std.fmt.allocPrint(arena, format, args);
    return error.InvalidConfig;
}

// === The client's address ===

/// The client's address, or why there is none to trust.
pub const Client = union(enum) {
    addr: Addr,
    /// A sentence for the log.
    unknown: []const u8,
};

/// Finds the address to judge: `client_ip` (the socket's peer) when
/// `forwarded_hops` is 0; otherwise the `forwarded_hops`-th entry from the
/// right of `X-Forwarded-For`, whose field lines `forwarded_for` holds in
/// the order they arrived. Each trusted proxy appends the address it got the
/// request from, so with N proxies in front of the gateway, the Nth entry
/// from the right is the one the outermost proxy saw; everything to its left
/// is whatever the client chose to send.
pub fn clientAddress(arena: Allocator, policy: Policy, client_ip: []const u8, forwarded_for: []const []const u8) Allocator.Error!Client {
    if (policy.forwarded_hops == 0) {
        const addr = ipnet.parseAddr(client_ip) catch
            return .{ .unknown = try std.fmt.allocPrint(arena, "the socket address \"{f}\" is not an IP address", .{printable(client_ip)}) };
        return .{ .addr = addr };
    }
    if (forwarded_for.len == 0) {
        return .{ .unknown = try std.fmt.allocPrint(arena, "no X-Forwarded-For header, and trust-forwarded-for = {d} " ++
            "(came from {s}, not through the proxies?)", .{ policy.forwarded_hops, client_ip }) };
    }
    // Walk the entries from the right (the last field line's last entry).
    var seen: u32 = 0;
    var line = forwarded_for.len;
    while (line > 0) {
        line -= 1;
        var entries = std.mem.splitBackwardsScalar(u8, forwarded_for[line], ',');
        while (entries.next()) |raw| {
            const entry = std.mem.trim(u8, raw, " \t");
            if (entry.len == 0) continue; // empty list elements are ignored (RFC 9110, 5.6.1)
            seen += 1;
            if (seen < policy.forwarded_hops) continue;
            const addr = ipnet.parseHostPort(entry) catch
                return .{ .unknown = try std.fmt.allocPrint(arena, "X-Forwarded-For entry {d} from the right, \"{f}\", " ++
                    "is not an IP address", .{ seen, printable(entry) }) };
            return .{ .addr = addr };
        }
    }
    return .{ .unknown = try std.fmt.allocPrint(arena, "X-Forwarded-For has {d} address(es), fewer than " ++
        "trust-forwarded-for = {d} (came from {s})", .{ seen, policy.forwarded_hops, client_ip }) };
}

/// Client-controlled text for a log line: at most 64 bytes, with anything but
/// printable ASCII as `\xNN`.
fn printable(text: []const u8) Printable {
    return .{ .text = text };
}

const Printable = struct {
    text: []const u8,

    pub fn format(self: Printable, writer: *std.Io.Writer) std.Io.Writer.Error!void {
        const limit = 64;
        for (self.text[0..@min(self.text.len, limit)]) |c| {
            if (c >= 0x20 and c < 0x7f and c != '"' and c != '\\') {
                try writer.writeByte(c);
            } else {
                try writer.print("\\x{x:0>2}", .{c});
            }
        }
        if (self.text.len > limit) try writer.writeAll("...");
    }
};

// === The decision ===

pub const Verdict = union(enum) {
    allowed,
    /// Matched this deny rule.
    denied: Cidr,
    /// The allow list is not empty and nothing in it matched.
    not_allowed,
};

/// Deny wins over allow; an empty allow list allows everything not denied.
pub fn decide(policy: Policy, addr: Addr) Verdict {
    for (policy.deny) |rule| {
        if (rule.contains(addr)) return .{ .denied = rule };
    }
    if (policy.allow.len == 0) return .allowed;
    for (policy.allow) |rule| {
        if (rule.contains(addr)) return .allowed;
    }
    return .not_allowed;
}

// === tests ===

const testing = std.testing;

test {
    _ = ipnet;
}

fn expectConfigError(text: []const u8, expected: []const u8) !void {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    var message: []const u8 = "";
    if (parseConfig(arena_state.allocator(), text, &message)) |_| {
        std.debug.print("accepted: {s}\n", .{text});
        return error.TestUnexpectedResult;
    } else |err| {
        try testing.expectEqual(error.InvalidConfig, err);
        try testing.expectEqualStrings(expected, message);
    }
}

fn parsePolicy(arena: Allocator, text: []const u8) !Policy {
    var message: []const u8 = "";
    return parseConfig(arena, text, &message) catch |err| {
        std.debug.print("refused: {s}: {s}\n", .{ text, message });
        return err;
    };
}

test "config: a full config" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const policy = try parsePolicy(arena_state.allocator(),
        \\{"allow": ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"],
        \\ "deny": ["10.66.0.0/16"], "trust-forwarded-for": 2, "status": 404}
    );
    try testing.expectEqual(@as(usize, 4), policy.allow.len);
    try testing.expectEqual(@as(usize, 1), policy.deny.len);
    try testing.expectEqual(@as(u32, 2), policy.forwarded_hops);
    try testing.expectEqual(@as(u16, 404), policy.status);
}

test "config: defaults" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const policy = try parsePolicy(arena_state.allocator(), "{\"deny\": [\"203.0.113.0/24\"]}");
    try testing.expectEqual(@as(usize, 0), policy.allow.len);
    try testing.expectEqual(@as(u32, 0), policy.forwarded_hops);
    try testing.expectEqual(default_status, policy.status);
}

test "config: errors name the problem" {
    try expectConfigError("{}", "give at least one network in `allow` or `deny` " ++
        "(with neither, the stage would let every client through)");
    try expectConfigError("{\"allow\": [], \"deny\": []}", "give at least one network in `allow` or `deny` " ++
        "(with neither, the stage would let every client through)");
    try expectConfigError("[]", "config must be a table, got a list");
    try expectConfigError("{\"allow\": [\"10.0.0.0/8\"], \"alow\": []}", "unknown field `alow`, expected one of " ++ known_keys);
    try expectConfigError("{\"allow\": \"10.0.0.0/8\"}", "`allow` must be a list of networks " ++
        "(\"10.0.0.0/8\", \"2001:db8::/32\"), got a string");
    try expectConfigError("{\"deny\": [\"10.0.0.0/8\", 7]}", "deny[1]: expected a network as a string, got a number");
    try expectConfigError("{\"allow\": [\"10.0.0.1/8\"]}", "allow[0]: \"10.0.0.1/8\" has host bits set " ++
        "(bits past the prefix length); did you mean \"10.0.0.0/8\"?");
    try expectConfigError("{\"allow\": [\"::1/128\", \"2001:db8::1/32\"]}", "allow[1]: \"2001:db8::1/32\" has host bits set " ++
        "(bits past the prefix length); did you mean \"2001:db8::/32\"?");
    try expectConfigError("{\"allow\": [\"10.0.0.0/33\"]}", "allow[0]: \"10.0.0.0/33\": prefix length out of range (at most /32 for IPv4)");
    try expectConfigError("{\"deny\": [\"::/129\"]}", "deny[0]: \"::/129\": prefix length out of range (at most /128 for IPv6)");
    try expectConfigError("{\"deny\": [\"10.0.0.0/x\"]}", "deny[0]: \"10.0.0.0/x\" has a malformed prefix length " ++
        "(expected /0 to /32 for IPv4, /0 to /128 for IPv6)");
    try expectConfigError("{\"allow\": [\"localhost\"]}", "allow[0]: \"localhost\" is not an IPv4 or IPv6 network " ++
        "(expected an address with an optional /prefix, e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")");
    try expectConfigError("{\"allow\": [\"10.0.0.0/8\", \"10.0.0.0/8\"]}", "allow[1]: \"10.0.0.0/8\" is the same network as allow[0]");
    try expectConfigError("{\"allow\": [\"127.0.0.1\", \"::ffff:127.0.0.1\"]}", "allow[1]: \"::ffff:127.0.0.1\" is the same network as allow[0]");
    try expectConfigError("{\"allow\": [\"10.1.0.0/16\"], \"deny\": [\"10.0.0.0/8\"]}", "allow[0]: \"10.1.0.0/16\" lies inside deny[0] " ++
        "\"10.0.0.0/8\"; deny wins, so this entry would let no one through");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"status\": 200}", "`status` must be an HTTP error status (400 to 599), got 200");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"status\": \"403\"}", "`status` must be an HTTP error status (400 to 599), got a string");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"status\": 403.5}", "`status` must be an HTTP error status (400 to 599), got 403.5");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"trust-forwarded-for\": -1}", "`trust-forwarded-for` must be a number of proxy hops (0 to 32), got -1");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"trust-forwarded-for\": 33}", "`trust-forwarded-for` must be a number of proxy hops (0 to 32), got 33");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"trust-forwarded-for\": true}", "`trust-forwarded-for` must be a number of proxy hops (0 to 32), got a boolean");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"trust-forwarded-for\": 99999999999999999999}", "`trust-forwarded-for` must be a number of proxy hops (0 to 32), got 99999999999999999999");
    try expectConfigError("{\"deny\": [", "config is not valid JSON (UnexpectedEndOfInput)");
    try expectConfigError("{\"deny\": [\"1.2.3.4\"], \"deny\": []}", "config is not valid JSON (DuplicateField)");
}

test "decide: deny wins, empty allow allows the rest" {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const policy = try parsePolicy(arena,
        \\{"allow": ["10.0.0.0/8", "::1/128", "2001:db8::/32"], "deny": ["10.66.0.0/16", "2001:db8:bad::/48"]}
    );
    try testing.expectEqual(Verdict.allowed, decide(policy, try ipnet.parseAddr("10.1.2.3")));
    try testing.expectEqual(Verdict.allowed, decide(policy, try ipnet.parseAddr("::ffff:10.1.2.3")));
    try testing.expectEqual(Verdict.allowed, decide(policy, try ipnet.parseAddr("::1")));
    try testing.expectEqual(Verdict.allowed, decide(policy, try ipnet.parseAddr("2001:db8:1::9")));
    try testing.expectEqual(Verdict.not_allowed, decide(policy, try ipnet.parseAddr("127.0.0.1")));
    try testing.expectEqual(Verdict.not_allowed, decide(policy, try ipnet.parseAddr("::2")));
    try testing.expect(decide(policy, try ipnet.parseAddr("10.66.1.1")) == .denied);
    try testing.expect(decide(policy, try ipnet.parseAddr("2001:db8:bad::1")) == .denied);

    const deny_only = try parsePolicy(arena, "{\"deny\": [\"203.0.113.0/24\"]}");
    try testing.expectEqual(Verdict.allowed, decide(deny_only, try ipnet.parseAddr("198.51.100.1")));
    try testing.expectEqual(Verdict.allowed, decide(deny_only, try ipnet.parseAddr("::1")));
    try testing.expect(decide(deny_only, try ipnet.parseAddr("203.0.113.9")) == .denied);
    try testing.expect(decide(deny_only, try ipnet.parseAddr("::ffff:203.0.113.9")) == .denied);
}

fn expectClient(policy: Policy, client_ip: []const u8, xff: []const []const u8, expected: []const u8) !void {
    var arena_state = std.heap.ArenaAllocator.init(testing.allocator);
    defer arena_state.deinit();
    switch (try clientAddress(arena_state.allocator(), policy, client_ip, xff)) {
        .addr => |addr| {
            var buf: [ipnet.max_text_len]u8 = undefined;
            try testing.expectEqualStrings(expected, addr.format(&buf));
        },
        .unknown => |why| try testing.expectEqualStrings(expected, why),
    }
}

const x100: [100]u8 = @splat('x');

test "client address: socket or X-Forwarded-For" {
    const direct = Policy{};
    try expectClient(direct, "192.0.2.1", &.{"10.0.0.1"}, "192.0.2.1");
    try expectClient(direct, "::ffff:192.0.2.1", &.{}, "192.0.2.1");
    try expectClient(direct, "2001:DB8::1", &.{}, "2001:db8::1");
    try expectClient(direct, "bogus\n", &.{}, "the socket address \"bogus\\x0a\" is not an IP address");

    const one = Policy{ .forwarded_hops = 1 };
    try expectClient(one, "10.0.0.2", &.{"203.0.113.7"}, "203.0.113.7");
    try expectClient(one, "10.0.0.2", &.{"6.6.6.6, 203.0.113.7"}, "203.0.113.7");
    try expectClient(one, "10.0.0.2", &.{ "6.6.6.6", "203.0.113.7:5123" }, "203.0.113.7");
    try expectClient(one, "10.0.0.2", &.{"1.1.1.1,[2001:db8::7]:443 , "}, "2001:db8::7");
    try expectClient(one, "10.0.0.2", &.{}, "no X-Forwarded-For header, and trust-forwarded-for = 1 " ++
        "(came from 10.0.0.2, not through the proxies?)");
    try expectClient(one, "10.0.0.2", &.{" , "}, "X-Forwarded-For has 0 address(es), fewer than " ++
        "trust-forwarded-for = 1 (came from 10.0.0.2)");
    try expectClient(one, "10.0.0.2", &.{"1.1.1.1, unknown"}, "X-Forwarded-For entry 1 from the right, \"unknown\", " ++
        "is not an IP address");

    const two = Policy{ .forwarded_hops = 2 };
    try expectClient(two, "10.0.0.2", &.{"6.6.6.6, 203.0.113.7, 10.0.0.3"}, "203.0.113.7");
    try expectClient(two, "10.0.0.2", &.{ "6.6.6.6, 203.0.113.7", "10.0.0.3" }, "203.0.113.7");
    try expectClient(two, "10.0.0.2", &.{ "203.0.113.7", "10.0.0.3" }, "203.0.113.7");
    try expectClient(two, "10.0.0.2", &.{"10.0.0.3"}, "X-Forwarded-For has 1 address(es), fewer than " ++
        "trust-forwarded-for = 2 (came from 10.0.0.2)");
    // Garbage left of the trusted entry does not matter.
    try expectClient(two, "10.0.0.2", &.{"<script>, 203.0.113.7, 10.0.0.3"}, "203.0.113.7");
    try expectClient(two, "10.0.0.2", &.{x100 ++ ", 10.0.0.3"}, "X-Forwarded-For entry 2 from the right, \"" ++
        x100[0..64] ++ "...\", is not an IP address");
}
