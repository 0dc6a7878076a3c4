package rewrite

import (
	"errors"
	"fmt"
	"strings"
)

// A Template is a configured value with placeholders: `"tenant-{param.id}"`.
// `{{` and `}}` are literal braces. It is parsed from the config once, so a
// misspelt placeholder is a config error, not an empty header at request time.
type Template struct {
	parts        []part
	placeholders int
}

type source uint8

const (
	literal source = iota
	fromRoute
	fromRequestID
	fromClientIP
	fromSubject
	fromClaim
	fromParam
	fromVar
)

type part struct {
	from source
	text string // the literal text, or the NAME of a param, var or claim
}

const placeholderHelp = "use {route}, {request_id}, {client_ip}, {param.NAME}, {var.NAME}, {identity.subject} or {identity.claim.NAME}"

// ParseTemplate parses a value with placeholders.
func ParseTemplate(text string) (Template, error) {
	var t Template
	var buf strings.Builder
	flush := func() {
		if buf.Len() > 0 {
			t.parts = append(t.parts, part{from: literal, text: buf.String()})
			buf.Reset()
		}
	}
	for i := 0; i < len(text); {
		switch c := text[i]; {
		case c == '{' && strings.HasPrefix(text[i:], "{{"), c == '}' && strings.HasPrefix(text[i:], "}}"):
			buf.WriteByte(c)
			i += 2
		case c == '{':
			end := strings.IndexByte(text[i:], '}')
			if end < 0 {
				return t, fmt.Errorf("in %q: a `{` without its `}` (write `{{` for a literal brace)", text)
			}
			from, name, err := placeholder(text[i+1 : i+end])
			if err != nil {
				return t, fmt.Errorf("in %q: %v", text, err)
			}
			flush()
			t.parts = append(t.parts, part{from: from, text: name})
			t.placeholders++
			i += end + 1
		case c == '}':
			return t, fmt.Errorf("in %q: a `}` without its `{` (write `}}` for a literal brace)", text)
		default:
			buf.WriteByte(c)
			i++
		}
	}
	flush()
	return t, nil
}

// placeholder reads what is between the braces. The spellings of the Rust
// `transform` plugin (`request-id`, `params.NAME`, ...) are accepted too.
func placeholder(inner string) (source, string, error) {
	switch inner {
	case "route":
		return fromRoute, "", nil
	case "request_id", "request-id":
		return fromRequestID, "", nil
	case "client_ip", "client-ip":
		return fromClientIP, "", nil
	case "identity.subject":
		return fromSubject, "", nil
	}
	for _, prefix := range []struct {
		text string
		from source
	}{
		{"param.", fromParam}, {"params.", fromParam},
		{"var.", fromVar}, {"vars.", fromVar},
		{"identity.claim.", fromClaim}, {"identity.claims.", fromClaim},
	} {
		if name, ok := strings.CutPrefix(inner, prefix.text); ok {
			if name == "" {
				return 0, "", fmt.Errorf("`{%s}` needs a name after the dot", inner)
			}
			return prefix.from, name, nil
		}
	}
	if inner == "" {
		return 0, "", errors.New("an empty placeholder `{}` (" + placeholderHelp + "; `{{` for a literal brace)")
	}
	return 0, "", fmt.Errorf("unknown placeholder `{%s}` (%s)", inner, placeholderHelp)
}

// Render fills the placeholders from ctx. ok is false when the template has
// placeholders and every one of them is empty or missing: a header set from
// `{identity.subject}` is then left out instead of sent empty.
func (t Template) Render(ctx *Context) (value string, ok bool) {
	if t.placeholders == 0 && len(t.parts) == 1 {
		return t.parts[0].text, true
	}
	var out strings.Builder
	filled := 0
	for _, p := range t.parts {
		if p.from == literal {
			out.WriteString(p.text)
			continue
		}
		if v := lookup(p, ctx); v != "" {
			out.WriteString(v)
			filled++
		}
	}
	return out.String(), t.placeholders == 0 || filled > 0
}

func lookup(p part, ctx *Context) string {
	switch p.from {
	case fromRoute:
		return ctx.Route
	case fromRequestID:
		return ctx.RequestID
	case fromClientIP:
		return ctx.ClientIP
	case fromSubject:
		if ctx.Identity != nil {
			return ctx.Identity.Subject
		}
	case fromClaim:
		if ctx.Identity != nil {
			return first(ctx.Identity.Claims, p.text)
		}
	case fromParam:
		return first(ctx.Params, p.text)
	case fromVar:
		return last(ctx.Vars, p.text)
	}
	return ""
}

// literalControl returns the first control character in the template's
// literal text (a header value may hold none but HTAB).
func (t Template) literalControl() (byte, bool) {
	for _, p := range t.parts {
		if p.from != literal {
			continue
		}
		if i := indexControl(p.text); i >= 0 {
			return p.text[i], true
		}
	}
	return 0, false
}

// indexControl returns the index of the first byte a header value may not hold
// (controls other than HTAB, and DEL), or -1.
func indexControl(value string) int {
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return i
		}
	}
	return -1
}

func first(pairs []Pair, name string) string {
	for _, p := range pairs {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

func last(pairs []Pair, name string) string {
	for i := len(pairs) - 1; i >= 0; i-- {
		if pairs[i].Name == name {
			return pairs[i].Value
		}
	}
	return ""
}
