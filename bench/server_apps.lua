-- Applications for bench/server.sh, chosen by the environment variable BENCH_APP:
--   echo:   a raw echo; one request per connection, the server closes (connect returns true,
--           so the worker stays for the next connection); two workers
--   fork:   answers the time its handler started, then ends its worker (connect returns
--           false); no spare workers (pre_fork = min_fork = 0), so every connection waits
--           for a fork
--   spare:  the same answer from a worker kept ready (the baseline for the fork latency)
local app = os.getenv("BENCH_APP")
local port = tonumber(os.getenv("BENCH_PORT"))
local mio = moonbridge_io

local function started(s)
  s:write(string.format("%.6f", mio.timeref()))
end

if app == "echo" then
  listen{ { proto = "tcp", host = "127.0.0.1", port = port },
    pre_fork = 2, min_fork = 2, max_fork = 2,
    connect = function(s)
      local line = s:read(100, "\n")
      if line then s:write(line) end
      return true
    end }
elseif app == "fork" then
  listen{ { proto = "tcp", host = "127.0.0.1", port = port },
    pre_fork = 0, min_fork = 0, max_fork = 4,
    connect = function(s)
      started(s)
      return false
    end }
elseif app == "spare" then
  listen{ { proto = "tcp", host = "127.0.0.1", port = port },
    pre_fork = 1, min_fork = 1, max_fork = 4,
    connect = function(s)
      started(s)
      return true
    end }
else
  error("BENCH_APP must be echo, fork or spare")
end
