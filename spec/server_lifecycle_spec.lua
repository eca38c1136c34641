-- Signals and shutdown (listen.md §5), the pid file and log file with their locks and exit
-- codes, and running in the background (listen.md §1).
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local BODY_SIZE = 200000

local SLOW_APP = [[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, pre_fork=1, min_fork=2,
  connect = function(s)
    local line = s:read(100, "\n")
    io.stderr:write("working on ", line)
    moonbridge_io.poll(nil, nil, line == "slow\n" and 0.5 or 5)
    s:write(("x"):rep(]] .. BODY_SIZE .. [[))
    return true
  end,
  finish = function() io.stderr:write("finish in ", moonbridge_io.getpid(), "\n") end }
]]

describe("shutdown", function()
  it("SIGTERM: no new connections, the request in flight completes, finish runs, exit 0",
    function()
      local srv = H.start(SLOW_APP)
      local workers = assert(H.wait_workers(srv, 2))
      local c = assert(H.connect(srv))
      c:write("slow\n"):flush()
      assert.is_not_nil(H.wait_log(srv, "working on slow"))
      os.execute("kill -TERM " .. srv.pid)
      -- the listener is gone at once, although a busy worker still holds a copy of it
      local refused = H.wait_for(2, function()
        local h = mio.tcpconnect("127.0.0.1", srv.port)
        if h then h:close() end
        return h == nil
      end)
      local body, status = H.read_all(c, 5)
      c:close()
      -- no second SIGTERM (signal 0): after "Shutdown complete" the master has its default
      -- dispositions back, and one arriving then would end it with 143 instead of 0
      local code = H.stop(srv, "0")
      local log = H.log_text(srv)
      H.cleanup(srv)
      assert.is_true(refused, "still accepting after SIGTERM")
      assert.equal("eof", status)
      assert.equal(BODY_SIZE, #body)
      assert.equal(0, code, log)
      for _, p in ipairs(workers) do
        assert.matches("finish in " .. p, log)
      end
      assert.matches("Received SIGTERM: graceful shutdown", log)
      assert.matches("Shutdown complete", log)
      assert.same({}, srv.leftover)
    end)

  for _, sig in ipairs { "INT", "HUP" } do
    it("SIG" .. sig .. ": fast shutdown, workers killed, exit 0", function()
      local srv = H.start(SLOW_APP)
      local workers = assert(H.wait_workers(srv, 2))
      local c = assert(H.connect(srv))
      c:write("long\n"):flush()
      assert.is_not_nil(H.wait_log(srv, "working on long"))
      local t0 = mio.timeref()
      local code = H.stop(srv, sig, 3)
      local took = mio.timeref() - t0
      local body, status = H.read_all(c, 2)
      c:close()
      local log = H.log_text(srv)
      H.cleanup(srv)
      assert.equal(0, code, log)
      assert.is_true(took < 2, "fast shutdown took " .. took .. " s")
      assert.equal("", body)
      assert.not_equal("timeout", status)
      assert.not_matches("finish in", log)
      assert.matches("Received SIG" .. sig .. ": fast shutdown", log)
      assert.same({}, srv.leftover)
      assert.equal(2, #workers)
    end)
  end

  it("a second SIGTERM changes nothing; SIGINT during a graceful shutdown makes it fast",
    function()
      local srv = H.start(SLOW_APP)
      assert.is_not_nil(H.wait_workers(srv, 2))
      local c = assert(H.connect(srv))
      c:write("long\n"):flush()
      assert.is_not_nil(H.wait_log(srv, "working on long"))
      os.execute("kill -TERM " .. srv.pid)
      assert.is_not_nil(H.wait_log(srv, "Received SIGTERM"))
      os.execute("kill -TERM " .. srv.pid)
      H.sleep(0.2)
      assert.is_nil(H.read_file(srv.dir .. "/code")) -- still waiting for the busy worker
      local code = H.stop(srv, "INT", 3)
      c:close()
      H.cleanup(srv)
      assert.equal(0, code)
      assert.same({}, srv.leftover)
    end)
end)

describe("pid file", function()
  it("holds the master's PID, refuses a second instance (exit 2, naming the holder), and is removed at exit",
    function()
      local dir = H.tmpdir()
      local pidfile = dir .. "/mb.pid"
      local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end }
]], { args = { "-p", pidfile } })
      assert.is_not_nil(H.wait_log(srv, "Adding TCP listener"))
      assert.is_not_nil(H.wait_workers(srv, 2))
      assert.equal(srv.pid .. "\n", H.read_file(pidfile))
      local code, out = H.launch([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end }
]], { "-p", pidfile })
      assert.equal(2, code, out)
      assert.matches('PID file "' .. pidfile:gsub("%p", "%%%0") ..
        '" is locked by another process %(PID ' .. srv.pid .. '%): already running', out)
      assert.equal(srv.pid .. "\n", H.read_file(pidfile)) -- untouched
      assert.equal(0, H.stop(srv))
      assert.is_false(H.exists(pidfile))
      H.cleanup(srv)
      -- a stale pid file (no lock) is taken over
      H.write_file(pidfile, "99999\n")
      srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end }
]], { args = { "-p", pidfile } })
      assert.is_truthy(H.wait_for(5, function() return H.read_file(pidfile) == srv.pid .. "\n" end))
      -- the pid file is written before the listeners open: stop once the server serves
      assert.is_not_nil(H.wait_workers(srv, 2))
      assert.equal(0, H.stop(srv))
      H.cleanup(srv)
      os.execute("rm -rf " .. H.quote(dir))
    end)

  it("exits 3 when the pid file cannot be written", function()
    local code, out = H.launch([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end }
]], { "-p", "/nonexistent-dir/x.pid" })
    assert.equal(3, code, out)
    assert.matches('Could not write PID file "/nonexistent%-dir/x.pid": No such file or directory', out)
  end)
end)

describe("log file", function()
  it("receives the log lines; a second instance with the same log file exits 2", function()
    local dir = H.tmpdir()
    local logfile = dir .. "/server.log"
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  connect=function(s) io.stderr:write("to the log\n") return true end }
]], { args = { "-l", logfile } })
    local in_file = H.wait_for(5, function()
      return (H.read_file(logfile) or ""):match("Adding TCP listener")
    end)
    assert.is_not_nil(in_file)
    assert.is_not_nil(H.request(srv, nil))
    assert.is_truthy(H.wait_for(5, function()
      return (H.read_file(logfile) or ""):match("%[Pool #1, PID %d+%] to the log")
    end))
    local code, out = H.launch([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end }
]], { "-l", logfile })
    assert.equal(2, code, out)
    assert.matches("is locked by another process %(PID " .. srv.pid .. "%)", out)
    assert.equal(0, H.stop(srv))
    local text = H.read_file(logfile)
    assert.matches("\n%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d [%w+-]+: Shutdown complete\n$", text)
    assert.equal("", H.log_text(srv)) -- nothing on stderr
    H.cleanup(srv)
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

describe("-b (background)", function()
  it("detaches: the launcher exits 0, the daemon serves and stops by its pid file", function()
    local dir = H.tmpdir()
    local port = H.free_port()
    H.write_file(dir .. "/app.lua", string.format([[
listen{ {proto="tcp", host="127.0.0.1", port=%d},
  connect=function(s) s:write("daemon ", moonbridge_io.getpid(), "\n") return true end }
]], port))
    local code, out = H.run(string.format("%s -b -l %s -p %s %s", H.quote(H.launcher),
      H.quote(dir .. "/log"), H.quote(dir .. "/pid"), H.quote(dir .. "/app.lua")), 10)
    assert.equal(0, code, out)
    local pid = tonumber(H.wait_for(5, function()
      return (H.read_file(dir .. "/pid") or ""):match("^(%d+)\n$")
    end))
    finally(function()
      -- whatever failed, the daemon (not our child) must not outlive the spec
      if pid and H.alive(pid) then os.execute("kill -KILL " .. pid) end
      os.execute("rm -rf " .. H.quote(dir))
    end)
    assert.is_not_nil(pid, H.read_file(dir .. "/log"))
    local srv = { pid = pid, port = port, dir = dir, seen = {} }
    local reply = H.request(srv, nil, 5)
    assert.matches("^daemon %d+\n$", reply)
    -- the daemon (not the process that started it) holds the log file's lock
    local code2, out2 = H.launch("listen{ {proto='main'}, connect=function() end }",
      { "-l", dir .. "/log" })
    assert.equal(2, code2, out2)
    assert.matches("locked by another process %(PID " .. pid .. "%)", out2)
    local workers = H.workers(srv)
    os.execute("kill -TERM " .. pid)
    local gone = H.wait_for(5, function() return not H.alive(pid) end)
    assert.is_true(gone)
    for _, w in ipairs(workers) do assert.is_false(H.alive(w)) end
    assert.is_truthy(H.wait_for(2, function() return not H.exists(dir .. "/pid") end))
    assert.matches("Shutdown complete", H.read_file(dir .. "/log"))
  end)
end)

-- Issue 13 (objects used where they do not belong): what an application holds in the
-- master stays its own after the server ran (`moonbridge.run()` from plain Lua), and a
-- socket used after it was reset raises the closed-handle errors, plain strings.
describe("objects outside their place", function()
  it("the master's own handles work after run() returns; a reset socket raises plain errors",
    function()
      local dir = H.tmpdir()
      H.write_file(dir .. "/app.lua", [[
local mio = require "moonbridge_io"
local mb = require "moonbridge"
local l = assert(mio.tcplisten("127.0.0.1", 0))
local h = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
local a = assert(l:accept())
mb.listen{ { proto = "main" }, connect = function()
  -- the worker inherited the master's objects; using them there is the application's
  -- choice and works as anywhere
  io.stderr:write("in the worker: ", tostring(select(2, l:accept_nb())), "\n")
  return false
end }
mb.run()
local function try(f)
  local ok, a1, a2 = pcall(f)
  if ok then return "ok " .. tostring(a1) .. " " .. tostring(a2) end
  return "error " .. type(a1) .. " " .. tostring(a1)
end
print("accept_nb: " .. try(function() return l:accept_nb() end))
print("write: " .. try(function() return (h:write("x")) and "written" end))
print("flush+read: " .. try(function() h:flush(); return a:read(1) end))
a:reset()
print("write after reset: " .. try(function() return a:write("y") end))
print("read after reset: " .. try(function() return a:read(1) end))
print("peer after reset: " .. try(function() return h:read(1) end))
]])
      local code, out = H.run(H.lua .. " " .. H.quote(dir .. "/app.lua"), 20)
      assert.are.equal(0, code, out)
      assert.truthy(out:find("in the worker: No incoming connection pending", 1, true), out)
      assert.truthy(out:find("accept_nb: ok false No incoming connection pending", 1, true), out)
      assert.truthy(out:find("write: ok written nil", 1, true), out)
      assert.truthy(out:find("flush+read: ok x maxlen", 1, true), out)
      assert.truthy(out:find("write after reset: error string Attempt to write to a closed I/O handle", 1, true), out)
      assert.truthy(out:find("read after reset: error string Attempt to read from a closed I/O handle", 1, true), out)
      -- the peer of a reset connection: an I/O failure, nil and a message
      assert.truthy(out:find("peer after reset: ok nil Connection reset by peer", 1, true), out)
    end)

  it("a request's socket after the HTTP module reset its connection raises plain errors", function()
    local HH = require "spec.http_helper"
    local srv = HH.start([[
      local chunk = string.rep("x", 1024 * 1024)
      local function try(f)
        local ok, a = pcall(f)
        return ok and ("ok " .. tostring(a)) or ("error " .. type(a) .. " " .. tostring(a))
      end
      handler = function(request)
        request:send_status("200 OK")
        if request.path ~= "big" then request:send_data("ok") return true end
        local s = request.socket
        local sent = try(function() for _ = 1, 64 do request:send_data(chunk) end end)
        mark(table.concat({ sent, tostring(request.faulty),
          try(function() return s:write("x") end), try(function() return s:flush() end),
          try(function() return s:read(1) end), try(function() return s:read_nb() end),
          try(function() request:send_data("y") end), try(function() return s:close() end),
        }, "|"))
        return true
      end]], { workers = 1, max_workers = 1 })
    local sock = assert(H.connect(srv, 10))
    assert(sock:write("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert(sock:flush())
    assert.are.equal("HTTP/1.1 200", (sock:read(12)))
    sock:reset() -- unread data: the server's next send fails and it resets its side
    local line = HH.wait_for(10, function() return HH.calls(srv)[1] end)
    assert.is_not_nil(line, H.log_text(srv))
    local f = {}
    for item in (line .. "|"):gmatch("(.-)|") do f[#f + 1] = item end
    assert.matches("^error string Could not send data to client: ", f[1])
    assert.are.equal("true", f[2])
    assert.are.equal("error string Attempt to write to a closed I/O handle", f[3])
    assert.are.equal("error string Attempt to write to a closed I/O handle", f[4])
    assert.are.equal("error string Attempt to read from a closed I/O handle", f[5])
    assert.are.equal("error string Attempt to read from a closed I/O handle", f[6])
    assert.are.equal("error string Tried to use faulty request handle", f[7])
    assert.are.equal("error string Attempt to close a closed I/O handle", f[8])
    -- the worker lives on
    assert.are.equal(200, HH.exchange(srv, HH.get("/", "Connection: close\r\n")).status)
    assert.is_nil(H.log_text(srv):find("exited with code", 1, true), H.log_text(srv))
    H.stop_clean(srv)
  end)
end)
