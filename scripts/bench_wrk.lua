-- wrk script of scripts/bench.py: read-modify-write load with zipfian keys.
--
-- One operation is either a read (GET /kv/k) or an update, i.e. a read-modify-write:
-- GET /kv/k, then PUT /kv/k with a new value and the X-Context that GET returned.
-- An update counts as ONE operation; its latency runs from sending the GET to the
-- PUT's response.
--
-- wrk does not tell response() which connection answered, so the script needs ONE
-- connection per wrk thread (run wrk with -t C -c C): then a thread's requests and
-- responses strictly alternate and per-thread state is per-connection state.
--
-- Settings come from the environment (wrk passes no arguments to setup()):
--   BENCH_TARGETS        host:port,host:port,...  threads are spread round-robin
--   BENCH_KEYS           number of keys (key names: BENCH_KEY_PREFIX .. rank)
--   BENCH_KEY_PREFIX     default "k"
--   BENCH_VALUE_SIZE     bytes per written value
--   BENCH_READ_FRACTION  share of operations that are plain reads (0.5)
--   BENCH_ZIPF           zipfian constant (0.99); 0 picks keys uniformly
--   BENCH_SEED           random seed (each thread adds its index)
--   BENCH_PROTOCOL       "ringkv" (GET/PUT /kv/k with X-Context) or "etcd" (POST
--                        /v3/kv/range then /v3/kv/put on etcd's v3 JSON gateway, keys
--                        and values base64; a read is one range, an update range + put)
--   BENCH_RATE           operations a second for THIS connection (0: no pacing). Each
--                        operation starts on a schedule; one that is due late starts at
--                        once and the schedule restarts from it (closed loop: missed
--                        starts are not made up, so overload latency is understated)
-- done() prints one line "BENCH_RESULT {json}" with counts, status codes and latency
-- percentiles (microseconds) of operations, reads, updates, GETs and PUTs.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec_t")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

-- Latency histograms: bucket b holds latencies in [e^(b/SCALE), e^((b+1)/SCALE)) us,
-- i.e. 0.5% wide buckets; a percentile is reported as the bucket's geometric middle.
local SCALE = 200
local log, exp, floor = math.log, math.exp, math.floor
local function record(hist, us)
  if us < 1 then us = 1 end
  local b = floor(log(us) * SCALE)
  hist[b] = (hist[b] or 0) + 1
end

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

---------------------------------------------------------------- setup (main state)

local threads = {}
local addrs = nil

function setup(thread)
  if addrs == nil then
    addrs = {}
    for hostport in string.gmatch(env("BENCH_TARGETS", ""), "[^,]+") do
      local host, port = hostport:match("^(.*):(%d+)$")
      local found = wrk.lookup(host, port)
      assert(found and found[1], "cannot resolve " .. hostport)
      table.insert(addrs, found[1])
    end
  end
  local index = #threads
  if #addrs > 0 then
    thread.addr = addrs[(index % #addrs) + 1]
  end
  thread:set("thread_index", index)
  table.insert(threads, thread)
end

---------------------------------------------------------------- running (per thread)

local nkeys, prefix, value_size, read_fraction
local base_value
local writes = 0

-- per-thread results, read by done() through thread:get("results")
local ops, ops_read, ops_update, failed_ops = 0, 0, 0, 0
local hists = { op = {}, read = {}, update = {}, get = {}, put = {} }
local h_op, h_read, h_update, h_get, h_put =
  hists.op, hists.read, hists.update, hists.get, hists.put
local st_get, st_put = {}, {}

-- wrk's thread:get() crashes copying tables (script_copy_value in wrk 4.1), so the
-- results travel as one string, built on demand: done() runs after the threads have
-- stopped, and reading the global "results" calls this in the thread's own state.
local function serialize()
  local out = {
    string.format("count ops %d\ncount ops_read %d\ncount ops_update %d\n"
      .. "count failed_ops %d\n", ops, ops_read, ops_update, failed_ops)
  }
  for name, hist in pairs(hists) do
    for b, c in pairs(hist) do table.insert(out, string.format("h_%s %d %d\n", name, b, c)) end
  end
  for code, c in pairs(st_get) do table.insert(out, string.format("st_get %d %d\n", code, c)) end
  for code, c in pairs(st_put) do table.insert(out, string.format("st_put %d %d\n", code, c)) end
  return table.concat(out)
end
setmetatable(_G, { __index = function(_, name)
  if name == "results" then return serialize() end
  return nil
end })

-- current operation
local GET, PUT = 1, 2
local kind = GET
local key = nil
local is_update = false
local context = nil
local op_start, req_start = 0, 0

-- Zipfian ranks by rejection-inversion (Hoermann and Derflinger, "Rejection-inversion
-- to generate variates from monotone discrete distributions", 1996): exact, P(rank k)
-- proportional to k^-theta for k = 1..n, in O(1) memory and set-up, so a million keys
-- cost each wrk thread nothing before its first request (a CDF table would be n
-- doubles, built by every thread in turn while the first ones already load the target).
ffi.cdef [[
double log1p(double x);
double expm1(double x);
]]
local C = ffi.C
local function helper1(x) -- log1p(x) / x, continuous at 0
  if math.abs(x) > 1e-8 then return C.log1p(x) / x end
  return 1 - x * (0.5 - x * (1 / 3 - 0.25 * x))
end
local function helper2(x) -- expm1(x) / x, continuous at 0
  if math.abs(x) > 1e-8 then return C.expm1(x) / x end
  return 1 + x * 0.5 * (1 + x / 3 * (1 + 0.25 * x))
end

local zipf = nil -- { theta, n, h_x1, h_n, s } once init() has set it up

local function zipf_h(theta, x) return math.exp(-theta * log(x)) end
local function zipf_hint(theta, x) -- integral of h
  local lx = log(x)
  return helper2((1 - theta) * lx) * lx
end
local function zipf_hinv(theta, x) -- inverse of zipf_hint
  local t = x * (1 - theta)
  if t < -1 then t = -1 end
  return math.exp(helper1(t) * x)
end

local function zipf_setup(n, theta)
  return { theta = theta, n = n, h_x1 = zipf_hint(theta, 1.5) - 1,
           h_n = zipf_hint(theta, n + 0.5),
           s = 2 - zipf_hinv(theta, zipf_hint(theta, 2.5) - zipf_h(theta, 2)) }
end

local function zipf_rank(z) -- 1..n
  local theta = z.theta
  while true do
    local u = z.h_n + math.random() * (z.h_x1 - z.h_n)
    local x = zipf_hinv(theta, u)
    local k = floor(x + 0.5)
    if k < 1 then k = 1 elseif k > z.n then k = z.n end
    if k - x <= z.s or u >= zipf_hint(theta, k + 0.5) - zipf_h(theta, k) then return k end
  end
end

local function pick_key()
  if zipf == nil then
    return math.random(0, nkeys - 1)
  end
  return zipf_rank(zipf) - 1
end

function init(args)
  nkeys = tonumber(env("BENCH_KEYS", "100000"))
  prefix = env("BENCH_KEY_PREFIX", "k")
  value_size = tonumber(env("BENCH_VALUE_SIZE", "1024"))
  read_fraction = tonumber(env("BENCH_READ_FRACTION", "0.5"))
  local theta = tonumber(env("BENCH_ZIPF", "0.99"))
  local seed = tonumber(env("BENCH_SEED", "1"))
  math.randomseed(seed * 1000003 + (thread_index or 0) * 7919 + 17)
  for _ = 1, 10 do math.random() end
  if theta > 0 then zipf = zipf_setup(nkeys, theta) end
  base_value = string.rep("v", value_size)
end

local function new_value()
  writes = writes + 1
  if value_size < 24 then return base_value end
  -- a different value each write: thread and counter stamped at the front
  local stamp = string.format("%04d:%019d", thread_index or 0, writes)
  return stamp .. base_value:sub(#stamp + 1)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return B64:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local etcd = env("BENCH_PROTOCOL", "ringkv") == "etcd"
local json_headers = { ["Content-Type"] = "application/json" }
local etcd_value = nil  -- base64 of a value_size value, stamped per write
local function etcd_put(k)
  if etcd_value == nil then etcd_value = base64(base_value) end
  -- a different value each write: the stamp is made of base64 digits only
  local stamp = string.format("%04d%020d", thread_index or 0, writes)
  writes = writes + 1
  local v = stamp .. etcd_value:sub(#stamp + 1)
  return wrk.format("POST", "/v3/kv/put", json_headers,
    '{"key":"' .. base64(k) .. '","value":"' .. v .. '"}')
end

local get_headers = {}
function request()
  if kind == PUT then
    req_start = now_us()
    if etcd then return etcd_put(key) end
    local headers = { ["Content-Type"] = "application/octet-stream" }
    if context ~= nil and context ~= "" then headers["X-Context"] = context end
    return wrk.format("PUT", "/kv/" .. key, headers, new_value())
  end
  key = prefix .. pick_key()
  is_update = math.random() >= read_fraction
  op_start = now_us()
  req_start = op_start
  if etcd then
    return wrk.format("POST", "/v3/kv/range", json_headers, '{"key":"' .. base64(key) .. '"}')
  end
  return wrk.format("GET", "/kv/" .. key, get_headers)
end

-- Pacing: wrk calls delay() before each request when the script defines it.
local rate = tonumber(env("BENCH_RATE", "0")) or 0
if rate > 0 then
  local interval_us = 1e6 / rate
  local next_start = nil
  function delay()
    if kind == PUT then return 0 end -- the second half of an update goes at once
    local t = now_us()
    if next_start == nil then next_start = t + math.random() * interval_us end
    local wait = next_start - t
    if wait < 0 then
      next_start = t + interval_us -- late: start now, do not make up missed starts
      return 0
    end
    next_start = next_start + interval_us
    return floor(wait / 1000)
  end
end

local function bump(t, status)
  t[status] = (t[status] or 0) + 1
end

-- 2xx, 300 (siblings) and 404 (no live value) are answers; anything else failed
local function answered(status)
  return (status >= 200 and status < 300) or status == 300 or status == 404
end

function response(status, headers, body)
  local t = now_us()
  if kind == GET then
    record(h_get, t - req_start)
    bump(st_get, status)
    if not answered(status) then
      failed_ops = failed_ops + 1
      return
    end
    if is_update then
      context = headers["X-Context"] or headers["x-context"]
      kind = PUT
      return
    end
    record(h_read, t - op_start)
    record(h_op, t - op_start)
    ops = ops + 1
    ops_read = ops_read + 1
  else
    kind = GET
    record(h_put, t - req_start)
    bump(st_put, status)
    if not answered(status) then
      failed_ops = failed_ops + 1
      return
    end
    record(h_update, t - op_start)
    record(h_op, t - op_start)
    ops = ops + 1
    ops_update = ops_update + 1
  end
end

---------------------------------------------------------------- done (main state)

local function summarize(hist)
  local buckets, total = {}, 0
  for b, c in pairs(hist) do
    table.insert(buckets, b)
    total = total + c
  end
  table.sort(buckets)
  local out = { count = total }
  if total == 0 then return out end
  local wanted = { { "p50", 50 }, { "p90", 90 }, { "p99", 99 }, { "p999", 99.9 } }
  local seen, w = 0, 1
  local sum = 0
  for _, b in ipairs(buckets) do
    local c = hist[b]
    local mid = exp((b + 0.5) / SCALE)
    sum = sum + mid * c
    seen = seen + c
    while w <= #wanted and seen >= total * wanted[w][2] / 100 do
      out[wanted[w][1]] = mid
      w = w + 1
    end
  end
  out.min = exp(buckets[1] / SCALE)
  out.max = exp((buckets[#buckets] + 1) / SCALE)
  out.mean = sum / total
  return out
end

local function json(v)
  local t = type(v)
  if t == "table" then
    local parts = {}
    for k, x in pairs(v) do
      table.insert(parts, string.format("%q:%s", tostring(k), json(x)))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return string.format("%.17g", v)
  elseif t == "string" then
    return string.format("%q", v)
  elseif t == "boolean" then
    return tostring(v)
  end
  return "null"
end

function done(summary, latency, requests)
  local totals = { ops = 0, ops_read = 0, ops_update = 0, failed_ops = 0 }
  local hists = { op = {}, read = {}, update = {}, get = {}, put = {} }
  local status = { get = {}, put = {} }
  for _, thread in ipairs(threads) do
    local text = thread:get("results") or ""
    for kind, a, b in string.gmatch(text, "(%S+) (%S+) (%S+)\n") do
      if kind == "count" then
        totals[a] = totals[a] + tonumber(b)
      elseif kind == "st_get" or kind == "st_put" then
        local t = status[kind:sub(4)]
        local code = tonumber(a)
        t[code] = (t[code] or 0) + tonumber(b)
      else
        local h = hists[kind:sub(3)]
        local bucket = tonumber(a)
        h[bucket] = (h[bucket] or 0) + tonumber(b)
      end
    end
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    socket_errors = summary.errors,
    ops = totals.ops,
    ops_read = totals.ops_read,
    ops_update = totals.ops_update,
    failed_ops = totals.failed_ops,
    status = status,
    latency = {},
    http = {
      p50 = latency:percentile(50), p99 = latency:percentile(99),
      p999 = latency:percentile(99.9), mean = latency.mean, max = latency.max,
    },
  }
  for name, hist in pairs(hists) do result.latency[name] = summarize(hist) end
  io.write("BENCH_RESULT " .. json(result) .. "\n")
end
