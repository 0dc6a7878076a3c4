// Package rewrite is request-rewrite's logic: it rewrites a request's path,
// query and headers, and a response's headers, as a stage config says. It knows
// nothing of WebAssembly or the generated bindings, so `go test` runs it
// natively; the glue in export_wit_world converts the WIT records to and from
// these types.
package rewrite

import (
	"fmt"
	"strings"
)

// OriginalURIVar is the request variable that holds the URI as the client sent
// it, for later stages and for the response phase (`{var.rewrite.original-uri}`).
const OriginalURIVar = "rewrite.original-uri"

// The host's limits on request variables (see host.set-var in plugin.wit):
// going past one traps the call, so the rewrite checks them first.
const (
	maxVarValue = 4096
	maxVars     = 64
)

// Header is one header field; names are lower-case.
type Header struct {
	Name  string
	Value []byte
}

// Pair is a path parameter, request variable or claim.
type Pair struct {
	Name, Value string
}

// Identity is who an earlier auth stage found the caller to be.
type Identity struct {
	Subject string
	Claims  []Pair
}

// Context is what placeholders are filled from.
type Context struct {
	Route     string
	ClientIP  string
	RequestID string
	Identity  *Identity // nil when no auth stage ran or it found nobody
	Params    []Pair
	Vars      []Pair
}

// RequestResult is a rewritten request.
type RequestResult struct {
	URI     string
	Headers []Header
	// Vars are the request variables to set (host.set-var), in order.
	Vars []Pair
	// Changes says what was rewritten, for the log: "strip-prefix /v1", "set x-a".
	Changes []string
	// Warnings says what was not done and why, for the log.
	Warnings []string
}

// ResponseResult is a rewritten response's header list.
type ResponseResult struct {
	Headers  []Header
	Changes  []string
	Warnings []string
}

// Request rewrites a request: its URI (path, then query), then its headers.
// Header templates see the original URI as {var.rewrite.original-uri}.
func (c *Config) Request(uri string, headers []Header, ctx Context) (RequestResult, error) {
	var result RequestResult

	// Keep the URI as the client sent it: an earlier rewrite stage may have set
	// the variable already.
	if last(ctx.Vars, OriginalURIVar) == "" {
		switch {
		case len(uri) > maxVarValue:
			result.Warnings = append(result.Warnings, fmt.Sprintf(
				"the original URI is %d bytes, more than a request variable holds (%d): %s not set",
				len(uri), maxVarValue, OriginalURIVar))
		case distinctNames(ctx.Vars) >= maxVars:
			result.Warnings = append(result.Warnings, fmt.Sprintf(
				"the request already has %d variables: %s not set", maxVars, OriginalURIVar))
		default:
			result.Vars = append(result.Vars, Pair{OriginalURIVar, uri})
			ctx.Vars = append(ctx.Vars[:len(ctx.Vars):len(ctx.Vars)], Pair{OriginalURIVar, uri})
		}
	}

	result.URI = uri
	if (c.rewritesPath() || c.rewritesQuery()) && strings.HasPrefix(uri, "/") {
		path, query, hasQuery := strings.Cut(uri, "?")
		if c.rewritesPath() {
			var err error
			if path, err = c.rewritePath(path, &result.Changes); err != nil {
				return result, err
			}
		}
		if c.rewritesQuery() {
			query, hasQuery = c.rewriteQuery(query, hasQuery, &ctx, &result.Changes)
		}
		result.URI = path
		if hasQuery {
			result.URI += "?" + query
		}
		if err := checkURI(result.URI); err != nil {
			return result, err
		}
	} else if c.rewritesPath() || c.rewritesQuery() {
		result.Warnings = append(result.Warnings, fmt.Sprintf("URI %q is not a path: left as it is", uri))
	}

	result.Headers = c.request.apply(headers, &ctx, "request", &result.Changes, &result.Warnings)
	return result, nil
}

// Response rewrites a response's headers.
func (c *Config) Response(headers []Header, ctx Context) ResponseResult {
	var result ResponseResult
	result.Headers = c.response.apply(headers, &ctx, "response", &result.Changes, &result.Warnings)
	return result
}

// RewritesResponse reports whether the config has anything to do in the
// response phase.
func (c *Config) RewritesResponse() bool {
	return !c.response.empty()
}

// === path ===

// rewritePath applies strip-prefix, then the first replace rule whose regex
// matches, then add-prefix. It works on the raw (percent-encoded) path.
func (c *Config) rewritePath(path string, changes *[]string) (string, error) {
	if c.stripPrefix != "" {
		if rest, ok := strings.CutPrefix(path, c.stripPrefix); ok && (rest == "" || rest[0] == '/') {
			path = rest
			if path == "" {
				path = "/"
			}
			*changes = append(*changes, "strip-prefix "+c.stripPrefix)
		}
	}
	for i := range c.replace {
		rule := &c.replace[i]
		if err := rule.compile(); err != nil {
			return "", err
		}
		if rule.re.MatchString(path) {
			path = rule.re.ReplaceAllString(path, rule.with)
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			*changes = append(*changes, fmt.Sprintf("replace[%d]", i))
			break
		}
	}
	if c.addPrefix != "" {
		path = c.addPrefix + path
		*changes = append(*changes, "add-prefix "+c.addPrefix)
	}
	return path, nil
}

// checkURI is the last check before the URI goes back to the host: the config
// checks make a bad URI impossible, this makes sure.
func checkURI(uri string) error {
	if !strings.HasPrefix(uri, "/") {
		return fmt.Errorf("rewritten URI %q does not start with `/`", uri)
	}
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c == 0x7f || c == '#' || c > 0x7e {
			return fmt.Errorf("rewritten URI %q holds %q", uri, uri[i:i+1])
		}
	}
	return nil
}

// === query ===

// rewriteQuery removes the `remove` names and the `set` names, then appends the
// `set` parameters (URL-encoded) in name order. Parameters it does not touch
// keep their bytes and their order.
func (c *Config) rewriteQuery(query string, hasQuery bool, ctx *Context, changes *[]string) (string, bool) {
	drop := make(map[string]bool, len(c.queryRemove)+len(c.querySet))
	for _, name := range c.queryRemove {
		drop[name] = true
	}
	for _, param := range c.querySet {
		drop[param.name] = true
	}
	var kept []string
	removed := map[string]bool{}
	if query != "" {
		for _, piece := range strings.Split(query, "&") {
			rawName, _, _ := strings.Cut(piece, "=")
			name, err := queryUnescape(rawName)
			if err != nil {
				name = rawName
			}
			if drop[name] {
				removed[name] = true
				continue
			}
			kept = append(kept, piece)
		}
	}
	for _, name := range c.queryRemove {
		if removed[name] {
			*changes = append(*changes, "query remove "+name)
		}
	}
	for _, param := range c.querySet {
		value, ok := param.value.Render(ctx)
		if !ok {
			if removed[param.name] {
				*changes = append(*changes, "query remove "+param.name+" (empty value)")
			}
			continue
		}
		kept = append(kept, queryEscape(param.name)+"="+queryEscape(value))
		*changes = append(*changes, "query set "+param.name)
	}
	if len(kept) == 0 {
		return "", false
	}
	return strings.Join(kept, "&"), hasQuery || len(kept) > 0
}

// === headers ===

// apply runs remove, rename, set and append, in that order. A set whose value
// renders empty removes the header instead (so a client cannot supply what the
// stage would have set); a rendered value that is not a valid header value
// (CR, LF, ...) is dropped, with a warning, and never sent.
func (ops *headerOps) apply(headers []Header, ctx *Context, phase string, changes, warnings *[]string) []Header {
	if ops.empty() {
		return headers
	}
	out := make([]Header, 0, len(headers)+len(ops.set)+len(ops.append))
	out = append(out, headers...)

	for _, name := range ops.remove {
		var n int
		if out, n = without(out, name); n > 0 {
			*changes = append(*changes, fmt.Sprintf("%s remove %s", phase, name))
		}
	}
	for _, op := range ops.rename {
		if !has(out, op.from) {
			continue
		}
		out, _ = without(out, op.to)
		for i := range out {
			if strings.EqualFold(out[i].Name, op.from) {
				out[i].Name = op.to
			}
		}
		*changes = append(*changes, fmt.Sprintf("%s rename %s → %s", phase, op.from, op.to))
	}
	for _, set := range ops.set {
		var n int
		out, n = without(out, set.name)
		value, ok := set.value.Render(ctx)
		if !ok {
			if n > 0 {
				*changes = append(*changes, fmt.Sprintf("%s remove %s (empty value)", phase, set.name))
			}
			continue
		}
		if i := indexControl(value); i >= 0 {
			*warnings = append(*warnings, fmt.Sprintf("%s header %s not set: its value holds the control character %q", phase, set.name, value[i:i+1]))
			continue
		}
		out = append(out, Header{Name: set.name, Value: []byte(value)})
		*changes = append(*changes, fmt.Sprintf("%s set %s", phase, set.name))
	}
	for _, add := range ops.append {
		value, ok := add.value.Render(ctx)
		if !ok {
			continue
		}
		if i := indexControl(value); i >= 0 {
			*warnings = append(*warnings, fmt.Sprintf("%s header %s not appended: its value holds the control character %q", phase, add.name, value[i:i+1]))
			continue
		}
		out = append(out, Header{Name: add.name, Value: []byte(value)})
		*changes = append(*changes, fmt.Sprintf("%s append %s", phase, add.name))
	}
	return out
}

// without removes every field named name, in place, and says how many.
func without(headers []Header, name string) ([]Header, int) {
	kept := headers[:0]
	for _, h := range headers {
		if !strings.EqualFold(h.Name, name) {
			kept = append(kept, h)
		}
	}
	return kept, len(headers) - len(kept)
}

func has(headers []Header, name string) bool {
	for _, h := range headers {
		if strings.EqualFold(h.Name, name) {
			return true
		}
	}
	return false
}

func distinctNames(pairs []Pair) int {
	seen := make(map[string]bool, len(pairs))
	for _, p := range pairs {
		seen[p.Name] = true
	}
	return len(seen)
}
