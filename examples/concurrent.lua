-- A concurrent pool: one worker process serves up to 1000 connections at once, each
-- handler in a coroutine of its own. A line-based echo with a greeting: a client that is
-- slow to send its line keeps only its own handler waiting.
--   moonbridge examples/concurrent.lua        then: nc 127.0.0.1 8082
-- The port can be changed with the environment variable PORT.
listen{
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 8082 },
  pre_fork = 1, min_fork = 1, max_fork = 4, concurrency = 1000,
  connect = function(socket)
    socket:write("hello from worker ", moonbridge_io.getpid(), "\n")
    socket:flush()
    timeout(60) -- this handler only
    while true do
      local line = socket:read(4096, "\n")
      if not line or line == "" or line == "quit\n" then break end
      socket:write(line)
      socket:flush()
    end
    return true
  end,
}
