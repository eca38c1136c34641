-- Clients for bench/hardening.sh, written with moonbridge_io; every mode bounds its time.
--
--   lua5.4 bench/hardening_client.lua flood PORT COUNT PARALLEL
--     COUNT HTTP/1.0 requests for "/", PARALLEL connections at a time (a new connection
--     each); checks that each got "HTTP/1.1 200" and "Hello World!\n" before the close.
--     Prints "ok N failed M first-error".
--   lua5.4 bench/hardening_client.lua pipeline PORT COUNT
--     COUNT requests written at once on one connection (the last with Connection: close);
--     prints "ok N failed M" (N responses read in order, each complete).
--   lua5.4 bench/hardening_client.lua normal PORT SECONDS
--     sequential requests (a new connection each) for SECONDS; prints "ok N failed M".
--   lua5.4 bench/hardening_client.lua uploads PORT COUNT MIB
--     COUNT uploads of MIB MiB each at once, paced (every connection gets 64 KiB each
--     20 ms); prints "ready" once every upload has started, then "ok N failed M" (answers
--     naming the right length).
--   lua5.4 bench/hardening_client.lua misuse COUNT
--     COUNT calls of moonbridge_io functions and methods with wrong arguments, on closed,
--     finished and live handles; prints "calls N errors E non-string S" (S: errors that
--     were not plain strings). A crash ends the process (the script sees its status).
--     Run it in an empty directory: local listeners made from the arguments go there.
local mio = require "moonbridge_io"

local mode, port = arg[1], tonumber(arg[2])
local HELLO = "Hello World!\n"

local function out(...)
  io.write(table.concat({ ... }, " "), "\n")
  io.flush()
end

-- Runs `start()` for up to `parallel` connections at a time until `count` were started;
-- each connection is {h = handle, send = bytes, got = {}}; `check(got)` decides success.
local function run_parallel(count, parallel, request, check, deadline)
  local live, started, ok, failed, first = {}, 0, 0, 0, nil
  local function fail(c, why)
    failed = failed + 1
    first = first or why
    live[c.h] = nil
    c.h:reset()
  end
  local function start()
    started = started + 1
    local h, err = mio.tcpconnect_nb("127.0.0.1", port)
    if not h then
      failed, first = failed + 1, first or tostring(err)
      return
    end
    h:write_nb(request)
    live[h] = { h = h, got = {} }
  end
  while (started < count or next(live)) and mio.timeref() < deadline do
    local n = 0
    for _ in pairs(live) do n = n + 1 end
    while started < count and n < parallel do
      start()
      n = n + 1
    end
    local inset, outset = {}, {}
    for h, c in pairs(live) do
      local left, err = h:flush_nb()
      if not left then
        fail(c, tostring(err))
      else
        if left > 0 then outset[h] = true end
        inset[h] = true
      end
    end
    mio.poll(inset, outset, 1)
    for h in pairs(inset) do
      local c = live[h]
      if c then
        local data, status = h:read_nb()
        if not data then
          fail(c, "read: " .. tostring(status))
        else
          c.got[#c.got + 1] = data
          if status == "eof" then
            live[h] = nil
            h:close()
            local text = table.concat(c.got)
            if check(text) then ok = ok + 1 else failed, first = failed + 1, first or ("bad answer: " .. text:sub(1, 60)) end
          end
        end
      end
    end
  end
  for _, c in pairs(live) do fail(c, "timed out") end
  return ok, failed + (count - started), first
end

local function hello_check(text)
  return text:find("^HTTP/1%.1 200 ") ~= nil and text:sub(-#HELLO) == HELLO
end

if mode == "flood" then
  local count, parallel = tonumber(arg[3]), tonumber(arg[4])
  local ok, failed, first = run_parallel(count, parallel, "GET / HTTP/1.0\r\n\r\n", hello_check,
    mio.timeref() + 300)
  out("ok", ok, "failed", failed, first or "")
elseif mode == "pipeline" then
  local count = tonumber(arg[3])
  local one = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
  local all = string.rep(one, count - 1) .. "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
  local ok, _, first = run_parallel(1, 1, all, function() return true end, mio.timeref() + 60)
  -- count the complete responses in the stream
  local h = assert(mio.tcpconnect("127.0.0.1", port))
  assert(h:write(all) and h:flush())
  local got = h:read() -- to EOF
  h:close()
  local n = 0
  for body in got:gmatch("HTTP/1%.1 200 OK\r\n.-\r\n\r\n(" .. HELLO:gsub("%p", "%%%0") .. ")") do
    if body == HELLO then n = n + 1 end
  end
  out("ok", n, "failed", count - n, ok == 1 and "" or tostring(first))
elseif mode == "normal" then
  local deadline = mio.timeref() + tonumber(arg[3])
  local ok, failed = 0, 0
  while mio.timeref() < deadline do
    local a, b = run_parallel(1, 1, "GET / HTTP/1.0\r\n\r\n", hello_check, mio.timeref() + 5)
    ok, failed = ok + a, failed + b
  end
  out("ok", ok, "failed", failed)
elseif mode == "uploads" then
  local count, mib = tonumber(arg[3]), tonumber(arg[4])
  local size = mib * 1024 * 1024
  local piece = string.rep("u", 65536)
  local conns = {}
  for i = 1, count do
    local h = assert(mio.tcpconnect("127.0.0.1", port))
    h:write("POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: ", size, "\r\n\r\n")
    conns[i] = { h = h, sent = 0, got = {} }
  end
  local deadline = mio.timeref() + 300
  local announced = false
  local pending = count
  while pending > 0 and mio.timeref() < deadline do
    local inset = {}
    for _, c in ipairs(conns) do
      if not c.done then
        if c.sent < size then
          local n = math.min(#piece, size - c.sent)
          c.h:write_nb(n == #piece and piece or piece:sub(1, n))
          c.sent = c.sent + n
        end
        c.h:flush_nb()
        inset[c.h] = true
      end
    end
    if not announced then out("ready") announced = true end
    mio.poll(inset, nil, 0.02)
    for _, c in ipairs(conns) do
      if not c.done and inset[c.h] then
        local data, status = c.h:read_nb()
        if not data then
          c.done, c.failed = true, true
        else
          c.got[#c.got + 1] = data
          if status == "eof" then c.done = true end
        end
        if c.done then pending = pending - 1 end
      end
    end
  end
  local ok = 0
  for _, c in ipairs(conns) do
    local text = table.concat(c.got)
    if c.done and not c.failed and text:find("^HTTP/1%.1 200 ") and text:find("\r\n\r\n" .. size .. "\n$") then
      ok = ok + 1
    end
    c.h:reset()
  end
  out("ok", ok, "failed", count - ok)
elseif mode == "misuse" then
  local count = tonumber(arg[2])
  math.randomseed(tonumber(os.getenv("SEED")) or 13)
  local listener = assert(mio.tcplisten("127.0.0.1", 0))
  local live = assert(mio.tcpconnect("127.0.0.1", listener.local_tcpport))
  local peer = assert(listener:accept())
  local closed = assert(mio.tcpconnect("127.0.0.1", listener.local_tcpport))
  closed:close()
  local finished = assert(mio.tcpconnect("127.0.0.1", listener.local_tcpport))
  finished:finish()
  local dead_listener = assert(mio.tcplisten("127.0.0.1", 0))
  dead_listener:close()
  local args = {
    nil, true, false, 0, -1, 1.5, 2 ^ 53, -2 ^ 63, 0 / 0, math.huge, "", "x", "\0",
    "127.0.0.1", "::1", "/", string.rep("a", 70000), {}, { 1, 2 }, { [{}] = true },
    function() end, coroutine.create(function() end), io.stdout, closed, finished,
    dead_listener, live, peer, listener,
  }
  local nargs = 29 -- #args is unreliable with the nil first
  local function pick() return args[math.random(nargs)] end
  -- TCP hosts that are never looked up in the DNS (traffic stays on loopback)
  local hosts = { nil, true, false, {}, print, closed, "127.0.0.1", "::1", "\0", 0 }
  local function pick_host() return hosts[math.random(10)] end
  -- functions that only ever return at once, whatever they get
  local functions = {}
  for name, f in pairs(mio) do
    if type(f) == "function" and name ~= "exec" and name ~= "catch_sigterm" then
      functions[#functions + 1] = { name, f }
    end
  end
  table.sort(functions, function(a, b) return a[1] < b[1] end)
  local handles = { closed, finished, dead_listener, live, peer, listener, mio.stdin, mio.stdout }
  -- methods of live handles that might wait are only called in their _nb form
  local function waits(name)
    return not (name:find("_nb$") or name == "close" or name == "reset" or name == "finish")
  end
  local calls, errors, bad = 0, 0, 0
  local function try(f, ...)
    calls = calls + 1
    local ok, err = pcall(f, ...)
    if not ok then
      errors = errors + 1
      if type(err) ~= "string" then bad = bad + 1 end
    end
  end
  for _ = 1, count do
    if math.random(2) == 1 then
      local name, f = table.unpack(functions[math.random(#functions)])
      if name == "poll" or name == "sleep" or name:find("yield") then
        try(f, pick(), pick(), 0)
      elseif name:find("^tcp") then
        try(f, pick_host(), math.random(2) == 1 and 0 or pick())
      elseif name:find("^local") then
        try(f, pick(), pick())
      else
        try(f, pick(), pick(), pick())
      end
    else
      local h = handles[math.random(#handles)]
      local meta = getmetatable(h)
      local index = type(meta) == "table" and meta.__index
      local names = {}
      if type(index) == "table" then
        for k, v in pairs(index) do
          if type(v) == "function" then names[#names + 1] = k end
        end
      end
      table.sort(names)
      local name = names[math.random(math.max(#names, 1))]
      local safe = h == closed or h == finished or h == dead_listener
      if name and (safe or not waits(name)) and name ~= "close" and name ~= "reset" then
        try(h[name], h, pick(), pick())
        try(h[name], pick(), pick())
      else
        try(function() return h[pick()] end)
      end
    end
  end
  out("calls", calls, "errors", errors, "non-string", bad)
else
  io.stderr:write("usage: see the head of bench/hardening_client.lua\n")
  os.exit(2)
end
