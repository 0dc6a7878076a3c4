//go:build wasip1

// Package export_wit_world implements the `transform` world's exports. Its name
// and the function signatures are the ones `wit-bindgen go` expects: build.sh
// copies this directory into the generated bindings, whose main package calls
// OnRequest and OnResponse from the //go:wasmexport wrappers.
package export_wit_world

import (
	"encoding/json"
	"strings"

	witTypes "go.bytecodealliance.org/pkg/wit/types"

	"wasmgate.local/request-rewrite/rewrite"
	host "wit_component/wasmgate_plugin_host"
	types "wit_component/wasmgate_plugin_types"
)

// OnRequest rewrites the request's path, query and headers, and records the
// original URI in the request variable rewrite.original-uri.
func OnRequest(req types.Request, ctx types.Context) witTypes.Result[types.Request, types.Response] {
	config, err := loadConfig(host.Config())
	if err != nil {
		// validate-config refused this config at load, so this is not expected.
		host.Log(types.Level_Error, "invalid config: "+err.Error())
		return witTypes.Err[types.Request](errorResponse(500, "stage_misconfigured",
			"the request-rewrite stage has an invalid config", ctx.RequestId))
	}

	result, err := config.Request(req.Uri, headersIn(req.Headers), contextIn(ctx))
	if err != nil {
		host.Log(types.Level_Error, err.Error())
		return witTypes.Err[types.Request](errorResponse(500, "rewrite_failed",
			"the request could not be rewritten", ctx.RequestId))
	}
	for _, v := range result.Vars {
		host.SetVar(v.Name, v.Value)
	}
	for _, warning := range result.Warnings {
		host.Log(types.Level_Warn, warning)
	}
	host.Log(types.Level_Debug, describe(req.Method+" "+req.Uri, result.URI, result.Changes))

	return witTypes.Ok[types.Request, types.Response](types.Request{
		Method:  req.Method,
		Uri:     result.URI,
		Headers: headersOut(result.Headers),
		Body:    witTypes.None[[]uint8](), // none: the body passes as it is
	})
}

// OnResponse applies response-headers. It never fails the response: with an
// unreadable config it logs and passes the response through.
func OnResponse(resp types.Response, ctx types.Context) types.Response {
	passThrough := types.Response{Status: resp.Status, Headers: resp.Headers, Body: witTypes.None[[]uint8]()}
	text := host.Config()
	if !rewrite.MayRewriteResponse(text) {
		return passThrough // skips decoding the config, the bulk of this call's cost
	}
	config, err := loadConfig(text)
	if err != nil {
		host.Log(types.Level_Error, "invalid config: "+err.Error())
		return passThrough
	}
	if !config.RewritesResponse() {
		return passThrough
	}
	result := config.Response(headersIn(resp.Headers), contextIn(ctx))
	for _, warning := range result.Warnings {
		host.Log(types.Level_Warn, warning)
	}
	if len(result.Changes) > 0 {
		host.Log(types.Level_Debug, strings.Join(result.Changes, ", "))
	}
	return types.Response{Status: resp.Status, Headers: headersOut(result.Headers), Body: witTypes.None[[]uint8]()}
}

// cache keeps the parsed config for the next call when the gateway reuses
// instances (a stage's `limits.reuse`): parsing costs far more than rewriting.
// A fresh instance starts with it empty. It holds the stage's config, the same
// for every request, so nothing of one request reaches the next through it.
var cache struct {
	text   string
	config *rewrite.Config
}

func loadConfig(text string) (*rewrite.Config, error) {
	if cache.config != nil && cache.text == text {
		return cache.config, nil
	}
	config, err := rewrite.Parse(text)
	if err != nil {
		return nil, err
	}
	cache.text, cache.config = text, config
	return config, nil
}

func describe(before, after string, changes []string) string {
	if len(changes) == 0 {
		return before + ": unchanged"
	}
	return before + " → " + after + " (" + strings.Join(changes, ", ") + ")"
}

// errorResponse is the JSON answer the stage gives instead of the upstream's.
func errorResponse(status uint16, code, message, requestID string) types.Response {
	body, _ := json.Marshal(map[string]string{"error": code, "message": message, "request_id": requestID})
	return types.Response{
		Status:  status,
		Headers: []types.Header{{F0: "content-type", F1: []byte("application/json")}},
		Body:    witTypes.Some(body),
	}
}

// === WIT records ↔ the rewrite package's types ===

func headersIn(fields []types.Header) []rewrite.Header {
	out := make([]rewrite.Header, len(fields))
	for i, f := range fields {
		out[i] = rewrite.Header{Name: f.F0, Value: f.F1}
	}
	return out
}

func headersOut(fields []rewrite.Header) []types.Header {
	out := make([]types.Header, len(fields))
	for i, f := range fields {
		out[i] = types.Header{F0: f.Name, F1: f.Value}
	}
	return out
}

func pairsIn(pairs []witTypes.Tuple2[string, string]) []rewrite.Pair {
	out := make([]rewrite.Pair, len(pairs))
	for i, p := range pairs {
		out[i] = rewrite.Pair{Name: p.F0, Value: p.F1}
	}
	return out
}

func contextIn(ctx types.Context) rewrite.Context {
	out := rewrite.Context{
		Route:     ctx.Route,
		ClientIP:  ctx.ClientIp,
		RequestID: ctx.RequestId,
		Params:    pairsIn(ctx.Params),
		Vars:      pairsIn(ctx.Vars),
	}
	if ctx.Identity.IsSome() {
		identity := ctx.Identity.Some()
		out.Identity = &rewrite.Identity{Subject: identity.Subject, Claims: pairsIn(identity.Claims)}
	}
	return out
}
