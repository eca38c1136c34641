-- The application for bench/hardening.sh: a classic pool whose requests can fail in every
-- way a handler can. Env: PORT; WORKERS (min_fork, default 4; max_fork is twice that); DIR
-- (where /stream writes the serving worker's PID, as DIR/stream.pid).
--   /          "Hello World!\n"
--   /error     the handler raises an error (500)
--   /exit      the handler calls os.exit(3) (the worker ends; the client sees the close)
--   /memory    the handler allocates past memory_limit (500, the worker survives)
--   /loop      the handler never returns (it set timeout(1): the worker is killed)
--   /stream    an endless response in 64 KiB pieces (until the script kills the worker)
--   /upload    reads the whole body and answers its length
local http = require "moonbridge_http"
local mio = require "moonbridge_io"
local workers = tonumber(os.getenv("WORKERS")) or 4
local dir = os.getenv("DIR") or "."
local piece = string.rep("x", 65536)

local handlers = {
  error = function() error("boom (a planned failure)") end,
  exit = function() os.exit(3) end,
  memory = function()
    local t = {}
    for i = 1, 1e9 do t[i] = string.rep("m", 1024) .. i end
  end,
  loop = function()
    timeout(1)
    while true do end
  end,
  stream = function(request)
    local f = assert(io.open(dir .. "/stream.pid", "w"))
    f:write(mio.getpid(), "\n")
    f:close()
    request:send_status("200 OK")
    while true do
      request:send_data(piece)
      request:flush()
      mio.poll(nil, nil, 0.01)
    end
  end,
  upload = function(request)
    local body = request.body
    request:send_status("200 OK")
    request:send_data(#body, "\n")
  end,
}

listen{
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT")) },
  pre_fork = 2, min_fork = workers, max_fork = workers * 2,
  memory_limit = 64 * 1024 * 1024,
  connect = http.generate_handler({ request_body_size_limit = 16 * 1024 * 1024 }, function(request)
    local h = handlers[request.path]
    if h then
      h(request)
    else
      request:send_status("200 OK")
      request:send_header("Content-Type", "text/plain")
      request:send_data("Hello World!\n")
    end
    return true
  end),
}
