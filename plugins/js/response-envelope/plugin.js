// response-envelope: a wasmgate transform plugin in JavaScript. This one source is built
// twice by scripts/build-polyglot.sh:
//
//   response-envelope.wasm      componentize-js (SpiderMonkey in StarlingMonkey), ~12 MB
//   response-envelope-qjs.wasm  componentize-qjs (QuickJS), ~1.6 MB, 4–5x cheaper per call
//
// on-response wraps a buffered JSON response from the upstream in an envelope:
//
//   {"data": <the upstream's JSON>, "meta": {"request_id": "...", "route": "...", ...}}
//
// and sets `content-type: application/json` (the gateway recomputes content-length).
// Non-JSON responses, non-2xx responses (unless `wrap-errors`) and empty bodies pass
// through untouched. on-request lets the request through unchanged. The logic lives in
// envelope.js; this file is the binding glue.
//
// WIT → JS, as both toolchains agree on it: records are objects with camelCase keys
// (ctx.requestId), list<u8> is a Uint8Array, a header is a [name, Uint8Array] pair,
// enums are strings ('info'), option<T> none is undefined (or null) and an exported
// `result` returns its ok value and throws its err value. Imported interface functions
// are named imports from the versioned interface name; an exported interface is an
// exported object named after it in camelCase (configCheck).

import { log, config } from 'wasmgate:plugin/host@0.1.0';
import { ConfigError, parseConfig, wrap } from './envelope.js';

export function onRequest(req, ctx) {
  // A body of null/undefined keeps the request body as it was (no copy back).
  return { method: req.method, uri: req.uri, headers: req.headers, body: undefined };
}

export function onResponse(resp, ctx) {
  const settings = parseConfig(config());
  const outcome = wrap(settings, resp, ctx);
  if (outcome.skip !== undefined) {
    if (outcome.skip !== null) log('warn', `route ${ctx.route}: ${outcome.skip}`);
    return { status: resp.status, headers: resp.headers, body: undefined };
  }
  log('debug', `wrapped a ${resp.status} response for request ${ctx.requestId}`);
  return { status: resp.status, headers: outcome.headers, body: outcome.body };
}

export const configCheck = {
  validateConfig(text) {
    try {
      parseConfig(text);
    } catch (error) {
      if (error instanceof ConfigError) throw error.message;
      throw `config check failed: ${error}`;
    }
  },
};
