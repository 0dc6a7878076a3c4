//! IP addresses and CIDR networks: strict parsing, canonical formatting and
//! matching, for IPv4 and IPv6. No allocation; pure functions, unit-tested
//! natively (`zig test src/ipnet.zig`).
//!
//! Rules of the road:
//! - IPv4 is dotted-quad only: four decimal octets, no leading zeros
//!   (`010.0.0.1` is refused: some parsers read it as octal).
//! - IPv6 follows RFC 4291 text forms: up to eight groups of 1-4 hex digits,
//!   one `::`, an optional dotted IPv4 tail. Zone ids (`%eth0`) are refused.
//! - An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address
//!   `a.b.c.d` ("unmapped"), for clients and for rules alike, so a dual-stack
//!   listener's `::ffff:10.1.2.3` matches `10.0.0.0/8`.
//! - A network only contains addresses of its own family: `::/0` does not
//!   contain `10.1.2.3`.

const std = @import("std");

pub const Family = enum { v4, v6 };

/// An IP address. IPv4 addresses live in the low 32 bits of `bits`.
pub const Addr = struct {
    family: Family,
    bits: u128,

    pub fn v4(bits: u32) Addr {
        return .{ .family = .v4, .bits = bits };
    }

    pub fn v6(bits: u128) Addr {
        return .{ .family = .v6, .bits = bits };
    }

    /// The number of bits in an address of this family: 32 or 128.
    pub fn width(self: Addr) u8 {
        return switch (self.family) {
            .v4 => 32,
            .v6 => 128,
        };
    }

    /// `::ffff:a.b.c.d` becomes `a.b.c.d`; anything else stays as it is.
    pub fn unmap(self: Addr) Addr {
        if (self.family == .v6 and self.bits >> 32 == 0xffff) {
            return v4(@truncate(self.bits));
        }
        return self;
    }

    pub fn eql(a: Addr, b: Addr) bool {
        return a.family == b.family and a.bits == b.bits;
    }

    /// Writes the canonical text form (dotted quad; RFC 5952 for IPv6:
    /// lower case, no leading zeros, the longest run of two or more zero
    /// groups, the first one on a tie, as `::`). Returns the used part of `buf`.
    pub fn format(self: Addr, buf: *[max_text_len]u8) []const u8 {
        var out = Out{ .buf = buf };
        switch (self.family) {
            .v4 => {
                const value: u32 = @truncate(self.bits);
                var shift: u6 = 24;
                while (true) : (shift -= 8) {
                    out.decimal(@as(u8, @truncate(value >> @as(u5, @intCast(shift)))));
                    if (shift == 0) break;
                    out.byte('.');
                }
            },
            .v6 => {
                var groups: [8]u16 = undefined;
                for (&groups, 0..) |*group, i| {
                    group.* = @truncate(self.bits >> @as(u7, @intCast(112 - 16 * i)));
                }
                // The longest run of at least two zero groups.
                var best_start: usize = 8;
                var best_len: usize = 1;
                var i: usize = 0;
                while (i < 8) {
                    if (groups[i] != 0) {
                        i += 1;
                        continue;
                    }
                    var j = i;
                    while (j < 8 and groups[j] == 0) j += 1;
                    if (j - i > best_len) {
                        best_start = i;
                        best_len = j - i;
                    }
                    i = j;
                }
                i = 0;
                while (i < 8) {
                    if (i == best_start) {
                        out.byte(':');
                        out.byte(':');
                        i += best_len;
                        continue;
                    }
                    if (i != 0 and i != best_start + best_len) out.byte(':');
                    out.hex(groups[i]);
                    i += 1;
                }
            },
        }
        return buf[0..out.len];
    }
};

/// Enough for any canonical form this module writes, plus a `/128` suffix.
pub const max_text_len = 48;

const Out = struct {
    buf: *[max_text_len]u8,
    len: usize = 0,

    fn byte(self: *Out, c: u8) void {
        self.buf[self.len] = c;
        self.len += 1;
    }

    fn decimal(self: *Out, value: u8) void {
        if (value >= 100) self.byte('0' + value / 100);
        if (value >= 10) self.byte('0' + value / 10 % 10);
        self.byte('0' + value % 10);
    }

    fn hex(self: *Out, value: u16) void {
        const digits = "0123456789abcdef";
        var shift: u5 = 12;
        var started = false;
        while (true) : (shift -= 4) {
            const nibble: u4 = @truncate(value >> @as(u4, @intCast(shift)));
            if (nibble != 0 or started or shift == 0) {
                self.byte(digits[nibble]);
                started = true;
            }
            if (shift == 0) break;
        }
    }
};

pub const ParseError = error{InvalidAddress};

/// Parses an address in strict text form (see the module comment). An
/// IPv4-mapped IPv6 address comes back as IPv4.
pub fn parseAddr(text: []const u8) ParseError!Addr {
    if (std.mem.indexOfScalar(u8, text, ':') != null) {
        return Addr.v6(try parseV6(text)).unmap();
    }
    return Addr.v4(try parseV4(text));
}

/// Like `parseAddr`, but also accepts the forms proxies write into
/// `X-Forwarded-For`: `a.b.c.d:port`, `[v6]` and `[v6]:port`. The port is
/// dropped.
pub fn parseHostPort(text: []const u8) ParseError!Addr {
    if (text.len > 0 and text[0] == '[') {
        const close = std.mem.indexOfScalar(u8, text, ']') orelse return error.InvalidAddress;
        const rest = text[close + 1 ..];
        if (rest.len > 0) {
            if (rest[0] != ':') return error.InvalidAddress;
            try checkPort(rest[1..]);
        }
        const inner = text[1..close];
        if (std.mem.indexOfScalar(u8, inner, ':') == null) return error.InvalidAddress;
        return parseAddr(inner);
    }
    const first_colon = std.mem.indexOfScalar(u8, text, ':') orelse return parseAddr(text);
    // One colon: IPv4 with a port. More: a bare IPv6 address.
    if (std.mem.indexOfScalarPos(u8, text, first_colon + 1, ':') == null) {
        try checkPort(text[first_colon + 1 ..]);
        return Addr.v4(try parseV4(text[0..first_colon]));
    }
    return parseAddr(text);
}

fn checkPort(text: []const u8) ParseError!void {
    if (text.len == 0 or text.len > 5) return error.InvalidAddress;
    var value: u32 = 0;
    for (text) |c| {
        if (c < '0' or c > '9') return error.InvalidAddress;
        value = value * 10 + (c - '0');
    }
    if (value > 65535) return error.InvalidAddress;
}

fn parseV4(text: []const u8) ParseError!u32 {
    var result: u32 = 0;
    var octets: usize = 0;
    var i: usize = 0;
    while (true) {
        const start = i;
        var value: u32 = 0;
        while (i < text.len and text[i] >= '0' and text[i] <= '9') : (i += 1) {
            value = value * 10 + (text[i] - '0');
            if (i - start >= 3) return error.InvalidAddress;
        }
        const digits = i - start;
        if (digits == 0 or value > 255) return error.InvalidAddress;
        if (digits > 1 and text[start] == '0') return error.InvalidAddress;
        result = result << 8 | value;
        octets += 1;
        if (octets == 4) break;
        if (i >= text.len or text[i] != '.') return error.InvalidAddress;
        i += 1;
    }
    if (i != text.len) return error.InvalidAddress;
    return result;
}

fn hexValue(c: u8) ?u16 {
    return switch (c) {
        '0'...'9' => c - '0',
        'a'...'f' => c - 'a' + 10,
        'A'...'F' => c - 'A' + 10,
        else => null,
    };
}

fn parseV6(text: []const u8) ParseError!u128 {
    var groups: [8]u16 = @splat(0);
    var count: usize = 0;
    var ellipsis: ?usize = null;
    var i: usize = 0;
    if (std.mem.startsWith(u8, text, "::")) {
        ellipsis = 0;
        i = 2;
    } else if (text.len > 0 and text[0] == ':') {
        return error.InvalidAddress;
    }
    while (i < text.len) {
        if (count == 8) return error.InvalidAddress;
        const start = i;
        var value: u16 = 0;
        while (i < text.len) : (i += 1) {
            const digit = hexValue(text[i]) orelse break;
            if (i - start == 4) return error.InvalidAddress;
            value = value << 4 | digit;
        }
        if (i < text.len and text[i] == '.') {
            // A dotted IPv4 tail: the last 32 bits.
            if (count > 6) return error.InvalidAddress;
            const tail = try parseV4(text[start..]);
            groups[count] = @truncate(tail >> 16);
            groups[count + 1] = @truncate(tail);
            count += 2;
            i = text.len;
            break;
        }
        if (i == start) return error.InvalidAddress;
        groups[count] = value;
        count += 1;
        if (i == text.len) break;
        if (text[i] != ':') return error.InvalidAddress;
        i += 1;
        if (i < text.len and text[i] == ':') {
            if (ellipsis != null) return error.InvalidAddress;
            ellipsis = count;
            i += 1;
        } else if (i == text.len) {
            return error.InvalidAddress; // a single trailing colon
        }
    }
    if (ellipsis) |at| {
        // `::` stands for at least one zero group.
        if (count == 8) return error.InvalidAddress;
        const moved = count - at;
        var k: usize = 0;
        while (k < moved) : (k += 1) {
            groups[7 - k] = groups[count - 1 - k];
        }
        k = at;
        while (k < 8 - moved) : (k += 1) groups[k] = 0;
    } else if (count != 8) {
        return error.InvalidAddress;
    }
    var bits: u128 = 0;
    for (groups) |group| bits = bits << 16 | group;
    return bits;
}

/// A network: an address with all bits past `prefix` zero.
pub const Cidr = struct {
    addr: Addr,
    prefix: u8,

    pub fn contains(self: Cidr, addr: Addr) bool {
        if (addr.family != self.addr.family) return false;
        return (addr.bits ^ self.addr.bits) & mask(self.addr.width(), self.prefix) == 0;
    }

    pub fn eql(a: Cidr, b: Cidr) bool {
        return a.prefix == b.prefix and a.addr.eql(b.addr);
    }

    /// `10.0.0.0/8`, `2001:db8::/32`.
    pub fn format(self: Cidr, buf: *[max_text_len]u8) []const u8 {
        var len = self.addr.format(buf).len;
        buf[len] = '/';
        len += 1;
        if (self.prefix >= 100) {
            buf[len] = '1';
            len += 1;
        }
        if (self.prefix >= 10) {
            buf[len] = '0' + self.prefix / 10 % 10;
            len += 1;
        }
        buf[len] = '0' + self.prefix % 10;
        return buf[0 .. len + 1];
    }
};

/// The bits of a `width`-bit address that a /`prefix` network fixes.
fn mask(width: u8, prefix: u8) u128 {
    if (prefix == 0) return 0;
    const all: u128 = if (width == 128) ~@as(u128, 0) else (@as(u128, 1) << @as(u7, @intCast(width))) - 1;
    return all & ~((@as(u128, 1) << @as(u7, @intCast(width - prefix))) -% 1) & all;
}

/// Why a CIDR did not parse, for a message that helps fix it.
pub const CidrIssue = union(enum) {
    /// The part before `/` is not an address.
    address,
    /// The part after `/` is not a decimal number.
    prefix_syntax,
    /// The prefix is longer than the family allows (32 or 128).
    prefix_range: u8,
    /// Bits past the prefix are set; the payload is the network meant.
    host_bits: Cidr,
};

pub const CidrError = error{InvalidCidr};

/// Parses `address/prefix`, or a bare address (a /32 or /128 network).
/// `::ffff:a.b.c.d/n` with n ≥ 96 becomes the IPv4 network `a.b.c.d/(n-96)`.
/// On error, `issue` says why.
pub fn parseCidr(text: []const u8, issue: *CidrIssue) CidrError!Cidr {
    const slash = std.mem.indexOfScalar(u8, text, '/');
    const addr_text = if (slash) |s| text[0..s] else text;
    const is_v6 = std.mem.indexOfScalar(u8, addr_text, ':') != null;
    const raw: Addr = if (is_v6)
        Addr.v6(parseV6(addr_text) catch return fail(issue, .address))
    else
        Addr.v4(parseV4(addr_text) catch return fail(issue, .address));
    var prefix: u8 = raw.width();
    if (slash) |s| {
        const digits = text[s + 1 ..];
        if (digits.len == 0 or digits.len > 3) return fail(issue, .prefix_syntax);
        if (digits.len > 1 and digits[0] == '0') return fail(issue, .prefix_syntax);
        var value: u16 = 0;
        for (digits) |c| {
            if (c < '0' or c > '9') return fail(issue, .prefix_syntax);
            value = value * 10 + (c - '0');
        }
        if (value > raw.width()) return fail(issue, .{ .prefix_range = raw.width() });
        prefix = @intCast(value);
    }
    var cidr = Cidr{ .addr = raw, .prefix = prefix };
    const network = raw.bits & mask(raw.width(), prefix);
    if (network != raw.bits) {
        cidr.addr.bits = network;
        return fail(issue, .{ .host_bits = cidr });
    }
    // Mapped IPv4 written as IPv6: the same network, as IPv4.
    if (raw.family == .v6 and prefix >= 96 and raw.bits >> 32 == 0xffff) {
        cidr = .{ .addr = Addr.v4(@truncate(raw.bits)), .prefix = prefix - 96 };
    }
    return cidr;
}

fn fail(issue: *CidrIssue, why: CidrIssue) CidrError {
    issue.* = why;
    return error.InvalidCidr;
}

// === tests ===

const testing = std.testing;

fn expectAddr(text: []const u8, canonical: []const u8) !void {
    var buf: [max_text_len]u8 = undefined;
    const addr = try parseAddr(text);
    try testing.expectEqualStrings(canonical, addr.format(&buf));
}

fn expectCidr(text: []const u8) !Cidr {
    var issue: CidrIssue = undefined;
    return parseCidr(text, &issue);
}

fn expectIssue(text: []const u8) !CidrIssue {
    var issue: CidrIssue = undefined;
    if (parseCidr(text, &issue)) |cidr| {
        var buf: [max_text_len]u8 = undefined;
        std.debug.print("{s} parsed as {s}\n", .{ text, cidr.format(&buf) });
        return error.TestUnexpectedResult;
    } else |_| return issue;
}

test "IPv4 addresses" {
    try expectAddr("0.0.0.0", "0.0.0.0");
    try expectAddr("127.0.0.1", "127.0.0.1");
    try expectAddr("255.255.255.255", "255.255.255.255");
    try expectAddr("10.0.100.7", "10.0.100.7");
    for ([_][]const u8{
        "",          "1",           "1.2.3",    "1.2.3.4.5", "256.1.1.1",
        "1.2.3.04",  "010.0.0.1",   "1..2.3",   "1.2.3.",    ".1.2.3",
        "1.2.3.4 ",  " 1.2.3.4",    "1.2.3.-4", "1.2.3.4/",  "1.2.3.1000",
        "0x1.2.3.4", "1.2.3.4\x00",
        "１.2.3.4",
    }) |bad| {
        try testing.expectError(error.InvalidAddress, parseAddr(bad));
    }
}

test "IPv6 addresses and RFC 5952 output" {
    try expectAddr("::", "::");
    try expectAddr("::1", "::1");
    try expectAddr("1::", "1::");
    try expectAddr("2001:DB8::1", "2001:db8::1");
    try expectAddr("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1");
    try expectAddr("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"); // first of two equal runs
    try expectAddr("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"); // a single zero group stays
    try expectAddr("1:0:0:2:0:0:0:3", "1:0:0:2::3"); // the longest run wins
    try expectAddr("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0");
    try expectAddr("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8");
    try expectAddr("fe80::1:2", "fe80::1:2");
    try expectAddr("64:ff9b::192.0.2.33", "64:ff9b::c000:221");
    try expectAddr("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304");
    for ([_][]const u8{
        ":",                 ":::",                   "1:2",              "1:2:3:4:5:6:7:8:9",
        "1::2::3",           ":1::",                  "1::2:",            "12345::",
        "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",     "g::1",             "fe80::1%eth0",
        "::1.2.3",           "1:2:3:4:5:6:7:1.2.3.4", "::ffff:1.2.3.4:5", "[::1]",
        "::1 ",              "1:2:3:4:5:6:7",
    }) |bad| {
        if (parseAddr(bad)) |addr| {
            var buf: [max_text_len]u8 = undefined;
            std.debug.print("{s} parsed as {s}\n", .{ bad, addr.format(&buf) });
            return error.TestUnexpectedResult;
        } else |_| {}
    }
}

test "IPv4-mapped IPv6 addresses are IPv4" {
    try expectAddr("::ffff:10.1.2.3", "10.1.2.3");
    try expectAddr("::FFFF:a01:203", "10.1.2.3");
    try expectAddr("0:0:0:0:0:ffff:10.1.2.3", "10.1.2.3");
    // IPv4-compatible (deprecated) and NAT64 addresses stay IPv6.
    try expectAddr("::10.1.2.3", "::a01:203");
    const mapped = try parseAddr("::ffff:10.1.2.3");
    try testing.expect((try expectCidr("10.0.0.0/8")).contains(mapped));
}

test "host:port forms from X-Forwarded-For" {
    var buf: [max_text_len]u8 = undefined;
    try testing.expectEqualStrings("1.2.3.4", (try parseHostPort("1.2.3.4:8080")).format(&buf));
    try testing.expectEqualStrings("1.2.3.4", (try parseHostPort("1.2.3.4")).format(&buf));
    try testing.expectEqualStrings("2001:db8::1", (try parseHostPort("[2001:db8::1]:443")).format(&buf));
    try testing.expectEqualStrings("2001:db8::1", (try parseHostPort("[2001:db8::1]")).format(&buf));
    try testing.expectEqualStrings("2001:db8::1", (try parseHostPort("2001:db8::1")).format(&buf));
    try testing.expectEqualStrings("10.0.0.9", (try parseHostPort("[::ffff:10.0.0.9]:1")).format(&buf));
    for ([_][]const u8{
        "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:x", "[1.2.3.4]", "[::1", "[::1]x", "[::1]:", "unknown", "",
    }) |bad| {
        try testing.expectError(error.InvalidAddress, parseHostPort(bad));
    }
}

test "CIDR parsing" {
    var buf: [max_text_len]u8 = undefined;
    for ([_][2][]const u8{
        .{ "10.0.0.0/8", "10.0.0.0/8" },
        .{ "0.0.0.0/0", "0.0.0.0/0" },
        .{ "127.0.0.1/32", "127.0.0.1/32" },
        .{ "127.0.0.1", "127.0.0.1/32" },
        .{ "192.168.1.128/25", "192.168.1.128/25" },
        .{ "::1/128", "::1/128" },
        .{ "::1", "::1/128" },
        .{ "::/0", "::/0" },
        .{ "2001:DB8::/32", "2001:db8::/32" },
        .{ "fe80::/10", "fe80::/10" },
        .{ "::ffff:10.0.0.0/104", "10.0.0.0/8" },
        .{ "::ffff:0:0/96", "0.0.0.0/0" },
        .{ "::ffff:1.2.3.4", "1.2.3.4/32" },
    }) |case| {
        const cidr = try expectCidr(case[0]);
        try testing.expectEqualStrings(case[1], cidr.format(&buf));
    }
}

test "CIDR errors say what is wrong" {
    try testing.expectEqual(CidrIssue.address, try expectIssue("10.0.0/8"));
    try testing.expectEqual(CidrIssue.address, try expectIssue("/8"));
    try testing.expectEqual(CidrIssue.address, try expectIssue("fe80::1%eth0/64"));
    try testing.expectEqual(CidrIssue.prefix_syntax, try expectIssue("10.0.0.0/"));
    try testing.expectEqual(CidrIssue.prefix_syntax, try expectIssue("10.0.0.0/08"));
    try testing.expectEqual(CidrIssue.prefix_syntax, try expectIssue("10.0.0.0/8/8"));
    try testing.expectEqual(CidrIssue.prefix_syntax, try expectIssue("10.0.0.0/-1"));
    try testing.expectEqual(CidrIssue.prefix_syntax, try expectIssue("10.0.0.0/1000"));
    try testing.expectEqual(CidrIssue{ .prefix_range = 32 }, try expectIssue("10.0.0.0/33"));
    try testing.expectEqual(CidrIssue{ .prefix_range = 128 }, try expectIssue("::/129"));

    var buf: [max_text_len]u8 = undefined;
    const issue = try expectIssue("10.0.0.1/8");
    try testing.expectEqualStrings("10.0.0.0/8", issue.host_bits.format(&buf));
    const issue6 = try expectIssue("2001:db8::1/32");
    try testing.expectEqualStrings("2001:db8::/32", issue6.host_bits.format(&buf));
    const issue0 = try expectIssue("1.2.3.4/0");
    try testing.expectEqualStrings("0.0.0.0/0", issue0.host_bits.format(&buf));
}

test "matching" {
    const net8 = try expectCidr("10.0.0.0/8");
    try testing.expect(net8.contains(try parseAddr("10.0.0.0")));
    try testing.expect(net8.contains(try parseAddr("10.255.255.255")));
    try testing.expect(!net8.contains(try parseAddr("11.0.0.0")));
    try testing.expect(!net8.contains(try parseAddr("9.255.255.255")));

    const net25 = try expectCidr("192.168.1.128/25");
    try testing.expect(net25.contains(try parseAddr("192.168.1.200")));
    try testing.expect(!net25.contains(try parseAddr("192.168.1.127")));

    const any4 = try expectCidr("0.0.0.0/0");
    const any6 = try expectCidr("::/0");
    try testing.expect(any4.contains(try parseAddr("1.2.3.4")));
    try testing.expect(any4.contains(try parseAddr("::ffff:1.2.3.4")));
    try testing.expect(!any4.contains(try parseAddr("::1")));
    try testing.expect(any6.contains(try parseAddr("::1")));
    try testing.expect(!any6.contains(try parseAddr("1.2.3.4")));
    try testing.expect(!any6.contains(try parseAddr("::ffff:1.2.3.4")));

    const host = try expectCidr("127.0.0.1/32");
    try testing.expect(host.contains(try parseAddr("127.0.0.1")));
    try testing.expect(!host.contains(try parseAddr("127.0.0.2")));

    const doc = try expectCidr("2001:db8::/32");
    try testing.expect(doc.contains(try parseAddr("2001:db8:ffff::1")));
    try testing.expect(!doc.contains(try parseAddr("2001:db9::1")));
    const loop6 = try expectCidr("::1/128");
    try testing.expect(loop6.contains(try parseAddr("0:0:0:0:0:0:0:1")));
    try testing.expect(!loop6.contains(try parseAddr("::2")));
    const odd = try expectCidr("2001:db8:8000::/33");
    try testing.expect(odd.contains(try parseAddr("2001:db8:8000::1")));
    try testing.expect(!odd.contains(try parseAddr("2001:db8:7fff::1")));

    // A rule written as mapped IPv6 matches plain IPv4 clients.
    const mapped_rule = try expectCidr("::ffff:192.0.2.0/120");
    try testing.expect(mapped_rule.contains(try parseAddr("192.0.2.77")));
}

test "every prefix length masks the right bits" {
    var prefix: u8 = 0;
    while (prefix <= 128) : (prefix += 1) {
        const m = mask(128, prefix);
        try testing.expectEqual(@as(u32, prefix), @popCount(m));
        if (prefix > 0) try testing.expect(m >> 127 == 1);
        if (prefix <= 32) try testing.expectEqual(@as(u32, prefix), @popCount(mask(32, prefix)));
    }
    try testing.expectEqual(@as(u128, 0xff000000), mask(32, 8));
}

test "random addresses survive format and parse" {
    var prng = std.Random.DefaultPrng.init(0x1f2e3d4c);
    const random = prng.random();
    var buf: [max_text_len]u8 = undefined;
    for (0..20_000) |_| {
        // Bias towards zero groups, so that `::` shows up in every position.
        var bits: u128 = 0;
        for (0..8) |_| {
            const group: u16 = if (random.boolean()) 0 else random.int(u16);
            bits = bits << 16 | group;
        }
        const addr = Addr.v6(bits).unmap();
        const parsed = try parseAddr(addr.format(&buf));
        try testing.expect(parsed.eql(addr));
        const v4 = Addr.v4(random.int(u32));
        try testing.expect((try parseAddr(v4.format(&buf))).eql(v4));
        const prefix = random.uintAtMost(u8, addr.width());
        const network = Cidr{ .addr = .{ .family = addr.family, .bits = addr.bits & mask(addr.width(), prefix) }, .prefix = prefix };
        try testing.expect((try expectCidr(network.format(&buf))).eql(network));
        try testing.expect(network.contains(addr));
    }
}

test "random text never crashes the parsers" {
    // Runs in Debug mode under `zig test`, so an out-of-bounds index or an
    // overflow would panic here.
    var prng = std.Random.DefaultPrng.init(0x5eed);
    const random = prng.random();
    const alphabet = "0123456789abcdefABCDEF:.:./[]%,x 0:";
    var text: [60]u8 = undefined;
    var accepted: usize = 0;
    for (0..200_000) |_| {
        const len = random.uintAtMost(usize, text.len);
        for (text[0..len]) |*c| c.* = alphabet[random.uintLessThan(usize, alphabet.len)];
        var issue: CidrIssue = undefined;
        if (parseAddr(text[0..len])) |addr| {
            accepted += 1;
            var buf: [max_text_len]u8 = undefined;
            try testing.expect((try parseAddr(addr.format(&buf))).eql(addr));
        } else |_| {}
        _ = parseHostPort(text[0..len]) catch {};
        _ = parseCidr(text[0..len], &issue) catch {};
    }
    try testing.expect(accepted > 0);
}
