-- Raw TCP echo server: every line a client sends comes back.
--   moonbridge examples/echo.lua        then: printf 'hello\nworld\n' | nc -N 127.0.0.1 8081
listen{
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT") or 8081) },
  pre_fork = 1, max_fork = 8,
  connect = function(socket)
    while true do
      local line, status = socket:read(4096, "\n")
      if not line then return false end -- I/O error: end this worker
      if #line > 0 then socket:write(line):flush() end
      if status == "eof" then break end
    end
    return true -- keep the worker for the next connection
  end,
}
