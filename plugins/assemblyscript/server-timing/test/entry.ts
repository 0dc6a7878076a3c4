// Test entry: exposes timing.ts to Node (test/run.sh compiles it with `--bindings esm`,
// which converts strings and u64 at the boundary).
import { parseConfig } from "../timing";

export { elapsed, isToken, parseMillis, quote, requestStart, serverTiming } from "../timing";

/** The config's error message ("" when it is accepted). */
export function configError(json: string): string {
  return parseConfig(json).error;
}

/** The settings a config gives, as `metric|allow-origin|request-header|route-desc`. */
export function configSummary(json: string): string {
  const s = parseConfig(json);
  if (s.error.length > 0) return "error: " + s.error;
  return s.metric + "|" + s.allowOrigin + "|" + (s.requestHeader ? "true" : "false") + "|" + (s.routeDesc ? "true" : "false");
}
