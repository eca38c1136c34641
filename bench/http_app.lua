-- The application for bench/http.sh: "/" as examples/helloworld.lua, "/1m" a 1 MiB
-- response, "/post" reads the whole request body and answers with its length.
-- Env: PORT (default 8080); WORKERS (default 8) workers of a classic pool; CONCURRENCY
-- (default 1): above 1, one worker (pre_fork = min_fork = max_fork = 1) serving up to
-- CONCURRENCY connections at once, a concurrent pool (bench/concurrent.sh);
-- BUSY_HEADER_TIMEOUT: moonbridge_http's option of that name, seconds or "false" (default:
-- the module's); DEFER_ACCEPT=0: the listener without `defer_accept` (the floor and nginx
-- use TCP_DEFER_ACCEPT too).
local http = require "moonbridge_http"
local MiB = string.rep("0123456789abcdef", 65536)
local workers = tonumber(os.getenv("WORKERS")) or 8
local concurrency = tonumber(os.getenv("CONCURRENCY")) or 1
local busy = os.getenv("BUSY_HEADER_TIMEOUT")
local options = {}
if busy then options.busy_header_timeout = tonumber(busy) or false end

local pool = {
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 8080,
    defer_accept = os.getenv("DEFER_ACCEPT") ~= "0" },
  pre_fork = workers, min_fork = workers, max_fork = math.max(workers, 16),
  connect = http.generate_handler(function(request)
    local path = request.path
    local body = path == "post" and request.body -- read before the response starts
    request:send_status("200 OK")
    request:send_header("Content-Type", "text/plain; charset=UTF-8")
    if path == "1m" then
      request:send_data(MiB)
    elseif body then
      request:send_data(#body, "\n")
    else
      request:send_data("Hello World!\n")
    end
    return true
  end, options),
}
if concurrency > 1 then
  pool.pre_fork, pool.min_fork, pool.max_fork = 1, 1, 1
  pool.concurrency = concurrency
end
listen(pool)
