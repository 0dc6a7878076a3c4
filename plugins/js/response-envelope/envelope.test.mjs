// Unit tests of envelope.js, natively: node --test plugins/js/response-envelope/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfig, utf8Decode, utf8Encode, wrap } from './envelope.js';

const enc = (text) => new TextEncoder().encode(text);
const json = (value) => enc(JSON.stringify(value));
const ctx = { requestId: 'r-1', route: 'users', clientIp: '127.0.0.1', params: [], vars: [] };
const response = (status, body, type = 'application/json') => ({
  status,
  headers: [['content-type', enc(type)], ['x-up', enc('1')]],
  body,
});

test('defaults', () => {
  assert.deepEqual(parseConfig('{}'), { dataKey: 'data', metaKey: 'meta', meta: {}, wrapErrors: false });
});

test('config errors name the field', () => {
  const cases = [
    ['{"data-key": 1}', '`data-key` must be a non-empty string, got a number'],
    ['{"meta-key": ""}', '`meta-key` must be a non-empty string'],
    ['{"data-key": "x", "meta-key": "x"}', 'must differ'],
    ['{"meta": []}', '`meta` must be a table, got a list'],
    ['{"meta": {"request_id": 1}}', '`meta.request_id` is reserved'],
    ['{"wrap-errors": "yes"}', '`wrap-errors` must be a boolean, got a string'],
    ['{"datakey": "d"}', 'unknown field `datakey`'],
    ['[1]', 'config must be a table'],
    ['{', 'not valid JSON'],
  ];
  for (const [config, needle] of cases) {
    assert.throws(() => parseConfig(config), (e) => e instanceof ConfigError && e.message.includes(needle), config);
  }
});

test('wraps a JSON response with the request id, route and static meta', () => {
  const settings = parseConfig('{"meta": {"version": "v2"}}');
  const out = wrap(settings, response(200, json({ id: 7 })), ctx);
  assert.deepEqual(JSON.parse(utf8Decode(out.body)), {
    data: { id: 7 },
    meta: { request_id: 'r-1', route: 'users', version: 'v2' },
  });
  assert.deepEqual(out.headers.map(([k, v]) => [k, utf8Decode(v)]), [['x-up', '1'], ['content-type', 'application/json']]);
});

test('the upstream bytes are kept as they are: big numbers, key order, escapes', () => {
  const body = enc('{"id": 12345678901234567890, "b": 1, "a": "\\u00e9"}');
  const out = wrap(parseConfig('{}'), response(200, body), ctx);
  assert.equal(
    utf8Decode(out.body),
    '{"data":{"id": 12345678901234567890, "b": 1, "a": "\\u00e9"},"meta":{"request_id":"r-1","route":"users"}}',
  );
});

test('leaves other responses alone', () => {
  assert.match(wrap(parseConfig('{}'), response(200, new Uint8Array([0x22, 0xff, 0x22])), ctx).skip, /UTF-8/);
  assert.equal(wrap(parseConfig('{}'), response(200, enc('')), ctx).skip, null);
  const settings = parseConfig('{}');
  assert.equal(wrap(settings, response(200, enc('hi'), 'text/plain'), ctx).skip, null);
  assert.equal(wrap(settings, response(404, json({})), ctx).skip, null);
  assert.equal(wrap(settings, response(204, enc('')), ctx).skip, null);
  assert.match(wrap(settings, response(200, undefined), ctx).skip, /not buffered/);
  assert.match(wrap(settings, response(200, enc('{nope')), ctx).skip, /does not parse/);
  assert.ok(wrap(parseConfig('{"wrap-errors": true}'), response(502, json({ e: 1 })), ctx).body);
});

test('the fallback UTF-8 codec (QuickJS has no TextEncoder/TextDecoder) matches them', () => {
  const saved = { TextEncoder: globalThis.TextEncoder, TextDecoder: globalThis.TextDecoder };
  const text = 'aé€😀';
  const bytes = new saved.TextEncoder().encode(text);
  try {
    delete globalThis.TextEncoder;
    delete globalThis.TextDecoder;
    assert.deepEqual([...utf8Encode(text)], [...bytes]);
    assert.equal(utf8Decode(bytes), text);
    const big = 'é'.repeat(100000);
    assert.equal(utf8Decode(utf8Encode(big)), big);
    assert.throws(() => utf8Decode(new Uint8Array([0xff])), /not valid UTF-8/);
  } finally {
    Object.assign(globalThis, saved);
  }
});
