-- wrk script (run with -t1): POST each of a file of distinct signed order deliveries at most once, in the
-- file's order.
--
-- BODY_FILE     the fixture's body; each delivery is it with its own top-level "id"
-- HEADERS_FILE  the fixture's headers, one "Name: value" per line
-- ORDERS_FILE   one delivery a line: "ID DELIVERY_ID SIGNATURE" (signed by bench/run with the fixture's secret)
-- TARGET_PATH   the path to POST to
--
-- The file is read a line at a time as requests are sent, so it may hold hundreds of thousands of orders.
-- Two ways to end: once every delivery in the file has been answered, the thread stops and interrupts
-- wrk's own sleep (SIGINT, as Ctrl-C would), so wrk's duration is the time to send them all and have them
-- answered; or wrk's -d ends first (the sustained run), and then `sent` is less than `orders`. A connection
-- with nothing left to send sends an empty request (nothing) and waits. LuaJIT's ffi (wrk is built with
-- LuaJIT) gives the signal and the wall clock.
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

-- The headers that differ from one delivery to the next, written by request() itself.
local per_delivery = { ["content-length"] = true, ["x-wc-webhook-signature"] = true, ["x-wc-webhook-delivery-id"] = true }

function init(args)
  local body = files.read(os.getenv("BODY_FILE"))
  rest = assert(body:match('^{"id":%d+(,.*)$'), "the body must start with its id")
  local headers = {}
  for name, value in pairs(files.headers(os.getenv("HEADERS_FILE"))) do
    if not per_delivery[name:lower()] then headers[name] = value end
  end
  -- Without a body wrk.format writes no Content-Length and ends with the blank line; drop that, so the
  -- per-delivery headers and the body follow.
  head = wrk.format("POST", os.getenv("TARGET_PATH"), headers, nil):sub(1, -3)
  orders = 0
  for _ in io.lines(os.getenv("ORDERS_FILE")) do orders = orders + 1 end
  lines = io.open(os.getenv("ORDERS_FILE"), "r")
  sent, answered, non2xx, first_send_ms = 0, 0, 0, 0
  -- wrk asks for one request before it starts, only to check that it parses, and never sends that one.
  checked = false
end

local function delivery(line)
  local id, delivery_id, signature = line:match("^(%d+) (%S+) (%S+)$")
  local payload = '{"id":' .. id .. rest
  return head .. "Content-Length: " .. #payload .. "\r\nX-WC-Webhook-Signature: " .. signature
    .. "\r\nX-WC-Webhook-Delivery-ID: " .. delivery_id .. "\r\n\r\n" .. payload
end

function request()
  if not checked then
    checked = true
    local file = io.open(os.getenv("ORDERS_FILE"), "r")
    local first = file:read("*l")
    file:close()
    return delivery(first)
  end
  if sent == orders then return "" end
  if sent == 0 then first_send_ms = unix_ms() end
  sent = sent + 1
  return delivery(lines:read("*l"))
end

function response(status, headers, body)
  answered = answered + 1
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
  if answered == orders then
    wrk.thread:stop()
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

-- One machine-readable line after wrk's own report.
done = function(summary, latency, requests)
  local thread = threads[1]
  io.write(string.format("RESULT orders=%d sent=%d answered=%d non2xx=%d socket_errors=%d duration_us=%d first_send_unix_ms=%d p99_us=%d\n",
    thread:get("orders"), thread:get("sent"), thread:get("answered"), thread:get("non2xx"),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, thread:get("first_send_ms"), latency:percentile(99)))
end
