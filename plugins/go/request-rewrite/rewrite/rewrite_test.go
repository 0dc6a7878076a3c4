package rewrite

import (
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func mustParse(t *testing.T, config string) *Config {
	t.Helper()
	c, err := Parse(config)
	if err != nil {
		t.Fatalf("Parse(%s): %v", config, err)
	}
	return c
}

func headers(pairs ...string) []Header {
	var out []Header
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, Header{Name: pairs[i], Value: []byte(pairs[i+1])})
	}
	return out
}

func flat(hs []Header) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, h.Name+": "+string(h.Value))
	}
	return strings.Join(parts, " | ")
}

var ctx = Context{
	Route:     "users",
	ClientIP:  "192.0.2.7",
	RequestID: "req-1",
	Params:    []Pair{{"id", "42"}},
}

// The example from the README must parse and do what the README says.
const readmeConfig = `{
  "path": {"strip-prefix": "/v1", "add-prefix": "/api",
           "replace": [{"regex": "^/old/(.*)$", "with": "/new/$1"}]},
  "query": {"set": {"source": "gateway"}, "remove": ["debug"]},
  "request-headers": {"set": {"x-request-id": "{request_id}", "x-user": "{identity.subject}"},
                      "append": {"via": "wasmgate"},
                      "remove": ["cookie"], "rename": {"x-old": "x-new"}},
  "response-headers": {"set": {"x-original-uri": "{var.rewrite.original-uri}"},
                       "remove": ["server", "x-powered-by"]}
}`

func TestReadmeExample(t *testing.T) {
	c := mustParse(t, readmeConfig)
	in := headers("cookie", "a=b", "x-old", "1", "x-new", "stale", "x-user", "forged", "accept", "*/*")
	got, err := c.Request("/v1/old/users/42?debug=1&page=2", in, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "/api/new/users/42?page=2&source=gateway"; got.URI != want {
		t.Errorf("URI = %q, want %q", got.URI, want)
	}
	if want := "x-new: 1 | accept: */* | x-request-id: req-1 | via: wasmgate"; flat(got.Headers) != want {
		t.Errorf("headers = %q, want %q", flat(got.Headers), want)
	}
	if want := []Pair{{OriginalURIVar, "/v1/old/users/42?debug=1&page=2"}}; !reflect.DeepEqual(got.Vars, want) {
		t.Errorf("vars = %v, want %v", got.Vars, want)
	}
	if flat(in) != "cookie: a=b | x-old: 1 | x-new: stale | x-user: forged | accept: */*" {
		t.Errorf("the input headers were modified: %s", flat(in))
	}

	respCtx := ctx
	respCtx.Vars = got.Vars
	resp := c.Response(headers("server", "nginx", "content-type", "text/plain", "x-powered-by", "php"), respCtx)
	if want := "content-type: text/plain | x-original-uri: /v1/old/users/42?debug=1&page=2"; flat(resp.Headers) != want {
		t.Errorf("response headers = %q, want %q", flat(resp.Headers), want)
	}
}

func TestPath(t *testing.T) {
	tests := []struct {
		config, uri, want string
	}{
		{`{"path": {"strip-prefix": "/v1"}}`, "/v1/users", "/users"},
		{`{"path": {"strip-prefix": "/v1/"}}`, "/v1/users", "/users"},
		{`{"path": {"strip-prefix": "/v1"}}`, "/v1", "/"},
		{`{"path": {"strip-prefix": "/v1"}}`, "/v1?x=1", "/?x=1"},
		{`{"path": {"strip-prefix": "/v1"}}`, "/v10/users", "/v10/users"}, // segment boundary
		{`{"path": {"strip-prefix": "/v1"}}`, "/api/v1/users", "/api/v1/users"},
		{`{"path": {"add-prefix": "/api"}}`, "/users?x=1", "/api/users?x=1"},
		{`{"path": {"add-prefix": "/api/"}}`, "/", "/api/"},
		{`{"path": {"replace": [{"regex": "^/old/(.*)$", "with": "/new/$1"}]}}`, "/old/a/b?q", "/new/a/b?q"},
		{`{"path": {"replace": [{"regex": "^/u/(?P<id>[0-9]+)$", "with": "/users/${id}/profile"}]}}`, "/u/7", "/users/7/profile"},
		// The first rule that matches wins.
		{`{"path": {"replace": [{"regex": "^/a", "with": "/b"}, {"regex": "^/b", "with": "/c"}]}}`, "/a", "/b"},
		{`{"path": {"replace": [{"regex": "^/x", "with": "/b"}, {"regex": "^/a", "with": "/c"}]}}`, "/a", "/c"},
		// Every match of the winning rule is replaced.
		{`{"path": {"replace": [{"regex": "//+", "with": "/"}]}}`, "/a//b///c", "/a/b/c"},
		// A result without a leading slash gets one.
		{`{"path": {"replace": [{"regex": "^/api", "with": ""}]}}`, "/api", "/"},
		{`{"path": {"replace": [{"regex": "[$]", "with": "$$"}]}}`, "/a$b", "/a$b"},
		// strip-prefix, then replace, then add-prefix.
		{`{"path": {"strip-prefix": "/v1", "add-prefix": "/internal", "replace": [{"regex": "^/users/([0-9]+)$", "with": "/u/$1"}]}}`, "/v1/users/9", "/internal/u/9"},
		// No match: untouched, query and all.
		{`{"path": {"replace": [{"regex": "^/old", "with": "/new"}]}}`, "/keep?a=%20b", "/keep?a=%20b"},
	}
	for _, tt := range tests {
		got, err := mustParse(t, tt.config).Request(tt.uri, nil, ctx)
		if err != nil || got.URI != tt.want {
			t.Errorf("%s on %q = %q, %v; want %q", tt.config, tt.uri, got.URI, err, tt.want)
		}
	}
}

func TestQuery(t *testing.T) {
	tests := []struct {
		config, uri, want string
	}{
		{`{"query": {"remove": ["debug"]}}`, "/p?debug=1", "/p"},
		{`{"query": {"remove": ["debug"]}}`, "/p?a=1&debug=1&b=2&debug", "/p?a=1&b=2"},
		{`{"query": {"remove": ["a b"]}}`, "/p?a+b=1&a%20b=2&c=3", "/p?c=3"}, // names compare decoded
		{`{"query": {"remove": ["debug"]}}`, "/p?x=%zz&debug=1", "/p?x=%zz"}, // bad escapes are kept as they are
		{`{"query": {"set": {"k": "v"}}}`, "/p", "/p?k=v"},
		{`{"query": {"set": {"k": "v"}}}`, "/p?k=old&a=1&k=older", "/p?a=1&k=v"},
		{`{"query": {"set": {"user id": "{param.id}&x"}}}`, "/p", "/p?user+id=42%26x"},
		{`{"query": {"set": {"who": "{identity.subject}"}}}`, "/p?who=forged", "/p"}, // renders empty: removed
		{`{"query": {"set": {"b": "2", "a": "1"}}}`, "/p?z=0", "/p?z=0&a=1&b=2"},
	}
	for _, tt := range tests {
		got, err := mustParse(t, tt.config).Request(tt.uri, nil, ctx)
		if err != nil || got.URI != tt.want {
			t.Errorf("%s on %q = %q, %v; want %q", tt.config, tt.uri, got.URI, err, tt.want)
		}
	}
}

func TestRequestHeaders(t *testing.T) {
	withIdentity := ctx
	withIdentity.Identity = &Identity{Subject: "ann", Claims: []Pair{{"tenant", "acme"}}}
	withIdentity.Vars = []Pair{{"k", "old"}, {"k", "new"}}
	tests := []struct {
		name   string
		config string
		ctx    Context
		in     []Header
		want   string
	}{
		{"remove every field of the name", `{"request-headers": {"remove": ["Cookie"]}}`, ctx,
			headers("cookie", "a", "accept", "x", "cookie", "b"), "accept: x"},
		{"rename replaces the target", `{"request-headers": {"rename": {"x-old": "x-new"}}}`, ctx,
			headers("x-new", "stale", "x-old", "1", "x-old", "2"), "x-new: 1 | x-new: 2"},
		{"rename without the source keeps the target", `{"request-headers": {"rename": {"x-old": "x-new"}}}`, ctx,
			headers("x-new", "kept"), "x-new: kept"},
		{"set replaces every field", `{"request-headers": {"set": {"x-a": "b"}}}`, ctx,
			headers("x-a", "1", "accept", "x", "x-a", "2"), "accept: x | x-a: b"},
		{"set from an absent identity removes a forged header", `{"request-headers": {"set": {"x-user": "{identity.subject}"}}}`, ctx,
			headers("x-user", "admin"), ""},
		{"set from the identity", `{"request-headers": {"set": {"x-user": "{identity.subject}", "x-tenant": "t={identity.claim.tenant}"}}}`, withIdentity,
			headers("x-user", "admin"), "x-tenant: t=acme | x-user: ann"},
		{"templates", `{"request-headers": {"set": {"x-ctx": "{route}/{request_id}/{client_ip}/{param.id}/{var.k}/{{literal}}"}}}`, withIdentity,
			nil, "x-ctx: users/req-1/192.0.2.7/42/new/{literal}"},
		{"the original URI is visible to templates", `{"request-headers": {"set": {"x-original-uri": "{var.rewrite.original-uri}"}}}`, ctx,
			nil, "x-original-uri: /v1/x?y=1"},
		{"a partly filled template is kept", `{"request-headers": {"set": {"x-a": "{param.missing}-{param.id}"}}}`, ctx,
			nil, "x-a: -42"},
		{"append adds a field", `{"request-headers": {"append": {"via": "wasmgate"}}}`, ctx,
			headers("via", "1.1 proxy"), "via: 1.1 proxy | via: wasmgate"},
		{"append of an empty template adds nothing", `{"request-headers": {"append": {"x-user": "{identity.subject}"}}}`, ctx,
			headers("a", "b"), "a: b"},
		{"remove, then rename, then set, then append", `{"request-headers": {"remove": ["x-b"], "rename": {"x-a": "x-b"}, "set": {"x-b": "set"}, "append": {"x-b": "appended"}}}`, ctx,
			headers("x-a", "1", "x-b", "2"), "x-b: set | x-b: appended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mustParse(t, tt.config).Request("/v1/x?y=1", tt.in, tt.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if flat(got.Headers) != tt.want {
				t.Errorf("headers = %q, want %q", flat(got.Headers), tt.want)
			}
		})
	}
}

func TestHeaderInjectionIsRefused(t *testing.T) {
	evil := ctx
	evil.Params = []Pair{{"id", "42\r\nx-admin: true"}}
	c := mustParse(t, `{"request-headers": {"set": {"x-id": "{param.id}"}, "append": {"x-id2": "{param.id}"}}}`)
	got, err := c.Request("/x", headers("x-id", "client"), evil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Headers) != 0 {
		t.Errorf("headers = %q, want none (the client's x-id removed, nothing set)", flat(got.Headers))
	}
	if len(got.Warnings) != 2 || !strings.Contains(got.Warnings[0], `"\r"`) {
		t.Errorf("warnings = %q", got.Warnings)
	}
}

func TestOriginalURIVar(t *testing.T) {
	c := mustParse(t, `{"path": {"add-prefix": "/api"}}`)

	got, _ := c.Request("/x", nil, ctx)
	if !reflect.DeepEqual(got.Vars, []Pair{{OriginalURIVar, "/x"}}) {
		t.Errorf("vars = %v", got.Vars)
	}

	// A second rewrite stage keeps the first one's original.
	earlier := ctx
	earlier.Vars = []Pair{{OriginalURIVar, "/first"}}
	if got, _ := c.Request("/x", nil, earlier); len(got.Vars) != 0 {
		t.Errorf("vars = %v, want none", got.Vars)
	}

	// Over a request variable's limits: not set, with a warning (setting it would trap).
	long := "/" + strings.Repeat("a", maxVarValue)
	if got, _ := c.Request(long, nil, ctx); len(got.Vars) != 0 || len(got.Warnings) != 1 {
		t.Errorf("long URI: vars = %d, warnings = %q", len(got.Vars), got.Warnings)
	}
	full := ctx
	for i := 0; i < maxVars; i++ {
		full.Vars = append(full.Vars, Pair{fmt.Sprintf("v%d", i), "x"})
	}
	if got, _ := c.Request("/x", nil, full); len(got.Vars) != 0 || len(got.Warnings) != 1 {
		t.Errorf("64 vars: vars = %v, warnings = %q", got.Vars, got.Warnings)
	}
}

func TestChangesDescribeTheRewrite(t *testing.T) {
	c := mustParse(t, readmeConfig)
	got, _ := c.Request("/v1/old/a?debug=1", headers("cookie", "x", "x-old", "y"), ctx)
	want := "strip-prefix /v1, replace[0], add-prefix /api, query remove debug, query set source, " +
		"request remove cookie, request rename x-old → x-new, request set x-request-id, request append via"
	if strings.Join(got.Changes, ", ") != want {
		t.Errorf("changes = %q\nwant      %q", strings.Join(got.Changes, ", "), want)
	}
}

func TestResponseHeaders(t *testing.T) {
	c := mustParse(t, `{"response-headers": {"remove": ["server"], "set": {"x-route": "{route}"}, "append": {"x-request-id": "{request_id}"}}}`)
	got := c.Response(headers("server", "x", "content-type", "text/html"), ctx)
	if want := "content-type: text/html | x-route: users | x-request-id: req-1"; flat(got.Headers) != want {
		t.Errorf("headers = %q, want %q", flat(got.Headers), want)
	}
	if !c.RewritesResponse() {
		t.Error("RewritesResponse() = false")
	}
	if mustParse(t, `{"path": {"add-prefix": "/a"}}`).RewritesResponse() {
		t.Error("RewritesResponse() = true for a path-only config")
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ config, want string }{
		{`{}`, "config rewrites nothing"},
		{`[]`, "the config must be an object, got a list"},
		{`{"path": `, "config is not valid JSON"},
		{`{"path": {"add-prefix": "/a"}} {}`, "config is not valid JSON: invalid character"},
		{`{"paths": {}}`, `unknown key "paths" (expected one of: path, query, request-headers, response-headers)`},
		{`{"Path": {"add-prefix": "/a"}}`, `unknown key "Path"`},
		{`{"path": {"strip": "/v1"}}`, `path: unknown key "strip" (expected one of: strip-prefix, add-prefix, replace)`},
		{`{"path": {"replace": [{"regex": "a", "with": "b", "flags": "i"}]}}`, `path.replace[0]: unknown key "flags"`},
		{`{"request-headers": {"add": {"x": "y"}}}`, `request-headers: unknown key "add" (expected one of: set, append, remove, rename)`},
		{`{"path": {"strip-prefix": 1}}`, "path.strip-prefix must be a string, got a number"},
		{`{"path": {"replace": [{"regex": 3, "with": ""}]}}`, "path.replace[0].regex must be a string, got a number"},
		{`{"path": {"replace": {"regex": "a"}}}`, "path.replace must be a list, got an object"},
		{`{"query": {"set": {"version": 2}}}`, "query.set.version must be a string, got a number"},
		{`{"request-headers": {"remove": "cookie"}}`, "request-headers.remove must be a list of strings, got a string"},
		{`{"path": {"strip-prefix": "v1"}}`, "path.strip-prefix: \"v1\" must start with `/`"},
		{`{"path": {"strip-prefix": "/"}}`, "is the root"},
		{`{"path": {"add-prefix": "/a b"}}`, `path.add-prefix: "/a b" holds " "`},
		{`{"path": {"add-prefix": "/a?b"}}`, `holds "?"`},
		{`{"path": {"replace": [{"regex": "^/old/(.*$", "with": "/new/$1"}]}}`,
			"path.replace[0].regex: invalid regex \"^/old/(.*$\": missing closing ): `^/old/(.*$`"},
		{`{"path": {"replace": [{"regex": "^/a", "with": "/b"}, {"regex": "*", "with": "/c"}]}}`, "path.replace[1].regex: invalid regex"},
		{`{"path": {"replace": [{"with": "/b"}]}}`, "path.replace[0]: `regex` is required"},
		{`{"path": {"replace": [{"regex": "a"}]}}`, "path.replace[0]: `with` is required"},
		{`{"path": {"replace": [{"regex": "^/(a)", "with": "/$2"}]}}`, "`$2` refers to group 2, but the regex has 1"},
		{`{"path": {"replace": [{"regex": "^/(a)", "with": "/$1x"}]}}`, "for group 1 followed by \"x\", write `${1}x`"},
		{`{"path": {"replace": [{"regex": "^/(a)", "with": "/${nam}"}]}}`, `a group named "nam", which the regex does not have`},
		{`{"path": {"replace": [{"regex": "^/(a)", "with": "/$"}]}}`, "a `$` that is not a group reference"},
		{`{"path": {"replace": [{"regex": "^/(a)", "with": "/a?b=1"}]}}`, `"?" is not allowed in a path`},
		{`{"request-headers": {"set": {"x a": "b"}}}`, `request-headers.set.x a: "x a" is not a valid header name (" " is not allowed`},
		{`{"request-headers": {"remove": ["x:y"]}}`, `request-headers.remove[0]: "x:y" is not a valid header name`},
		{`{"response-headers": {"rename": {"x-a": "x(b)"}}}`, `"x(b)" is not a valid header name`},
		{`{"request-headers": {"set": {"": "b"}}}`, "the header name is empty"},
		{`{"request-headers": {"set": {"X-A": "1", "x-a": "2"}}}`, `request-headers.set: "X-A" and "x-a" are the same header`},
		{`{"request-headers": {"set": {"content-length": "1"}}}`, "`content-length` is managed by the gateway (framing)"},
		{`{"response-headers": {"remove": ["Connection"]}}`, "`connection` is managed by the gateway (hop-by-hop)"},
		{`{"request-headers": {"rename": {"x-a": "X-A"}}}`, "renames `x-a` to itself"},
		{`{"request-headers": {"rename": {"x-a": "x-b", "x-b": "x-c"}}}`, "chains are not allowed"},
		{`{"request-headers": {"rename": {"x-a": "x-c", "x-b": "x-c"}}}`, "both `x-a` and `x-b` are renamed to `x-c`"},
		{`{"request-headers": {"set": {"x-a": "{request.id}"}}}`, "request-headers.set.x-a: in \"{request.id}\": unknown placeholder `{request.id}` (use {route}"},
		{`{"request-headers": {"set": {"x-a": "{param.}"}}}`, "`{param.}` needs a name"},
		{`{"request-headers": {"set": {"x-a": "{route"}}}`, "a `{` without its `}`"},
		{`{"request-headers": {"set": {"x-a": "a}b"}}}`, "a `}` without its `{`"},
		{`{"request-headers": {"set": {"x-a": "{}"}}}`, "an empty placeholder"},
		{`{"request-headers": {"set": {"x-a": "a\nb"}}}`, `the control character '\n'`},
		{`{"query": {"set": {"k": "{nope}"}}}`, "query.set.k: in \"{nope}\": unknown placeholder"},
		{`{"query": {"remove": [""]}}`, "query.remove[0]: the name is empty"},
	}
	for _, tt := range tests {
		err := Validate(tt.config)
		if err == nil {
			t.Errorf("Validate(%s) succeeded, want an error containing %q", tt.config, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%s)\n  error %q\n  want  %q", tt.config, err, tt.want)
		}
		// The request-time Parse finds the same problems, but for the regexes.
		_, perr := Parse(tt.config)
		lazy := strings.Contains(err.Error(), ".regex: invalid regex") || strings.Contains(err.Error(), ".with: in ")
		if lazy != (perr == nil) || perr != nil && perr.Error() != err.Error() {
			t.Errorf("Parse(%s) = %v, Validate = %v", tt.config, perr, err)
		}
	}
}

func TestRegexesCompileOnFirstUse(t *testing.T) {
	c := mustParse(t, `{"path": {"replace": [{"regex": "^/a", "with": "/b"}, {"regex": "(", "with": "/c"}]}}`)
	if got, err := c.Request("/a", nil, ctx); err != nil || got.URI != "/b" {
		t.Errorf("Request(/a) = %q, %v; the second rule is never reached", got.URI, err)
	}
	if _, err := c.Request("/x", nil, ctx); err == nil || !strings.Contains(err.Error(), "path.replace[1].regex: invalid regex") {
		t.Errorf("Request(/x) error = %v", err)
	}
}

func TestMayRewriteResponse(t *testing.T) {
	if MayRewriteResponse(`{"path":{"add-prefix":"/a"}}`) {
		t.Error("true without response-headers")
	}
	if !MayRewriteResponse(`{"response-headers":{"remove":["server"]}}`) {
		t.Error("false with response-headers")
	}
}

func TestConfigAccepts(t *testing.T) {
	for _, config := range []string{
		readmeConfig,
		`{"response-headers": {"remove": ["server"]}}`,
		`{"path": {"add-prefix": "/a", "strip-prefix": null}}`,
		`{"request-headers": {"set": {"x-a": "{request-id} {client-ip} {params.id} {vars.x} {identity.claims.t}"}}}`,
		`{"path": {"replace": [{"regex": "^/(?P<rest>.*)$", "with": "/x/${rest}/$$/${1}"}]}}`,
		`{"request-headers": {"set": {"x-json": "{{\"a\": 1}}"}}}`,
	} {
		if err := Validate(config); err != nil {
			t.Errorf("Validate(%s): %v", config, err)
		}
	}
}

func TestTemplateRender(t *testing.T) {
	tests := []struct {
		template, want string
		ok             bool
	}{
		{"plain", "plain", true},
		{"", "", true},
		{"{{x}}", "{x}", true},
		{"{route}", "users", true},
		{"{identity.subject}", "", false},
		{"id-{identity.subject}", "id-", false},
		{"{identity.subject}{param.id}", "42", true},
	}
	for _, tt := range tests {
		tpl, err := ParseTemplate(tt.template)
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.template, err)
		}
		got, ok := tpl.Render(&ctx)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Render(%q) = %q, %v; want %q, %v", tt.template, got, ok, tt.want, tt.ok)
		}
	}
}

func TestQueryEscapingMatchesNetURL(t *testing.T) {
	for _, s := range []string{"", "a b", "a+b", "ü/?&=#%", "x~y_z.-", "\x00\xff"} {
		if got, want := queryEscape(s), url.QueryEscape(s); got != want {
			t.Errorf("queryEscape(%q) = %q, want %q", s, got, want)
		}
	}
	for _, s := range []string{"", "a+b", "a%20b", "%zz", "%", "%4", "%41%c3%bc", "100%"} {
		got, err := queryUnescape(s)
		want, wantErr := url.QueryUnescape(s)
		if got != want || (err == nil) != (wantErr == nil) {
			t.Errorf("queryUnescape(%q) = %q, %v; want %q, %v", s, got, err, want, wantErr)
		}
	}
}
