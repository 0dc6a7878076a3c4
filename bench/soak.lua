-- bench/soak.lua — the wrk script of bench/soak.sh: one wrk process per traffic flow, each
-- sending one kind of request for the whole soak and counting the answers by status.
--
--   wrk -t1 -cN -dD -s bench/soak.lua URL -- FLOW OUT EXPECTED DELAY_MS METHOD BODY_FILE [HEADER...]
--
--   FLOW       the flow's name, written into every line of OUT
--   OUT        file written when wrk is done: one line "FLOW<TAB>STATUS<TAB>COUNT" per status seen
--   EXPECTED   the statuses this flow may get, comma-separated ("200,429"); informational here,
--              bench/soak.sh classifies
--   DELAY_MS   pause before each request on a connection (0: closed loop, as fast as answered)
--   METHOD     GET, POST, ...
--   BODY_FILE  file holding the request body, or "-" for none
--   HEADER     "name: value", any number
--
-- A response that carries x-response-version and x-request-version (the fx-version-a/b reload
-- fixtures) is counted as "STATUS/vVERSION" (e.g. "200/vb") when both name the same version,
-- and as "mixed-version" when they differ (on-request and on-response ran on different plugin
-- versions), which soak.sh treats as unexpected.
--
-- wrk runs this script once per thread (init, request, response, delay) and once more for
-- setup and done; done reads each thread's tallies with thread:get.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Per thread (globals, so that done can read them with thread:get).
flow = nil
out_file = nil
expected = nil
statuses = {}
pause_ms = 0

local req

function init(args)
  flow = args[1]
  out_file = args[2]
  expected = args[3]
  pause_ms = tonumber(args[4]) or 0
  local method = args[5]
  local body = nil
  if args[6] and args[6] ~= "-" then
    local f = assert(io.open(args[6], "rb"))
    body = f:read("*a")
    f:close()
  end
  local headers = {}
  for i = 7, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    assert(name, "a header must look like 'name: value': " .. args[i])
    headers[name] = value
  end
  req = wrk.format(method, nil, headers, body)
end

function request()
  return req
end

function delay()
  return pause_ms
end

function response(status, headers, body)
  local key = status
  local answered, requested
  for name, value in pairs(headers) do
    local lower = string.lower(name)
    if lower == "x-response-version" then
      answered = value
    elseif lower == "x-request-version" then
      requested = value
    end
  end
  if answered and requested then
    if answered == requested then
      key = status .. "/v" .. answered
    else
      key = "mixed-version"
    end
  end
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local name, file = thread:get("flow"), thread:get("out_file")
    local counts = thread:get("statuses") or {}
    local f = assert(io.open(file, "a"))
    for status, n in pairs(counts) do
      f:write(string.format("%s\t%s\t%d\n", name, tostring(status), n))
    end
    f:close()
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d max_us=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.timeout))
end
