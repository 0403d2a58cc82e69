-- wrk script: POST the signed order-created fixture with the headers WooCommerce sends.
-- BODY_FILE and HEADERS_FILE (one "Name: value" per line) are read from the environment.
-- bench/files.lua, from this script's folder, wherever wrk runs from.
local files = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "files.lua")

wrk.method = "POST"
wrk.path = os.getenv("TARGET_PATH") or "/"
wrk.body = files.read(os.getenv("BODY_FILE"))
for name, value in pairs(files.headers(os.getenv("HEADERS_FILE"))) do
  wrk.headers[name] = value
end

-- One machine-readable line after wrk's own report.
done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
