-- wrk script (run with -t1): POST each of a file of distinct signed order deliveries exactly once, then stop.
--
-- BODY_FILE     the fixture's body; each delivery is it with its own top-level "id"
-- HEADERS_FILE  the fixture's headers, one "Name: value" per line
-- ORDERS_FILE   one delivery a line: "ID DELIVERY_ID SIGNATURE" (signed by bench/run with the fixture's secret)
-- TARGET_PATH   the path to POST to
--
-- A connection with nothing left to send sends an empty request (nothing) and waits. Once every delivery
-- has been answered, the thread stops and interrupts wrk's own sleep (SIGINT, as Ctrl-C would), so wrk's
-- duration is the time to send them all and have them answered rather than -d. LuaJIT's ffi (wrk is built
-- with LuaJIT) gives the signal and the wall clock.
local ffi = require("ffi")
ffi.cdef [[
  int kill(int pid, int sig);
  int getpid(void);
  struct timeval_ms { long seconds; long microseconds; };
  int gettimeofday(struct timeval_ms *tv, void *tz);
]]
local SIGINT = 2

-- bench/files.lua, from this script's folder, wherever wrk runs from.
local files = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "files.lua")

local function unix_ms()
  local now = ffi.new("struct timeval_ms")
  ffi.C.gettimeofday(now, nil)
  return tonumber(now.seconds) * 1000 + math.floor(tonumber(now.microseconds) / 1000)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  assert(#threads == 1, "bench/orders.lua sends each delivery once from one thread: run wrk with -t1")
end

function init(args)
  local body = files.read(os.getenv("BODY_FILE"))
  local rest = assert(body:match('^{"id":%d+(,.*)$'), "the body must start with its id")
  local headers = files.headers(os.getenv("HEADERS_FILE"))
  requests, sent, answered, non2xx, first_send_ms = {}, 0, 0, 0, 0
  for line in files.read(os.getenv("ORDERS_FILE")):gmatch("[^\n]+") do
    local id, delivery_id, signature = line:match("^(%d+) (%S+) (%S+)$")
    local these = {}
    for name, value in pairs(headers) do these[name] = value end
    these["X-WC-Webhook-Signature"] = signature
    these["X-WC-Webhook-Delivery-ID"] = delivery_id
    table.insert(requests, wrk.format("POST", os.getenv("TARGET_PATH"), these, '{"id":' .. id .. rest))
  end
  -- wrk asks for one request before it starts, only to check that it parses, and never sends that one.
  checked = false
end

function request()
  if not checked then
    checked = true
    return requests[1]
  end
  if sent == #requests then return "" end
  if sent == 0 then first_send_ms = unix_ms() end
  sent = sent + 1
  return requests[sent]
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if answered == #requests then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

-- One machine-readable line after wrk's own report.
done = function(summary, latency, requests)
  local thread = threads[1]
  io.write(string.format("RESULT sent=%d answered=%d non2xx=%d socket_errors=%d duration_us=%d first_send_unix_ms=%d\n",
    thread:get("sent"), thread:get("answered"), thread:get("non2xx"),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, thread:get("first_send_ms")))
end
