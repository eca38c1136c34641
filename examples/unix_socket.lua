-- A server on a Unix domain socket (a stale socket file is replaced; removed at shutdown).
--   moonbridge examples/unix_socket.lua     then: nc -U /tmp/moonbridge-example.sock
local path = os.getenv("SOCKET") or "/tmp/moonbridge-example.sock"
listen{
  { proto = "local", path = path },
  connect = function(socket)
    socket:write("hello from PID ", moonbridge_io.getpid(), "\n"):flush()
    local line = socket:read(1024, "\n")
    if line then socket:write("you said: ", line) end
    return true
  end,
}
