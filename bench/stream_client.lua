-- Client of bench/stream_memory.sh: `lua5.x bench/stream_client.lua PORT get|post MIB`.
-- get: GET /stream?MIB and reads the response to its end (chunked), counting body bytes;
-- post: POST /upload with a Content-Length body of MIB MiB written in 64 KiB pieces, then
-- reads the response, whose body is the byte count the handler streamed. Prints the byte
-- count; exits non-zero on any failure or a wrong count. Reads and writes are bounded by
-- the socket's blocking calls; the calling script bounds the whole run.
local mio = require "moonbridge_io"
local port, mode, mib = tonumber(arg[1]), arg[2], tonumber(arg[3])
local total = mib * 1024 * 1024
local s = assert(mio.tcpconnect("127.0.0.1", port))

-- the head of a response: status line and the lower-cased fields
local function read_head()
  local status = assert(s:read(nil, "\n"))
  if not status:find("^HTTP/1%.1 200 ") then error("unexpected status: " .. status) end
  local fields = {}
  while true do
    local line = assert(s:read(nil, "\n"))
    if line == "\r\n" then return fields end
    local name, value = line:match("^([^:]+):%s*(.-)\r\n$")
    fields[name:lower()] = value
  end
end

-- a chunked body, counted and dropped piece by piece
local function count_chunked()
  local n = 0
  while true do
    local size = tonumber(assert(s:read(nil, "\n")):match("^(%x+)"), 16)
    if size == 0 then
      assert(s:read(nil, "\n")) -- the empty trailer
      return n
    end
    local left = size
    while left > 0 do
      local piece = assert(s:read(math.min(left, 65536)))
      if #piece == 0 then error("EOF in a chunk") end
      left = left - #piece
    end
    assert(s:read(2) == "\r\n", "chunk not terminated")
    n = n + size
  end
end

local got
if mode == "get" then
  assert(s:write("GET /stream?" .. mib .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
  assert(s:flush())
  local fields = read_head()
  if fields["transfer-encoding"] == "chunked" then
    got = count_chunked()
  else
    local length = assert(tonumber(fields["content-length"]), "no length")
    got = 0
    while got < length do
      local piece = assert(s:read(math.min(length - got, 65536)))
      if #piece == 0 then error("EOF in the body") end
      got = got + #piece
    end
  end
elseif mode == "post" then
  assert(s:write("POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " .. total ..
    "\r\nContent-Type: application/octet-stream\r\n\r\n"))
  local piece = string.rep("u", 65536)
  for _ = 1, total // 65536 do assert(s:write(piece)) end
  assert(s:flush())
  local fields = read_head()
  local length = assert(tonumber(fields["content-length"]), "no length")
  got = tonumber((assert(s:read(length))))
else
  error("mode: get or post")
end
s:close()
if got ~= total then error(string.format("%s: %d bytes instead of %d", mode, got, total)) end
print(got)
