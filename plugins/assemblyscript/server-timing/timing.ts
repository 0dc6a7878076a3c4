// The logic of the server-timing plugin: config parsing and header values. Plain
// AssemblyScript with no host imports and no memory layouts, so the unit tests
// (test/run.sh) compile it on its own and call it from Node.

/** The request variable `on-request` stores its timestamp in, for `on-response`. */
export const START_VAR = "timing.start";

const KNOWN_KEYS = "metric, timing-allow-origin, request-header, route-desc";

/** A checked stage config. */
export class Settings {
  /** The Server-Timing metric name (an HTTP token). */
  metric: string = "gateway";
  /** The `timing-allow-origin` value to send; empty: send none. */
  allowOrigin: string = "";
  /** Add `x-request-start: t=<ms>` to the request sent upstream. */
  requestHeader: bool = true;
  /** Add `desc="<route>"` to the metric. */
  routeDesc: bool = true;
  /** Why the config is refused; empty when it is fine. */
  error: string = "";
}

/** Parses and checks the stage config (a JSON object whose values are strings and
 *  booleans). On a bad config, `error` names the key at fault. */
export function parseConfig(text: string): Settings {
  const settings = new Settings();
  const p = new Parser(text);
  p.space();
  if (!p.eat(0x7b /* { */)) return fail(settings, "the config must be a JSON object");
  let seen = 0;
  p.space();
  if (!p.eat(0x7d /* } */)) {
    while (true) {
      p.space();
      if (p.peek() != 0x22 /* " */) return fail(settings, "expected a key in double quotes " + p.where());
      const key = p.string();
      if (p.error.length > 0) return fail(settings, p.error);
      p.space();
      if (!p.eat(0x3a /* : */)) return fail(settings, "expected `:` after `" + key + "` " + p.where());
      p.space();

      let bit = 0;
      if (key == "metric") bit = 1;
      else if (key == "timing-allow-origin") bit = 2;
      else if (key == "request-header") bit = 4;
      else if (key == "route-desc") bit = 8;
      else return fail(settings, "unknown key `" + key + "` (known keys: " + KNOWN_KEYS + ")");
      if (seen & bit) return fail(settings, "`" + key + "` is given twice");
      seen |= bit;

      const kind = p.kind();
      if (bit <= 2) {
        if (kind != "a string") return fail(settings, "`" + key + "` must be a string, got " + kind);
        const value = p.string();
        if (p.error.length > 0) return fail(settings, p.error);
        if (bit == 1) settings.metric = value;
        else settings.allowOrigin = value;
      } else {
        if (kind != "a boolean") return fail(settings, "`" + key + "` must be true or false, got " + kind);
        const value = p.boolean();
        if (p.error.length > 0) return fail(settings, p.error);
        if (bit == 4) settings.requestHeader = value;
        else settings.routeDesc = value;
      }

      p.space();
      if (p.eat(0x2c /* , */)) continue;
      if (p.eat(0x7d /* } */)) break;
      return fail(settings, "expected `,` or `}` " + p.where());
    }
  }
  p.space();
  if (!p.atEnd()) return fail(settings, "unexpected text after the config object " + p.where());

  if (!isToken(settings.metric)) {
    return fail(settings, "`metric` must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), got " + quote(settings.metric));
  }
  if (seen & 2) {
    const problem = checkAllowOrigin(settings.allowOrigin);
    if (problem.length > 0) return fail(settings, "`timing-allow-origin`: " + problem);
  }
  return settings;
}

function fail(settings: Settings, message: string): Settings {
  settings.error = message;
  return settings;
}

/** `x-request-start` value, in the Heroku / New Relic format. */
export function requestStart(millis: u64): string {
  return "t=" + millis.toString();
}

/** One Server-Timing metric: `name;dur=<ms>` plus `;desc="<route>"` when `route` is
 *  not empty. */
export function serverTiming(metric: string, durMillis: u64, route: string): string {
  let value = metric + ";dur=" + durMillis.toString();
  if (route.length > 0) value += ";desc=" + quote(route);
  return value;
}

/** Milliseconds from `start` to `now`; 0 if the clock went backwards. */
export function elapsed(start: u64, now: u64): u64 {
  return now > start ? now - start : 0;
}

/** A millisecond timestamp as `on-request` wrote it; -1 if `text` is not one. */
export function parseMillis(text: string): i64 {
  if (text.length == 0 || text.length > 16) return -1;
  let value: i64 = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    value = value * 10 + (c - 0x30);
  }
  return value;
}

/** An HTTP quoted-string: `"` and `\` escaped, control characters dropped. */
export function quote(text: string): string {
  let out = "\"";
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 0x22 || c == 0x5c || c < 0x20 || c == 0x7f) {
      out += text.substring(from, i);
      if (c == 0x22 || c == 0x5c) out += "\\" + String.fromCharCode(c);
      from = i + 1;
    }
  }
  return out + text.substring(from) + "\"";
}

/** RFC 9110 token: 1*tchar. */
export function isToken(text: string): bool {
  if (text.length == 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (!alnum && "!#$%&'*+-.^_`|~".indexOf(String.fromCharCode(c)) < 0) return false;
  }
  return true;
}

/** `timing-allow-origin` is a comma-separated list of `*`, `null` or serialized origins
 *  (`scheme://host[:port]`, no path: browsers compare it with the page's origin byte for
 *  byte). Returns the problem, or "". */
function checkAllowOrigin(value: string): string {
  if (value.trim().length == 0) return "must not be empty (leave the key out to send no header)";
  const items = value.split(",");
  for (let i = 0; i < items.length; i++) {
    const item = items[i].trim();
    if (item == "*" || item == "null") continue;
    if (!isOrigin(item)) {
      return quote(item) + " is not an origin: use `*`, `null` or scheme://host[:port] with no path, comma-separated";
    }
  }
  return "";
}

function isOrigin(text: string): bool {
  const sep = text.indexOf("://");
  if (sep < 1 || sep + 3 >= text.length) return false;
  for (let i = 0; i < sep; i++) {
    const c = text.charCodeAt(i);
    const alpha = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    const digit = c >= 0x30 && c <= 0x39;
    if (!alpha && (i == 0 || !(digit || c == 0x2b || c == 0x2d || c == 0x2e))) return false;
  }
  for (let i = sep + 3; i < text.length; i++) {
    const c = text.charCodeAt(i);
    const alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    if (!alnum && "-._~%:[]".indexOf(String.fromCharCode(c)) < 0) return false;
  }
  return true;
}

/** Just enough JSON for a flat object of strings and booleans. */
class Parser {
  pos: i32 = 0;
  error: string = "";

  constructor(public text: string) {}

  peek(): i32 {
    return this.pos < this.text.length ? this.text.charCodeAt(this.pos) : -1;
  }

  eat(c: i32): bool {
    if (this.peek() != c) return false;
    this.pos++;
    return true;
  }

  atEnd(): bool {
    return this.pos >= this.text.length;
  }

  space(): void {
    let c = this.peek();
    while (c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d) {
      this.pos++;
      c = this.peek();
    }
  }

  where(): string {
    return this.atEnd() ? "at the end" : "at character " + (this.pos + 1).toString();
  }

  /** The JSON type of the value that starts here, as error messages name it. */
  kind(): string {
    const c = this.peek();
    if (c == 0x22) return "a string";
    if (c == 0x74 || c == 0x66) return "a boolean";
    if (c == 0x6e) return "null";
    if (c == 0x5b) return "a list";
    if (c == 0x7b) return "a table";
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return "a number";
    return "something that is not JSON";
  }

  boolean(): bool {
    if (this.text.startsWith("true", this.pos)) {
      this.pos += 4;
      return true;
    }
    if (this.text.startsWith("false", this.pos)) {
      this.pos += 5;
      return false;
    }
    this.error = "not a JSON value " + this.where();
    return false;
  }

  /** A JSON string starting at the opening quote, unescaped. */
  string(): string {
    const text = this.text;
    this.pos++;
    let out = "";
    let from = this.pos;
    while (this.pos < text.length) {
      const c = text.charCodeAt(this.pos);
      if (c == 0x22) {
        out += text.substring(from, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) {
        this.error = "control character in a string " + this.where();
        return "";
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += text.substring(from, this.pos);
      const e = this.pos + 1 < text.length ? text.charCodeAt(this.pos + 1) : -1;
      let unit = -1;
      if (e == 0x22 || e == 0x5c || e == 0x2f) unit = e;
      else if (e == 0x62) unit = 0x08;
      else if (e == 0x66) unit = 0x0c;
      else if (e == 0x6e) unit = 0x0a;
      else if (e == 0x72) unit = 0x0d;
      else if (e == 0x74) unit = 0x09;
      else if (e == 0x75 && this.pos + 6 <= text.length) unit = hex4(text, this.pos + 2);
      if (unit < 0) {
        this.error = "invalid escape in a string " + this.where();
        return "";
      }
      out += String.fromCharCode(unit);
      this.pos += e == 0x75 ? 6 : 2;
      from = this.pos;
    }
    this.error = "unterminated string";
    return "";
  }
}

function hex4(text: string, at: i32): i32 {
  let value = 0;
  for (let i = at; i < at + 4; i++) {
    const c = text.charCodeAt(i);
    let digit = -1;
    if (c >= 0x30 && c <= 0x39) digit = c - 0x30;
    else if (c >= 0x61 && c <= 0x66) digit = c - 0x57;
    else if (c >= 0x41 && c <= 0x46) digit = c - 0x37;
    if (digit < 0) return -1;
    value = (value << 4) | digit;
  }
  return value;
}
