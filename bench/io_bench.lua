-- Loopback throughput of moonbridge_io versus LuaSocket, on the interpreter running this.
--   lua5.4 bench/io_bench.lua [bulk_mib] [lines] [rounds]
-- For each library, a receiver (this process) listens on 127.0.0.1 and times reading
-- everything a sender process (started with io.popen) writes:
--   bulk:  bulk_mib MiB sent in 64 KiB writes, read in 64 KiB reads; the sender uses the
--          library under test too, so this measures both ends
--   lines: `lines` lines of 40 bytes, read one line at a time (terminator "\n"); the sender
--          is the same for both libraries (moonbridge_io, 64 KiB writes), so only the line
--          reading differs
-- Prints MiB/s and lines/s per library and the ratio moonbridge_io / LuaSocket.
local role = arg[1]
local CHUNK = 64 * 1024
local LINE = string.rep("x", 39) .. "\n"

local libs = {}

libs.moonbridge = {
  listen = function()
    local mio = require "moonbridge_io"
    local l = assert(mio.tcplisten("127.0.0.1", 0))
    return l, l.local_tcpport
  end,
  accept = function(l) return assert(l:accept()) end,
  connect = function(port)
    local mio = require "moonbridge_io"
    return assert(mio.tcpconnect("127.0.0.1", port))
  end,
  send = function(c, data, times)
    for _ = 1, times do assert(c:write(data)) end
    assert(c:close())
  end,
  read_bulk = function(c)
    local total = 0
    while true do
      local data, status = c:read(CHUNK)
      assert(data, status)
      total = total + #data
      if status == "eof" then return total end
    end
  end,
  read_lines = function(c)
    local n = 0
    while true do
      local line, status = c:read(nil, "\n")
      if status ~= "term" then -- checked once, at the end, like LuaSocket's `err` below
        assert(line, status)
        return n
      end
      n = n + 1
    end
  end,
}

libs.luasocket = {
  listen = function()
    local socket = require "socket"
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    return l, tonumber(port)
  end,
  accept = function(l) return assert(l:accept()) end,
  connect = function(port)
    local socket = require "socket"
    return assert(socket.connect("127.0.0.1", port))
  end,
  send = function(c, data, times)
    for _ = 1, times do assert(c:send(data)) end
    c:close()
  end,
  read_bulk = function(c)
    local total = 0
    while true do
      local data, err, partial = c:receive(CHUNK)
      if not data then
        assert(err == "closed", err)
        return total + #partial
      end
      total = total + #data
    end
  end,
  read_lines = function(c)
    local n = 0
    while true do
      local line, err = c:receive("*l")
      if not line then
        assert(err == "closed", err)
        return n
      end
      n = n + 1
    end
  end,
}

if role == "send" then
  -- sender: lua io_bench.lua send <lib> <port> <bulk|lines> <count>
  local lib, port, what, count = libs[arg[2]], tonumber(arg[3]), arg[4], tonumber(arg[5])
  local c = lib.connect(port)
  if what == "bulk" then
    lib.send(c, string.rep("b", CHUNK), count)
  else
    -- batch lines into 64 KiB writes so the sender is not the bottleneck
    local per = CHUNK // #LINE
    local block = string.rep(LINE, per)
    local full, rest = count // per, count % per
    lib.send(c, block, full)
    if rest > 0 then
      local c2 = lib.connect(port) -- (not reached with the default counts)
      lib.send(c2, string.rep(LINE, rest), 1)
    end
  end
  os.exit(0)
end

local clock = function()
  local ok, mio = pcall(require, "moonbridge_io")
  if ok and mio.timeref then return mio.timeref() end
  return os.clock()
end

local bulk_mib = tonumber(arg[1]) or 1024
local lines = tonumber(arg[2]) or 1000000
lines = lines - lines % (CHUNK // #LINE) -- whole sender blocks

local function run(libname, what, count, expect)
  local lib = libs[libname]
  local l, port = lib.listen()
  local interp = arg[-1]
  local sender_lib = what == "bulk" and libname or "moonbridge"
  local sender = io.popen(string.format("%s %q send %s %d %s %d", interp, arg[0], sender_lib, port, what, count), "r")
  local c = lib.accept(l)
  local t0, c0 = clock(), os.clock()
  local got = what == "bulk" and lib.read_bulk(c) or lib.read_lines(c)
  local dt = clock() - t0
  if os.getenv("BENCH_CPU") then
    io.stderr:write(string.format("%s %s: wall %.3f s, receiver cpu %.3f s\n", libname, what, dt, os.clock() - c0))
  end
  sender:close()
  assert(got == expect, string.format("%s %s: got %d, expected %d", libname, what, got, expect))
  return got / dt
end

-- Rounds alternate the libraries, so a change in machine load hits both alike; the table
-- shows medians, and the ratio is the median of the per-round ratios.
local rounds = tonumber(arg[3]) or 5
local samples = { moonbridge = { bulk = {}, lines = {} }, luasocket = { bulk = {}, lines = {} } }
local ratios = { bulk = {}, lines = {} }
for _ = 1, rounds do
  for _, what in ipairs { "bulk", "lines" } do
    local r = {}
    for _, libname in ipairs { "moonbridge", "luasocket" } do
      if what == "bulk" then
        r[libname] = run(libname, "bulk", bulk_mib * 16, bulk_mib * 1024 * 1024) / (1024 * 1024)
      else
        r[libname] = run(libname, "lines", lines, lines)
      end
      table.insert(samples[libname][what], r[libname])
    end
    table.insert(ratios[what], r.moonbridge / r.luasocket)
  end
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

local m, s = samples.moonbridge, samples.luasocket
print(string.format("%s, %d MiB bulk, %d lines, median of %d rounds", _VERSION, bulk_mib, lines, rounds))
print("| test | moonbridge_io | LuaSocket | ratio |")
print("|---|---|---|---|")
print(string.format("| bulk, 64 KiB reads | %.0f MiB/s | %.0f MiB/s | %.2f |",
  median(m.bulk), median(s.bulk), median(ratios.bulk)))
print(string.format("| lines, read(nil, \"\\n\") vs receive(\"*l\") | %.0f lines/s | %.0f lines/s | %.2f |",
  median(m.lines), median(s.lines), median(ratios.lines)))
