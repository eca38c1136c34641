-- Client of bench/memory.sh: `lua5.x bench/keepalive_client.lua PORT N` sends N GET
-- requests to 127.0.0.1:PORT over one keep-alive connection, one at a time, reading each
-- response (head, then Content-Length bytes of body) before the next. Prints N; exits
-- non-zero on any failure.
local mio = require "moonbridge_io"
local port, n = tonumber(arg[1]), tonumber(arg[2])
local s = assert(mio.tcpconnect("127.0.0.1", port))
local request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
for i = 1, n do
  assert(s:write(request))
  assert(s:flush())
  local status = assert(s:read(nil, "\n"))
  if not status:find("^HTTP/1%.1 200 ") then error("request " .. i .. ": " .. status) end
  local length
  while true do
    local line = assert(s:read(nil, "\n"))
    if line == "\r\n" then break end
    local v = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
    if v then length = tonumber(v) end
  end
  if not length then error("request " .. i .. ": no Content-Length") end
  local body = assert(s:read(length))
  assert(#body == length, "short body")
end
s:close()
print(n)
