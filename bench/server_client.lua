-- Load generator for bench/server.sh, written with moonbridge_io (no C, no HTTP).
--
--   lua5.4 bench/server_client.lua rate PORT SECONDS CONCURRENCY
--     keeps CONCURRENCY connections in flight for SECONDS; each connects, sends "ping\n" and
--     reads until the server closes; prints "<completed> <failed> <elapsed seconds>"
--   lua5.4 bench/server_client.lua latency PORT COUNT PAUSE
--     COUNT sequential connections, PAUSE seconds apart; the server answers with the
--     moonbridge_io.timeref() at which its handler started (a system-wide monotonic clock);
--     prints one "connect-to-handler" latency in seconds per line
local mio = require "moonbridge_io"

local mode, port = arg[1], tonumber(arg[2])

local function rate(seconds, concurrency)
  local conns = {} -- handle -> { sending = bool, got = {} }
  local done, failed = 0, 0
  local function open()
    local h = mio.tcpconnect_nb("127.0.0.1", port)
    if not h then
      failed = failed + 1
      return
    end
    h:write_nb("ping\n")
    conns[h] = { sending = true, got = {} }
  end
  local function finish(h, ok)
    conns[h] = nil
    h:close()
    if ok then done = done + 1 else failed = failed + 1 end
    open()
  end
  for _ = 1, concurrency do open() end
  local start = mio.timeref()
  local stop = start + seconds
  while mio.timeref() < stop do
    local readers, writers, list = {}, {}, {}
    for h in pairs(conns) do list[#list + 1] = h end -- finish() changes conns
    for _, h in ipairs(list) do
      local c = conns[h]
      if c.sending then
        local left = h:flush_nb()
        if left == nil then
          finish(h, false)
        elseif left == 0 then
          c.sending = false
          readers[h] = true
        else
          writers[h] = true
        end
      else
        readers[h] = true
      end
    end
    mio.poll(readers, writers, 0.5)
    list = {}
    for h in pairs(readers) do list[#list + 1] = h end
    for _, h in ipairs(list) do
      local c = conns[h]
      if c then
        local data, status = h:read_nb()
        if not data then
          finish(h, false)
        else
          c.got[#c.got + 1] = data
          if status == "eof" then finish(h, table.concat(c.got) == "ping\n") end
        end
      end
    end
  end
  local elapsed = mio.timeref() - start
  for h in pairs(conns) do h:close() end
  print(done, failed, elapsed)
end

local function latency(count, pause)
  for _ = 1, count do
    local t0 = mio.timeref()
    local h = assert(mio.tcpconnect("127.0.0.1", port))
    local reply = assert(h:read())
    h:close()
    print(tonumber(reply) - t0)
    mio.poll(nil, nil, pause)
  end
end

if mode == "rate" then
  rate(tonumber(arg[3]), tonumber(arg[4]))
elseif mode == "latency" then
  latency(tonumber(arg[3]), tonumber(arg[4]))
else
  io.stderr:write("usage: see the header of bench/server_client.lua\n")
  os.exit(1)
end
