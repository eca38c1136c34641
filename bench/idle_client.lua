-- Holds many connections open to an HTTP server, for bench/concurrent.sh.
--
--   lua5.4 bench/idle_client.lua MODE PORT COUNT [HOLD=60] [OPEN_TIMEOUT=60]
--
-- MODE, per connection:
--   idle    sends one complete request (GET / HTTP/1.1), reads its response, then stays
--           open and idle (a keep-alive client between requests)
--   slow    sends an incomplete head ("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ") and stays
--   silent  connects and sends nothing
--
-- Connections are opened in batches of BATCH (env, default 200) with non-blocking calls,
-- all within OPEN_TIMEOUT seconds; a failed one is not tried again. Prints
-- "ready OPENED COUNT [first error]" on stdout once they are opened (OPENED < COUNT when
-- some failed or timed out), holds them for HOLD seconds or until SIGTERM, then prints
-- "open STILL_OPEN OPENED" (connections the server had not closed, reset or answered by
-- then) and exits. Needs COUNT + a few descriptors (`ulimit -n`).
local mio = require "moonbridge_io"

local mode, port, count = arg[1], tonumber(arg[2]), tonumber(arg[3])
local hold = tonumber(arg[4]) or 60
local open_timeout = tonumber(arg[5]) or 60
local batch = tonumber(os.getenv("BATCH")) or 200
local requests = {
  idle = "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
  slow = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ",
  silent = "",
}
if not (requests[mode] and port and count) then
  io.stderr:write("usage: lua bench/idle_client.lua idle|slow|silent PORT COUNT [HOLD] [OPEN_TIMEOUT]\n")
  os.exit(2)
end
local request = requests[mode]
mio.catch_sigterm()

local deadline = mio.timeref() + open_timeout
local conns, first_error = {}, nil

-- A complete response: a head and Content-Length bytes of body.
local function complete(buf)
  local head_end = buf:find("\r\n\r\n", 1, true)
  if not head_end then return false end
  local len = tonumber(buf:sub(1, head_end):lower():match("\ncontent%-length:%s*(%d+)")) or 0
  return #buf >= head_end + 3 + len
end

-- One batch: connect, send, (idle) read the response; every step non-blocking.
local function open_batch(n)
  local pending = {} -- handle -> { phase = "send" | "recv", buf = "" }
  -- a connection that failed: remembered as the first error (if it is), and reset
  local function drop(h, err)
    first_error = first_error or err
    pending[h] = nil
    h:reset()
  end
  for _ = 1, n do
    local h, err = mio.tcpconnect_nb("127.0.0.1", port)
    if not h then
      first_error = first_error or err
      return false
    end
    if request ~= "" then h:write(request) end
    pending[h] = { phase = "send", buf = "" }
  end
  while next(pending) do
    local inset, outset = {}, {}
    for h, st in pairs(pending) do
      if st.phase == "send" then
        local left, err = h:flush_nb()
        if not left then
          drop(h, err)
        elseif left == 0 and request ~= "" and mode == "idle" then
          st.phase = "recv"
        elseif left == 0 then
          -- slow: sent its part of a head; silent: sends nothing (on loopback the connect
          -- has finished by now; a refused one shows as not open at the end)
          pending[h] = nil
          conns[#conns + 1] = h
        else
          outset[h] = true
        end
      end
      if st.phase == "recv" then
        local data, status = h:read_nb()
        if not data then
          drop(h, status)
        else
          st.buf = st.buf .. data
          if complete(st.buf) then
            pending[h] = nil
            conns[#conns + 1] = h
          elseif status == "eof" then
            first_error = first_error or "server closed the connection before answering"
            pending[h] = nil
            h:close()
          else
            inset[h] = true
          end
        end
      end
    end
    if next(pending) then
      local left = deadline - mio.timeref()
      if left <= 0 then
        first_error = first_error or "timed out opening connections"
        for h in pairs(pending) do h:reset() end
        return false
      end
      mio.poll(inset, outset, left)
    end
  end
  return true
end

local tried = 0
while tried < count do
  local n = math.min(batch, count - tried)
  tried = tried + n
  if not open_batch(n) then break end
end
io.write("ready ", #conns, " ", count, first_error and (" " .. first_error) or "", "\n")
io.flush()

mio.poll(nil, nil, hold, true) -- until HOLD passes or SIGTERM arrives

-- Still open: no EOF, no reset and nothing sent by the server (e.g. a 408).
local open = 0
for _, h in ipairs(conns) do
  local data, status = h:read_nb()
  if data == "" and status == "block" then open = open + 1 end
end
io.write("open ", open, " ", #conns, "\n")
io.flush()
os.exit(0)
