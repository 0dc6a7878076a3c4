// server-timing: a `transform` stage that times requests through the gateway.
//
//   on-request   stores host.now-millis() as the request variable `timing.start` and
//                adds `x-request-start: t=<ms>` to the request sent upstream;
//   on-response  adds `server-timing: <metric>;dur=<ms>;desc="<route>"` (and, if
//                configured, `timing-allow-origin`) to the response.
//
// This is the module's entry file: its exports are the core module's exports. build.sh
// renames them to the names the component model expects, which AssemblyScript
// identifiers cannot spell:
//   on_request            → on-request              post_on_request      → cabi_post_on-request
//   on_response           → on-response             post_on_response     → cabi_post_on-response
//   validate_config       → wasmgate:plugin/config-check@0.1.0#validate-config
//   post_validate_config  → cabi_post_wasmgate:plugin/config-check@0.1.0#validate-config
// The memory layouts and host imports are in abi.ts; the logic is in timing.ts.

import {
  Context, HeaderList, Level, Request, Response,
  config, copyResponse, liftString, listLen, log, lookup, nowMillis, okRequest,
  releaseAll, resultUnitOrString, retArea, setVar,
} from "./abi";
import { START_VAR, elapsed, parseConfig, parseMillis, requestStart, serverTiming } from "./timing";

export { cabi_realloc } from "./abi";

/** `on-request: func(req: request, ctx: context) -> result<request, response>`.
 *  `args` points at tuple<request, context>; returns a pointer to the result. */
export function on_request(args: usize): usize {
  const req = args;
  const now = nowMillis();
  setVar(START_VAR, now.toString());

  // ok(the same request), body `none` = unchanged; only the headers may change.
  const out = okRequest(req);
  const settings = parseConfig(config());
  if (settings.error.length > 0) {
    // validate-config refuses a bad config at load, so this does not happen in practice.
    log(Level.Error, "invalid config, request passed unchanged: " + settings.error);
    return retArea();
  }
  if (settings.requestHeader) {
    // The headers returned replace the request's: all of them, minus any x-request-start
    // a client sent, plus ours.
    const headers = new HeaderList(listLen(req + Request.HEADERS) + 1);
    headers.copyFrom(req + Request.HEADERS, "x-request-start");
    headers.add("x-request-start", requestStart(now));
    headers.storeAt(out + Request.HEADERS);
  }
  return retArea();
}

/** `on-response: func(resp: response, ctx: context) -> response`.
 *  `args` points at tuple<response, context>; returns a pointer to the response. */
export function on_response(args: usize): usize {
  const resp = args;
  const ctx = args + Response.SIZE;

  // The same status and headers, body `none` = unchanged.
  const out = copyResponse(resp);
  const settings = parseConfig(config());
  if (settings.error.length > 0) {
    log(Level.Error, "invalid config, response passed unchanged: " + settings.error);
    return out;
  }

  const started = lookup(ctx + Context.VARS, START_VAR);
  const start: i64 = started == null ? -1 : parseMillis(started);
  const replaceOrigin = settings.allowOrigin.length > 0;

  const headers = new HeaderList(listLen(resp + Response.HEADERS) + 2);
  // Upstream server-timing fields stay (several fields are one list); an upstream
  // timing-allow-origin is replaced when the config sets one.
  headers.copyFrom(resp + Response.HEADERS, replaceOrigin ? "timing-allow-origin" : "");
  if (start < 0) {
    log(Level.Warn, "request variable `" + START_VAR + "` is missing or not a number: no server-timing header");
  } else {
    const dur = elapsed(<u64>start, nowMillis());
    const route = settings.routeDesc ? liftString(ctx + Context.ROUTE) : "";
    headers.add("server-timing", serverTiming(settings.metric, dur, route));
  }
  if (replaceOrigin) headers.add("timing-allow-origin", settings.allowOrigin);
  headers.storeAt(out + Response.HEADERS);
  return out;
}

/** `config-check.validate-config: func(config: string) -> result<_, string>`.
 *  The string arrives flat, as (ptr, len). */
export function validate_config(ptr: usize, len: usize): usize {
  return resultUnitOrString(parseConfig(String.UTF8.decodeUnsafe(ptr, len)).error);
}

// Post-return functions: the host calls them after reading each export's result (the
// argument is the pointer the export returned). They free everything the call allocated.

export function post_on_request(ret: usize): void {
  releaseAll();
}

export function post_on_response(ret: usize): void {
  releaseAll();
}

export function post_validate_config(ret: usize): void {
  releaseAll();
}
