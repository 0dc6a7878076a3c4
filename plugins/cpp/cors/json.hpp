// A small strict JSON (RFC 8259) reader and a string escaper, written for this plugin.
//
// Strict: one value with optional whitespace around it, no comments, no trailing commas,
// no duplicate object keys, no raw control characters in strings, no lone surrogates,
// numbers in JSON syntax only. Nesting is capped at `kMaxDepth`. It does not check that
// the input is UTF-8 (WIT strings always are). No exceptions: `parse` returns false and
// fills `error` with what went wrong and where.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace json {

enum class Kind { Null, Bool, Number, String, Array, Object };

struct Value {
    Kind kind = Kind::Null;
    bool boolean = false;
    // The decoded text of a string, or the literal text of a number (e.g. "600", "-1.5e3").
    std::string text;
    // Array elements, or object member values (in document order).
    std::vector<Value> items;
    // Object member names, parallel to `items`.
    std::vector<std::string> keys;

    // The member named `key` of an object, or nullptr.
    const Value* find(std::string_view key) const {
        for (size_t i = 0; i < keys.size(); ++i)
            if (keys[i] == key) return &items[i];
        return nullptr;
    }
};

// "a string", "a list", ... for messages about the wrong type.
inline const char* kind_name(Kind kind) {
    switch (kind) {
        case Kind::Null: return "null";
        case Kind::Bool: return "a boolean";
        case Kind::Number: return "a number";
        case Kind::String: return "a string";
        case Kind::Array: return "a list";
        case Kind::Object: return "a table";
    }
    return "?";
}

inline std::string uint_to_string(uint64_t n) {
    char buf[24];
    size_t i = sizeof buf;
    do {
        buf[--i] = char('0' + n % 10);
        n /= 10;
    } while (n);
    return std::string(buf + i, sizeof buf - i);
}

class Parser {
public:
    static constexpr int kMaxDepth = 32;

    explicit Parser(std::string_view input) : s_(input) {}

    bool parse(Value& out, std::string& error) {
        skip_ws();
        if (!value(out, 0)) {
            error = err_ + " at byte " + uint_to_string(pos_);
            return false;
        }
        skip_ws();
        if (pos_ != s_.size()) {
            error = "unexpected text after the JSON value at byte " + uint_to_string(pos_);
            return false;
        }
        return true;
    }

private:
    std::string_view s_;
    size_t pos_ = 0;
    std::string err_;

    bool fail(const char* message) {
        err_ = message;
        return false;
    }
    bool at_end() const { return pos_ >= s_.size(); }
    char peek() const { return at_end() ? '\0' : s_[pos_]; }
    void skip_ws() {
        while (!at_end() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }
    bool literal(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) return fail("invalid literal");
        pos_ += word.size();
        return true;
    }

    bool value(Value& out, int depth) {
        if (at_end()) return fail("unexpected end of input");
        switch (peek()) {
            case '{': return object(out, depth + 1);
            case '[': return array(out, depth + 1);
            case '"': out.kind = Kind::String; return string(out.text);
            case 't': out.kind = Kind::Bool; out.boolean = true; return literal("true");
            case 'f': out.kind = Kind::Bool; out.boolean = false; return literal("false");
            case 'n': out.kind = Kind::Null; return literal("null");
            default: out.kind = Kind::Number; return number(out.text);
        }
    }

    bool object(Value& out, int depth) {
        if (depth > kMaxDepth) return fail("nested too deeply");
        out.kind = Kind::Object;
        ++pos_;  // '{'
        skip_ws();
        if (peek() == '}') {
            ++pos_;
            return true;
        }
        for (;;) {
            if (peek() != '"') return fail("expected a string key");
            std::string key;
            if (!string(key)) return false;
            if (out.find(key)) return fail("duplicate key");
            skip_ws();
            if (peek() != ':') return fail("expected ':'");
            ++pos_;
            skip_ws();
            out.keys.push_back(std::move(key));
            out.items.emplace_back();
            if (!value(out.items.back(), depth)) return false;
            skip_ws();
            if (peek() == ',') {
                ++pos_;
                skip_ws();
                continue;
            }
            if (peek() == '}') {
                ++pos_;
                return true;
            }
            return fail("expected ',' or '}'");
        }
    }

    bool array(Value& out, int depth) {
        if (depth > kMaxDepth) return fail("nested too deeply");
        out.kind = Kind::Array;
        ++pos_;  // '['
        skip_ws();
        if (peek() == ']') {
            ++pos_;
            return true;
        }
        for (;;) {
            out.items.emplace_back();
            if (!value(out.items.back(), depth)) return false;
            skip_ws();
            if (peek() == ',') {
                ++pos_;
                skip_ws();
                continue;
            }
            if (peek() == ']') {
                ++pos_;
                return true;
            }
            return fail("expected ',' or ']'");
        }
    }

    static bool is_digit(char c) { return c >= '0' && c <= '9'; }

    bool number(std::string& out) {
        size_t start = pos_;
        if (peek() == '-') ++pos_;
        if (peek() == '0') {
            ++pos_;
        } else if (is_digit(peek())) {
            while (is_digit(peek())) ++pos_;
        } else {
            return fail("unexpected character");
        }
        if (peek() == '.') {
            ++pos_;
            if (!is_digit(peek())) return fail("expected a digit after '.'");
            while (is_digit(peek())) ++pos_;
        }
        if (peek() == 'e' || peek() == 'E') {
            ++pos_;
            if (peek() == '+' || peek() == '-') ++pos_;
            if (!is_digit(peek())) return fail("expected a digit in the exponent");
            while (is_digit(peek())) ++pos_;
        }
        out.assign(s_.substr(start, pos_ - start));
        return true;
    }

    bool hex4(uint32_t& out) {
        if (s_.size() - pos_ < 4) return fail("truncated \\u escape");
        out = 0;
        for (int i = 0; i < 4; ++i) {
            char c = s_[pos_++];
            out <<= 4;
            if (c >= '0' && c <= '9') out |= uint32_t(c - '0');
            else if (c >= 'a' && c <= 'f') out |= uint32_t(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') out |= uint32_t(c - 'A' + 10);
            else return fail("invalid \\u escape");
        }
        return true;
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xC0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        }
    }

    bool string(std::string& out) {
        ++pos_;  // opening quote
        for (;;) {
            if (at_end()) return fail("unterminated string");
            unsigned char c = (unsigned char)s_[pos_++];
            if (c == '"') return true;
            if (c < 0x20) return fail("control character in a string");
            if (c != '\\') {
                out += char(c);
                continue;
            }
            if (at_end()) return fail("unterminated string");
            switch (s_[pos_++]) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp;
                    if (!hex4(cp)) return false;
                    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail("lone low surrogate");
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        uint32_t low;
                        if (s_.substr(pos_, 2) != "\\u") return fail("lone high surrogate");
                        pos_ += 2;
                        if (!hex4(low)) return false;
                        if (low < 0xDC00 || low > 0xDFFF) return fail("lone high surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: return fail("invalid escape");
            }
        }
    }
};

inline bool parse(std::string_view input, Value& out, std::string& error) {
    return Parser(input).parse(out, error);
}

// Appends `text` as a JSON string literal (with quotes). Bytes >= 0x80 are copied as they
// are; control characters, quotes and backslashes are escaped.
inline void append_quoted(std::string& out, std::string_view text) {
    static const char hex[] = "0123456789abcdef";
    out += '"';
    for (char ch : text) {
        unsigned char c = (unsigned char)ch;
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    out += "\\u00";
                    out += hex[c >> 4];
                    out += hex[c & 15];
                } else {
                    out += char(c);
                }
        }
    }
    out += '"';
}

}  // namespace json
