-- What bench's wrk scripts read from the files bench/run writes: a whole file, and a headers file (one
-- "Name: value" per line) as a table of name to value (a name given twice keeps its last value).
-- post.lua and orders.lua load it with dofile from their own folder (wrk loads a script by the path it is
-- given, from wrk's working directory; bench/run gives bench/post.lua from the repository's root).
local files = {}

function files.read(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

function files.headers(path)
  local headers = {}
  for line in files.read(path):gmatch("[^\n]+") do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  return headers
end

return files
