// The logic of the response-envelope plugin, free of any WebAssembly binding.
//
// Both entry points import this module: `plugin.js` (componentize-js, SpiderMonkey) and
// `plugin-qjs.js` (componentize-qjs, QuickJS). It is plain ECMAScript with no imports, so
// it also runs under Node for the unit tests in `envelope.test.mjs`.
//
// Config (the stage's `config` table, as JSON); every key is optional:
//
//   {
//     "data-key":    "data",     // where the upstream's JSON goes
//     "meta-key":    "meta",     // where request_id, route and `meta` go
//     "meta":        {},         // extra static fields for the meta object
//     "wrap-errors": false       // also wrap non-2xx responses
//   }

const KNOWN_KEYS = ['data-key', 'meta-key', 'meta', 'wrap-errors'];
const RESERVED_META = ['request_id', 'route'];

/** A stage config that does not fit; the message names the offending field. */
export class ConfigError extends Error {}

function kind(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a table';
  return `a ${typeof value}`;
}

/** Checks the stage config (a JSON document) and returns the settings, or throws ConfigError. */
export function parseConfig(text) {
  let config;
  try {
    config = text.trim() === '' ? {} : JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config is not valid JSON: ${error.message}`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new ConfigError(`config must be a table, got ${kind(config)}`);
  }
  const unknown = Object.keys(config).filter((key) => !KNOWN_KEYS.includes(key)).sort();
  if (unknown.length > 0) {
    throw new ConfigError(`unknown field \`${unknown[0]}\` (known fields: ${KNOWN_KEYS.join(', ')})`);
  }
  const settings = { dataKey: 'data', metaKey: 'meta', meta: {}, wrapErrors: false };
  for (const [key, field] of [['data-key', 'dataKey'], ['meta-key', 'metaKey']]) {
    if (key in config) {
      const value = config[key];
      if (typeof value !== 'string' || value === '') {
        throw new ConfigError(`\`${key}\` must be a non-empty string, got ${kind(value)}`);
      }
      settings[field] = value;
    }
  }
  if (settings.dataKey === settings.metaKey) {
    throw new ConfigError(`\`data-key\` and \`meta-key\` must differ (both are "${settings.dataKey}")`);
  }
  if ('meta' in config) {
    const meta = config.meta;
    if (meta === null || typeof meta !== 'object' || Array.isArray(meta)) {
      throw new ConfigError(`\`meta\` must be a table, got ${kind(meta)}`);
    }
    for (const reserved of RESERVED_META) {
      if (reserved in meta) {
        throw new ConfigError(`\`meta.${reserved}\` is reserved: the plugin sets it for every request`);
      }
    }
    settings.meta = meta;
  }
  if ('wrap-errors' in config) {
    if (typeof config['wrap-errors'] !== 'boolean') {
      throw new ConfigError(`\`wrap-errors\` must be a boolean, got ${kind(config['wrap-errors'])}`);
    }
    settings.wrapErrors = config['wrap-errors'];
  }
  return settings;
}

// UTF-8: SpiderMonkey (StarlingMonkey) has TextEncoder/TextDecoder, QuickJS does not. The
// fallbacks go through the engine's native percent-encoding (escape/encodeURIComponent),
// which is much faster in an interpreter than a loop over code points.

const CHUNK = 0x2000;

export function utf8Decode(bytes) {
  if (typeof TextDecoder !== 'undefined') {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new SyntaxError('the body is not valid UTF-8');
    }
  }
  let latin1 = '';
  for (let i = 0; i < bytes.length; i += CHUNK) {
    latin1 += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  try {
    return decodeURIComponent(escape(latin1));
  } catch (error) {
    if (error instanceof URIError) throw new SyntaxError('the body is not valid UTF-8');
    throw error;
  }
}

export function utf8Encode(text) {
  if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(text);
  const latin1 = unescape(encodeURIComponent(text));
  const out = new Uint8Array(latin1.length);
  for (let i = 0; i < latin1.length; i++) out[i] = latin1.charCodeAt(i);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function headerValue(headers, name) {
  for (const [key, value] of headers) {
    if (key === name) return utf8Decode(value);
  }
  return null;
}

function isJson(contentType) {
  if (contentType === null) return false;
  const essence = contentType.split(';')[0].trim().toLowerCase();
  return essence === 'application/json' || essence.endsWith('+json');
}

/**
 * Decides what to do with one response. Returns `{ skip: reason }` to leave it as it is
 * (`reason` is `null` when there is nothing worth logging), or `{ body, headers }` for
 * the wrapped response: `headers` are the response's own without `content-type`,
 * followed by `content-type: application/json`.
 *
 * `ctx` needs `requestId` and `route` (the WIT context record, camelCased).
 */
export function wrap(settings, resp, ctx) {
  if (!settings.wrapErrors && (resp.status < 200 || resp.status > 299)) return { skip: null };
  if (resp.status === 204 || resp.status === 304) return { skip: null };
  if (resp.body === null || resp.body === undefined) {
    return { skip: 'the response body is not buffered; set `body = { buffer = true }` on this stage' };
  }
  if (!isJson(headerValue(resp.headers, 'content-type')) || resp.body.length === 0) return { skip: null };
  // The upstream's bytes go into the envelope as they are (numbers beyond 2^53, key order
  // and escapes survive); parsing only checks that they are one JSON document.
  try {
    JSON.parse(utf8Decode(resp.body));
  } catch (error) {
    // Anything but a syntax error (out of memory, say) fails the stage: better a 500 than
    // a response in the wrong shape.
    if (!(error instanceof SyntaxError)) throw error;
    return { skip: `the upstream's JSON body does not parse (${error.message}); sent as it is` };
  }
  const meta = { request_id: ctx.requestId, route: ctx.route };
  for (const key of Object.keys(settings.meta)) meta[key] = settings.meta[key];
  const head = utf8Encode(`{${JSON.stringify(settings.dataKey)}:`);
  const tail = utf8Encode(`,${JSON.stringify(settings.metaKey)}:${JSON.stringify(meta)}}`);
  const headers = resp.headers.filter(([key]) => key !== 'content-type');
  headers.push(['content-type', utf8Encode('application/json')]);
  return { body: concat(head, resp.body, tail), headers };
}
