package rewrite

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// === The config as JSON ===
//
// What the config may hold. Pointers tell a missing key from an empty value.
// checkShape checks a decoded config against these types (exact keys, types,
// with the path of the offender in the message); Validate also decodes into them
// with DisallowUnknownFields.

type rawConfig struct {
	Path            *rawPath    `json:"path"`
	Query           *rawQuery   `json:"query"`
	RequestHeaders  *rawHeaders `json:"request-headers"`
	ResponseHeaders *rawHeaders `json:"response-headers"`
}

type rawPath struct {
	StripPrefix *string      `json:"strip-prefix"`
	AddPrefix   *string      `json:"add-prefix"`
	Replace     []rawReplace `json:"replace"`
}

type rawReplace struct {
	Regex *string `json:"regex"`
	With  *string `json:"with"`
}

type rawQuery struct {
	Set    map[string]string `json:"set"`
	Remove []string          `json:"remove"`
}

type rawHeaders struct {
	Set    map[string]string `json:"set"`
	Append map[string]string `json:"append"`
	Remove []string          `json:"remove"`
	Rename map[string]string `json:"rename"`
}

// === The checked config ===

// Config is a stage config, parsed and checked, ready to apply.
type Config struct {
	stripPrefix string // "" for none; never ends with "/"
	addPrefix   string // "" for none; never ends with "/"
	replace     []replaceRule
	querySet    []queryParam // sorted by name
	queryRemove []string
	request     headerOps
	response    headerOps
}

type replaceRule struct {
	index int            // in path.replace, for messages
	regex string         // the source
	with  string         // the replacement, in regexp.Expand syntax
	re    *regexp.Regexp // compiled on first use
}

type queryParam struct {
	name  string
	value Template
}

type headerOps struct {
	remove []string
	rename []renameOp    // sorted by from
	set    []headerValue // sorted by name
	append []headerValue // sorted by name
}

type renameOp struct{ from, to string }

type headerValue struct {
	name  string
	value Template
}

func (ops *headerOps) empty() bool {
	return len(ops.remove)+len(ops.rename)+len(ops.set)+len(ops.append) == 0
}

// Validate checks a config completely; validate-config calls it once, at load.
// The error names the offending key, e.g.
//
//	path.replace[0].regex: invalid regex "(": missing closing ): `(`
func Validate(text string) error {
	config, err := Parse(text)
	if err != nil {
		return err
	}
	for i := range config.replace {
		if err := config.replace[i].compile(); err != nil {
			return err
		}
	}
	// encoding/json's own strict decoding, as a second opinion on the keys and
	// types (Parse reads the config without it: see Parse).
	decoder := json.NewDecoder(strings.NewReader(text))
	decoder.DisallowUnknownFields()
	var raw rawConfig
	if err := decoder.Decode(&raw); err != nil {
		return describeDecodeError(err)
	}
	return nil
}

// Parse reads a config at request time. It checks everything Validate does but
// the regexes, which compile when a request first reaches them. It avoids what is
// slow the first time in a fresh Go instance (and every call gets one, unless the
// stage reuses instances): decoding into structs through reflection took about
// 0.5 ms, a first regexp.Compile 0.1–0.2 ms. So it decodes into a generic value,
// checks that against rawConfig (checkShape) and copies it into a rawConfig by hand.
func Parse(text string) (*Config, error) {
	var generic any
	if err := json.Unmarshal([]byte(text), &generic); err != nil {
		return nil, fmt.Errorf("config is not valid JSON: %v", err)
	}
	if err := checkShape(generic, reflect.TypeOf(rawConfig{}), ""); err != nil {
		return nil, err
	}
	raw := rawFromGeneric(generic.(map[string]any))

	var config Config
	var err error
	if raw.Path != nil {
		if err = config.parsePath(raw.Path); err != nil {
			return nil, err
		}
	}
	if raw.Query != nil {
		if err = config.parseQuery(raw.Query); err != nil {
			return nil, err
		}
	}
	if raw.RequestHeaders != nil {
		if config.request, err = parseHeaders(raw.RequestHeaders, "request-headers"); err != nil {
			return nil, err
		}
	}
	if raw.ResponseHeaders != nil {
		if config.response, err = parseHeaders(raw.ResponseHeaders, "response-headers"); err != nil {
			return nil, err
		}
	}
	if !config.rewritesPath() && !config.rewritesQuery() && config.request.empty() && config.response.empty() {
		return nil, errors.New("config rewrites nothing: set at least one of path, query, request-headers, response-headers")
	}
	return &config, nil
}

// MayRewriteResponse is a cheap look at the config text, before Parse: false
// means it has no response-headers, so the response phase has nothing to do and
// need not decode the config at all. (The host writes the config with
// serde_json, which writes keys as they are, never with \u escapes.)
func MayRewriteResponse(text string) bool {
	return strings.Contains(text, `"response-headers"`)
}

// rawFromGeneric copies a decoded config, whose shape checkShape has checked,
// into the structs encoding/json would have filled.
func rawFromGeneric(g map[string]any) rawConfig {
	var raw rawConfig
	if p, ok := g["path"].(map[string]any); ok {
		raw.Path = &rawPath{StripPrefix: optString(p["strip-prefix"]), AddPrefix: optString(p["add-prefix"])}
		for _, r := range asList(p["replace"]) {
			rule, _ := r.(map[string]any)
			raw.Path.Replace = append(raw.Path.Replace, rawReplace{Regex: optString(rule["regex"]), With: optString(rule["with"])})
		}
	}
	if q, ok := g["query"].(map[string]any); ok {
		raw.Query = &rawQuery{Set: stringMap(q["set"]), Remove: stringList(q["remove"])}
	}
	for key, target := range map[string]**rawHeaders{"request-headers": &raw.RequestHeaders, "response-headers": &raw.ResponseHeaders} {
		if h, ok := g[key].(map[string]any); ok {
			*target = &rawHeaders{Set: stringMap(h["set"]), Append: stringMap(h["append"]), Remove: stringList(h["remove"]), Rename: stringMap(h["rename"])}
		}
	}
	return raw
}

func optString(v any) *string {
	if s, ok := v.(string); ok {
		return &s
	}
	return nil
}

func asList(v any) []any {
	list, _ := v.([]any)
	return list
}

func stringList(v any) []string {
	var out []string
	for _, e := range asList(v) {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func stringMap(v any) map[string]string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		out[k], _ = e.(string)
	}
	return out
}

func (c *Config) rewritesPath() bool {
	return c.stripPrefix != "" || c.addPrefix != "" || len(c.replace) > 0
}

func (c *Config) rewritesQuery() bool {
	return len(c.querySet)+len(c.queryRemove) > 0
}

// === path and query ===

func (c *Config) parsePath(raw *rawPath) error {
	var err error
	if raw.StripPrefix != nil {
		if c.stripPrefix, err = parsePrefix("path.strip-prefix", *raw.StripPrefix); err != nil {
			return err
		}
	}
	if raw.AddPrefix != nil {
		if c.addPrefix, err = parsePrefix("path.add-prefix", *raw.AddPrefix); err != nil {
			return err
		}
	}
	for i, rule := range raw.Replace {
		where := fmt.Sprintf("path.replace[%d]", i)
		if rule.Regex == nil {
			return fmt.Errorf("%s: `regex` is required", where)
		}
		if rule.With == nil {
			return fmt.Errorf("%s: `with` is required (\"\" deletes what the regex matches)", where)
		}
		c.replace = append(c.replace, replaceRule{index: i, regex: *rule.Regex, with: *rule.With})
	}
	return nil
}

// compile compiles the rule's regex, once, and checks its replacement against it.
func (r *replaceRule) compile() error {
	if r.re != nil {
		return nil
	}
	where := fmt.Sprintf("path.replace[%d]", r.index)
	re, err := regexp.Compile(r.regex)
	if err != nil {
		return fmt.Errorf("%s.regex: invalid regex %q: %s", where, r.regex, regexMessage(err))
	}
	if err := checkReplacement(re, r.with); err != nil {
		return fmt.Errorf("%s.with: in %q: %v", where, r.with, err)
	}
	r.re = re
	return nil
}

// parsePrefix checks a path prefix: `/` and at least one more character, only
// characters a path may hold; a trailing `/` is dropped (`/v1/` is `/v1`).
func parsePrefix(where, prefix string) (string, error) {
	if !strings.HasPrefix(prefix, "/") {
		return "", fmt.Errorf("%s: %q must start with `/`", where, prefix)
	}
	trimmed := strings.TrimRight(prefix, "/")
	if trimmed == "" {
		return "", fmt.Errorf("%s: %q is the root; give at least one segment, like `/v1`", where, prefix)
	}
	if i := strings.IndexFunc(trimmed, func(r rune) bool { return r > 0x7f || !isPathChar(byte(r)) }); i >= 0 {
		return "", fmt.Errorf("%s: %q holds %q, which a path may not hold (percent-encode it)", where, prefix, trimmed[i:i+1])
	}
	return trimmed, nil
}

// checkReplacement checks a regex replacement the way regexp.Expand reads it:
// `$1`, `${1}`, `$name`, `${name}` insert groups and `$$` is a dollar sign.
// Unlike Expand, it refuses references to groups the regex does not have (Expand
// would insert nothing) and a `$` that starts no reference, and it requires the
// rest to be characters a path may hold.
func checkReplacement(re *regexp.Regexp, with string) error {
	for i := 0; i < len(with); {
		c := with[i]
		if c != '$' {
			if c > 0x7f || !isPathChar(c) {
				return fmt.Errorf("%q is not allowed in a path (percent-encode it)", with[i:i+1])
			}
			i++
			continue
		}
		if i+1 < len(with) && with[i+1] == '$' {
			i += 2
			continue
		}
		name, size := groupReference(with[i:])
		if size == 0 {
			return errors.New("a `$` that is not a group reference (`$1`, `${1}`, `${name}`; `$$` for a dollar sign)")
		}
		if n, err := strconv.Atoi(name); err == nil {
			if n > re.NumSubexp() {
				return fmt.Errorf("`%s` refers to group %d, but the regex has %d", with[i:i+size], n, re.NumSubexp())
			}
		} else if re.SubexpIndex(name) < 0 {
			hint := ""
			if digits := len(name) - len(strings.TrimLeft(name, "0123456789")); digits > 0 {
				hint = fmt.Sprintf(" (for group %s followed by %q, write `${%s}%s`)", name[:digits], name[digits:], name[:digits], name[digits:])
			}
			return fmt.Errorf("`%s` refers to a group named %q, which the regex does not have%s", with[i:i+size], name, hint)
		}
		i += size
	}
	return nil
}

// groupReference reads `$name` or `${name}` at the start of s (which starts
// with `$`) and returns the name and the reference's length, or size 0.
func groupReference(s string) (name string, size int) {
	braced := len(s) > 1 && s[1] == '{'
	start := 1
	if braced {
		start = 2
	}
	end := start
	for end < len(s) && isWordChar(s[end]) {
		end++
	}
	if end == start {
		return "", 0
	}
	if braced {
		if end >= len(s) || s[end] != '}' {
			return "", 0
		}
		return s[start:end], end + 1
	}
	return s[start:end], end
}

func isWordChar(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// isPathChar reports whether c may appear in a path (RFC 3986 pchar, `/`, and
// `%` for percent-encoding).
func isPathChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/%", c) >= 0
}

func regexMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
}

func (c *Config) parseQuery(raw *rawQuery) error {
	for i, name := range raw.Remove {
		if name == "" {
			return fmt.Errorf("query.remove[%d]: the name is empty", i)
		}
		c.queryRemove = append(c.queryRemove, name)
	}
	for _, name := range sortedKeys(raw.Set) {
		if name == "" {
			return errors.New("query.set: a name is empty")
		}
		value, err := ParseTemplate(raw.Set[name])
		if err != nil {
			return fmt.Errorf("query.set.%s: %v", name, err)
		}
		c.querySet = append(c.querySet, queryParam{name: name, value: value})
	}
	return nil
}

// === headers ===

// managedHeaders are fields a stage may not touch: the gateway owns message
// framing, and strips hop-by-hop fields anyway.
var managedHeaders = map[string]string{
	"content-length":    "framing",
	"transfer-encoding": "framing",
	"connection":        "hop-by-hop",
	"keep-alive":        "hop-by-hop",
	"proxy-connection":  "hop-by-hop",
	"te":                "hop-by-hop",
	"trailer":           "hop-by-hop",
	"upgrade":           "hop-by-hop",
}

// headerName checks a configured field name and returns it lower-cased.
func headerName(where, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%s: the header name is empty", where)
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return "", fmt.Errorf("%s: %q is not a valid header name (%q is not allowed; names are RFC 9110 tokens)", where, name, name[i:i+1])
		}
	}
	lower := strings.ToLower(name)
	if why, ok := managedHeaders[lower]; ok {
		return "", fmt.Errorf("%s: `%s` is managed by the gateway (%s); a stage cannot change it", where, lower, why)
	}
	return lower, nil
}

// isTokenChar reports whether c is a tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func parseHeaders(raw *rawHeaders, section string) (headerOps, error) {
	var ops headerOps
	seen := map[string]string{} // lower-case name → the key it came from, per op

	for i, name := range raw.Remove {
		lower, err := headerName(fmt.Sprintf("%s.remove[%d]", section, i), name)
		if err != nil {
			return ops, err
		}
		ops.remove = append(ops.remove, lower)
	}

	targets := map[string]string{}
	for _, from := range sortedKeys(raw.Rename) {
		where := section + ".rename." + from
		lowerFrom, err := headerName(where, from)
		if err != nil {
			return ops, err
		}
		lowerTo, err := headerName(where, raw.Rename[from])
		if err != nil {
			return ops, err
		}
		if lowerFrom == lowerTo {
			return ops, fmt.Errorf("%s: renames `%s` to itself", where, lowerFrom)
		}
		if other, dup := seen[lowerFrom]; dup {
			return ops, fmt.Errorf("%s.rename: %q and %q are the same header", section, other, from)
		}
		seen[lowerFrom] = from
		if other, dup := targets[lowerTo]; dup {
			return ops, fmt.Errorf("%s.rename: both `%s` and `%s` are renamed to `%s`", section, other, lowerFrom, lowerTo)
		}
		targets[lowerTo] = lowerFrom
		ops.rename = append(ops.rename, renameOp{from: lowerFrom, to: lowerTo})
	}
	for _, op := range ops.rename {
		if _, chained := targets[op.from]; chained {
			return ops, fmt.Errorf("%s.rename: `%s` is renamed to `%s` and is itself a rename target; chains are not allowed", section, op.from, op.to)
		}
	}

	var err error
	if ops.set, err = headerValues(raw.Set, section+".set"); err != nil {
		return ops, err
	}
	if ops.append, err = headerValues(raw.Append, section+".append"); err != nil {
		return ops, err
	}
	return ops, nil
}

func headerValues(raw map[string]string, where string) ([]headerValue, error) {
	var values []headerValue
	seen := map[string]string{}
	for _, name := range sortedKeys(raw) {
		lower, err := headerName(where+"."+name, name)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[lower]; dup {
			return nil, fmt.Errorf("%s: %q and %q are the same header", where, other, name)
		}
		seen[lower] = name
		value, err := ParseTemplate(raw[name])
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %v", where, name, err)
		}
		if bad, ok := value.literalControl(); ok {
			return nil, fmt.Errorf("%s.%s: the value holds the control character %q, which a header value may not hold", where, name, bad)
		}
		values = append(values, headerValue{name: lower, value: value})
	}
	return values, nil
}

// === Decoding helpers ===

// checkShape walks the generic JSON value next to the Go type it will be
// decoded into, and reports the first key that is not one of the type's json
// names, exactly spelt (encoding/json would take `Path` for `path`), and the
// first value of the wrong type, with where it is: `query.set.version`,
// `path.replace[0].regex`. (encoding/json's own errors say less, and say it
// differently from one Go version to the next.)
func checkShape(value any, typ reflect.Type, where string) error {
	if typ.Kind() == reflect.Pointer {
		if value == nil {
			return nil // null is the same as leaving the key out
		}
		typ = typ.Elem()
	}
	at := where
	if at == "" {
		at = "the config"
	}
	switch typ.Kind() {
	case reflect.String:
		if _, ok := value.(string); !ok {
			return fmt.Errorf("%s must be a string, got %s", at, jsonKind(value))
		}
	case reflect.Slice:
		list, ok := value.([]any)
		if !ok {
			return fmt.Errorf("%s must be %s, got %s", at, describeType(typ), jsonKind(value))
		}
		for i, element := range list {
			if err := checkShape(element, typ.Elem(), fmt.Sprintf("%s[%d]", where, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		object, ok := value.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be %s, got %s", at, describeType(typ), jsonKind(value))
		}
		for _, key := range sortedKeys(object) {
			if err := checkShape(object[key], typ.Elem(), join(where, key)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		object, ok := value.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be an object, got %s", at, jsonKind(value))
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < typ.NumField(); i++ {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			fields[name] = typ.Field(i).Type
			names = append(names, name)
		}
		for _, key := range sortedKeys(object) {
			fieldType, known := fields[key]
			if !known {
				prefix := ""
				if where != "" {
					prefix = where + ": "
				}
				return fmt.Errorf("%sunknown key %q (expected one of: %s)", prefix, key, strings.Join(names, ", "))
			}
			if err := checkShape(object[key], fieldType, join(where, key)); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}

// describeDecodeError words what the strict decoder still refuses after
// checkShape (nothing, unless the two disagree).
func describeDecodeError(err error) error {
	return fmt.Errorf("invalid config: %v", strings.TrimPrefix(err.Error(), "json: "))
}

func describeType(typ reflect.Type) string {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch typ.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.String {
			return "a list of strings"
		}
		return "a list"
	case reflect.Map:
		return "an object of strings"
	case reflect.Struct:
		return "an object"
	}
	return typ.String()
}

func jsonKind(value any) string {
	switch value.(type) {
	case nil:
		return "null"
	case []any:
		return "a list"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	}
	return "an object"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	return keys
}
