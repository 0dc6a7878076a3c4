// Unit tests of timing.ts, run by test/run.sh (which compiles it first and passes the
// module's path in SERVER_TIMING_MODULE).
import assert from 'node:assert/strict';
import { test } from 'node:test';

const t = await import(process.env.SERVER_TIMING_MODULE);

test('defaults', () => {
  assert.equal(t.configSummary('{}'), 'gateway||true|true');
  assert.equal(t.configSummary(' { } '), 'gateway||true|true');
});

test('every key', () => {
  assert.equal(
    t.configSummary('{"metric":"gw","timing-allow-origin":"*","request-header":false,"route-desc":false}'),
    'gw|*|false|false');
  assert.equal(t.configSummary('{"metric": "edge_1.total"}'), 'edge_1.total||true|true');
  assert.equal(t.configSummary('{"metric":"g\\u0077"}'), 'gw||true|true');
  assert.equal(
    t.configSummary('{"timing-allow-origin":"https://app.example.com, http://localhost:3000,null"}'),
    'gateway|https://app.example.com, http://localhost:3000,null|true|true');
});

test('unknown keys, duplicates and wrong types are refused', () => {
  assert.match(t.configError('{"metrics":"gw"}'), /unknown key `metrics` \(known keys: metric, /);
  assert.match(t.configError('{"metric":"a","metric":"b"}'), /`metric` is given twice/);
  assert.match(t.configError('{"metric":1}'), /`metric` must be a string, got a number/);
  assert.match(t.configError('{"metric":null}'), /`metric` must be a string, got null/);
  assert.match(t.configError('{"request-header":"yes"}'), /`request-header` must be true or false, got a string/);
  assert.match(t.configError('{"route-desc":[true]}'), /`route-desc` must be true or false, got a list/);
  assert.match(t.configError('{"timing-allow-origin":{"a":"b"}}'), /must be a string, got a table/);
});

test('metric names must be tokens', () => {
  assert.match(t.configError('{"metric":"my metric"}'), /`metric` must be an HTTP token .*got "my metric"/);
  assert.match(t.configError('{"metric":""}'), /`metric` must be an HTTP token/);
  assert.match(t.configError('{"metric":"a;dur=1"}'), /HTTP token/);
  assert.match(t.configError('{"metric":"caf\\u00e9"}'), /HTTP token/);
  assert.equal(t.isToken("!#$%&'*+-.^_`|~09azAZ"), true);
});

test('timing-allow-origin must be origins', () => {
  assert.match(t.configError('{"timing-allow-origin":"https://app.example.com/"}'), /"https:\/\/app.example.com\/" is not an origin/);
  assert.match(t.configError('{"timing-allow-origin":"app.example.com"}'), /is not an origin/);
  assert.match(t.configError('{"timing-allow-origin":" "}'), /must not be empty/);
  assert.match(t.configError('{"timing-allow-origin":"*,"}'), /"" is not an origin/);
  assert.match(t.configError('{"timing-allow-origin":"https://a\\r\\nx: y"}'), /is not an origin/);
});

test('malformed JSON is refused', () => {
  for (const bad of ['', '[]', '"gw"', '{', '{"metric"}', '{"metric":"gw",}', '{"metric":"gw"} x',
                     '{"metric":"gw}', '{"metric":"\\q"}', '{"request-header":tru}', "{'metric':'gw'}"]) {
    assert.notEqual(t.configError(bad), '', `accepted ${JSON.stringify(bad)}`);
  }
  assert.match(t.configError('{"metric":"gw" "x":1}'), /expected `,` or `}` at character 16/);
});

test('header values', () => {
  assert.equal(t.requestStart(1795408660337n), 't=1795408660337');
  assert.equal(t.serverTiming('gw', 12n, 'users'), 'gw;dur=12;desc="users"');
  assert.equal(t.serverTiming('gw', 0n, ''), 'gw;dur=0');
  assert.equal(t.serverTiming('gw', 3n, 'a"b\\c\nd'), 'gw;dur=3;desc="a\\"b\\\\cd"');
  assert.equal(t.quote(''), '""');
});

test('timestamps', () => {
  assert.equal(t.parseMillis('1795408660337'), 1795408660337n);
  assert.equal(t.parseMillis('0'), 0n);
  for (const bad of ['', '-1', '12a', ' 1', '1.5', '12345678901234567']) assert.equal(t.parseMillis(bad), -1n, bad);
  assert.equal(t.elapsed(100n, 142n), 42n);
  assert.equal(t.elapsed(142n, 100n), 0n);  // the clock went backwards
});
