-- The examples of the README start and do what their comments say; -s logs statistics.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local ROOT = os.getenv("PWD") or "."

local function example(name, env)
  return H.start("", { command = env .. " " .. H.quote(H.launcher) .. " -s " ..
    H.quote(ROOT .. "/examples/" .. name) })
end

describe("examples", function()
  it("echo.lua echoes lines back", function()
    local srv = example("echo.lua", "PORT=$PORT")
    local h = assert(H.connect(srv))
    h:write("hello\nworld\n"):flush()
    h:finish()
    local reply, status = H.read_all(h)
    h:close()
    local log = H.stop_clean(srv)
    assert.equal("hello\nworld\n", reply)
    assert.equal("eof", status)
    -- -s: worker creation, pool counts and resource usage
    assert.matches("Created worker process %(PID %d+%) in pool #1", log)
    assert.matches("Pool #1: %d+ worker%(s%): %d+ starting, %d+ idle, %d+ busy", log)
    assert.matches("Resource usage of worker process %(PID %d+%) of pool #1: user time", log)
  end)

  it("unix_socket.lua greets and answers on a Unix socket", function()
    local dir = H.tmpdir()
    local path = dir .. "/example.sock"
    local srv = example("unix_socket.lua", "SOCKET=" .. H.quote(path))
    local h = H.wait_for(5, function() return mio.localconnect(path) end)
    assert.is_not_nil(h, H.log_text(srv))
    assert.matches("^hello from PID %d+\n$", H.read_line(h))
    h:write("ping\n"):flush()
    assert.equal("you said: ping\n", H.read_line(h))
    h:close()
    H.stop_clean(srv)
    assert.is_false(H.exists(path))
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("interval.lua fires every 2 seconds", function()
    local srv = example("interval.lua", "")
    local fired = H.wait_log(srv, 'interval "heartbeat" fired in PID %d+', 5)
    H.stop_clean(srv)
    assert.is_not_nil(fired)
  end)

  it("concurrent.lua serves many clients from one worker, each at its own pace", function()
    local srv = example("concurrent.lua", "PORT=$PORT")
    local clients, pids = {}, {}
    for i = 1, 50 do
      local h = assert(H.connect(srv))
      local greeting = assert(H.read_line(h))
      pids[greeting:match("^hello from worker (%d+)\n$")] = true
      clients[i] = h
    end
    -- all 50 are connected at once; answer them in reverse order
    for i = 50, 1, -1 do
      clients[i]:write("line " .. i .. "\n"):flush()
      assert.equal("line " .. i .. "\n", H.read_line(clients[i]))
      clients[i]:write("quit\n"):flush()
      clients[i]:close()
    end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equal(1, n, "one worker served them all")
    H.stop_clean(srv)
  end)

  -- An SSE client over a non-blocking socket (nothing here blocks): `pump` sends what is
  -- left of the request, reads what has arrived and parses the head, the chunks and the
  -- events (each must be exactly what sse.lua sends).
  local function sse_client(srv, extra)
    local h, err = mio.tcpconnect_nb("127.0.0.1", srv.port)
    if not h then return nil, err end
    local c = { h = h, raw = "", text = "", events = {} }
    c.unsent = h:flush_nb("GET /events HTTP/1.1\r\nHost: localhost\r\n", extra or "", "\r\n")
    if not c.unsent then return nil, "write failed" end
    c.unsent = c.unsent > 0
    return c
  end

  local function pump(c)
    if c.unsent then
      local left, err = c.h:flush_nb()
      if not left then return nil, "write error: " .. tostring(err) end
      c.unsent = left > 0
    end
    local data, status = c.h:read_nb()
    if not data then return nil, "read error: " .. tostring(status) end
    if status == "eof" then return nil, "the server closed the stream" end
    c.raw = c.raw .. data
    if not c.head then
      local head, rest = c.raw:match("^(.-\r\n)\r\n(.*)$")
      if not head then return true end -- not all there yet
      c.head, c.raw = head, rest
      if not (head:match("^HTTP/1%.1 200 OK\r\n")
          and head:match("\r\nContent%-Type: text/event%-stream\r\n")
          and head:match("\r\nCache%-Control: no%-cache\r\n")
          and head:match("\r\nTransfer%-Encoding: chunked\r\n")) then
        return nil, "bad head: " .. head
      end
    end
    while true do -- whole chunks to `text`
      local size, from = c.raw:match("^(%x+)\r\n()")
      local n = size and tonumber(size, 16)
      if not n or #c.raw < from + n + 1 then break end
      if n == 0 or c.raw:sub(from + n, from + n + 1) ~= "\r\n" then
        return nil, "bad chunk (or end of the stream) " .. string.format("%q", c.raw)
      end
      c.text = c.text .. c.raw:sub(from, from + n - 1)
      c.raw = c.raw:sub(from + n + 2)
    end
    while true do -- whole events from `text`
      local event, rest = c.text:match("^(.-)\n\n(.*)$")
      if not event then break end
      local id, pid, clients = event:match('^id: (%d+)\ndata: {"pid": (%d+), "clients": (%d+)}$')
      if not id then return nil, "bad event " .. string.format("%q", event) end
      c.events[#c.events + 1] = { id = tonumber(id), pid = tonumber(pid), clients = tonumber(clients) }
      c.text = rest
    end
    return true
  end

  -- Reads `c` until `done(c)` or `seconds` pass; true, or nil and why not.
  local function read_until(c, seconds, done)
    local deadline = mio.timeref() + seconds
    while true do
      local ok, err = pump(c)
      if not ok then return nil, err end
      if done(c) then return true end
      local left = deadline - mio.timeref()
      if left <= 0 then return nil, "timeout" end
      mio.poll({ [c.h] = true }, { [c.h] = c.unsent }, left)
    end
  end

  local function two_events(c) return #c.events >= 2 end

  it("sse.lua streams events to 2000 clients from one worker", function()
    local N = 2000
    local out = select(2, H.run("ulimit -n", 5))
    local limit = out:match("unlimited") and math.huge or tonumber(out:match("%d+")) or 0
    if limit < N + 100 then
      pending("needs a descriptor limit (ulimit -n) of " .. (N + 100) .. " for " .. N ..
        " clients in the spec and in the worker (have " .. limit .. ")")
      return
    end
    local srv = example("sse.lua", "INTERVAL=0.2 PORT=$PORT")
    assert(H.connect(srv, 10), "server did not start:\n" .. H.log_text(srv)):close()
    local worker = assert(H.wait_workers(srv, 1), "one worker")[1]
    local deadline = mio.timeref() + 20
    local clients, waiting, unsent = {}, {}, {}
    for i = 1, N do
      local c, err = sse_client(srv)
      assert(c, "client " .. i .. ": " .. tostring(err))
      clients[i], waiting[c.h], unsent[c.h] = c, c, c.unsent
    end
    -- read them all until each has two events
    local left = N
    while left > 0 do
      local wait = deadline - mio.timeref()
      assert(wait > 0, left .. " of " .. N .. " clients without two events in time\n" ..
        (H.read_file("/proc/" .. worker .. "/limits") or ""))
      mio.poll(waiting, unsent, wait)
      for h, c in pairs(waiting) do
        local ok, err = pump(c)
        assert(ok, err)
        unsent[h] = c.unsent or nil
        if two_events(c) then
          waiting[h], left = nil, left - 1
        end
      end
    end
    local most = 0
    for i, c in ipairs(clients) do
      for k, e in ipairs(c.events) do
        assert.equal(k, e.id, "client " .. i .. ": ids 1, 2, ...")
        assert.equal(worker, e.pid, "client " .. i .. ": the one worker")
        most = math.max(most, e.clients)
      end
    end
    assert.equal(N, most, "the worker counted every client at once")
    -- a plain request is answered while the streams go on
    local started = mio.timeref()
    local page = H.request(srv, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 2)
    assert.is_true(mio.timeref() - started < 2, "GET / took too long")
    assert.matches("^HTTP/1%.1 200 OK\r\n.*Content%-Type: text/html.*EventSource", page)
    -- a reconnecting client continues the numbering
    local again = assert(sse_client(srv, "Last-Event-ID: 41\r\n"))
    local got, why = read_until(again, 5, two_events)
    assert(got, "no events after Last-Event-ID: " .. tostring(why))
    assert.same({ 42, 43 }, { again.events[1].id, again.events[2].id })
    again.h:close()
    -- the clients go away; the worker notices (its counter goes back to 1) and serves on
    for _, c in ipairs(clients) do c.h:close() end
    local last = assert(sse_client(srv))
    local back, err = read_until(last, 10, function(c)
      return #c.events > 0 and c.events[#c.events].clients == 1
    end)
    assert(back, "the client counter did not go back to 1: " .. tostring(err))
    last.h:close()
    assert.matches("EventSource", H.request(srv, "GET / HTTP/1.0\r\n\r\n", 5))
    assert.same({ worker }, H.workers(srv))
    local log = H.stop_clean(srv)
    assert.not_matches("Error", log) -- clients that went away are nothing to report
  end)
end)
