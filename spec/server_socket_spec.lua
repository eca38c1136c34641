-- Listener kinds and what a handler sees: IPv4, IPv6 (loopback and the dual-stack wildcard),
-- Unix sockets (stale file replaced, removed at shutdown), the socket object's fields, worker
-- stderr in the log, -d traces, globals, and `require "moonbridge"` from plain Lua.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local function ipv6_available()
  local l = mio.tcplisten("::1", 0)
  if l then l:close() end
  return l ~= nil
end

-- Reports the connection's address fields as a Lua table literal.
local FIELDS_HANDLER = [[
  connect = function(s)
    local function hex(b) return b and (b:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
    s:write(string.format("return {local_ip=%q, remote_ip=%q, local_tcpport=%s, remote_tcpport=%s, "
      .. "local_ip4=%q, remote_ip4=%q, local_ip6=%q, remote_ip6=%q, interval=%q}",
      tostring(s.local_ip), tostring(s.remote_ip), tostring(s.local_tcpport),
      tostring(s.remote_tcpport), tostring(hex(s.local_ip4)), tostring(hex(s.remote_ip4)),
      tostring(hex(s.local_ip6)), tostring(hex(s.remote_ip6)), tostring(s.interval)))
    return true
  end,
]]

local function fields(srv, host)
  local h = assert(H.connect(srv, 5, host))
  local my_port = h.local_tcpport
  local reply = H.read_all(h)
  h:close()
  local t = assert(load(reply))()
  return t, my_port
end

describe("TCP listeners", function()
  it("give the handler local/remote addresses as raw bytes, text and ports (IPv4)", function()
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, ]] .. FIELDS_HANDLER .. [[ }
]])
    local t, my_port = fields(srv, "127.0.0.1")
    H.stop_clean(srv)
    assert.same({
      local_ip = "127.0.0.1", remote_ip = "127.0.0.1",
      local_tcpport = srv.port, remote_tcpport = my_port,
      local_ip4 = "7f000001", remote_ip4 = "7f000001",
      local_ip6 = "nil", remote_ip6 = "nil", interval = "nil",
    }, t)
  end)

  it("serve IPv6 on ::1", function()
    if not ipv6_available() then
      pending("no IPv6 loopback on this machine")
      return
    end
    local srv = H.start([[
listen{ {proto="tcp", host="::1", port=$PORT}, ]] .. FIELDS_HANDLER .. [[ }
]])
    local t = fields(srv, "::1")
    H.stop_clean(srv)
    assert.equal("::1", t.local_ip)
    assert.equal("::1", t.remote_ip)
    assert.equal("00000000000000000000000000000001", t.local_ip6)
    assert.equal("nil", t.local_ip4)
  end)

  it("accept IPv4 and IPv6 on the dual-stack wildcard ::", function()
    if not ipv6_available() then
      pending("no IPv6 loopback on this machine")
      return
    end
    local srv = H.start([[
listen{ {proto="tcp", host="::", port=$PORT}, ]] .. FIELDS_HANDLER .. [[ }
]])
    local v6 = fields(srv, "::1")
    local v4 = fields(srv, "127.0.0.1")
    H.stop_clean(srv)
    assert.equal("::1", v6.remote_ip)
    -- an IPv4 client arrives as an IPv4-mapped address: both forms are available
    assert.equal("127.0.0.1", v4.remote_ip)
    assert.equal("7f000001", v4.remote_ip4)
    assert.equal("00000000000000000000ffff7f000001", v4.remote_ip6)
  end)

  it("default to host :: when none is given", function()
    local srv = H.start([[
listen{ {proto="tcp", port=$PORT}, connect=function(s) s:write("ok") return true end }
]])
    local reply = H.request(srv, nil, 5, "127.0.0.1")
    local log = H.stop_clean(srv)
    assert.equal("ok", reply)
    assert.matches('Adding TCP listener on interface "::", port ' .. srv.port, log)
  end)
end)

describe("local (Unix) listeners", function()
  it("replace a stale socket file, serve, and remove the file at shutdown", function()
    local dir = H.tmpdir()
    local path = dir .. "/app.sock"
    local stale = assert(mio.locallisten(path))
    stale:close() -- the file stays behind, like after a crash
    assert.equal("socket", H.file_type(path))
    local srv = H.start(string.format([[
listen{ {proto="local", path=%q},
  connect=function(s)
    s:write("unix ", tostring(s.local_ip), " ", tostring(s.remote_tcpport), "\n")
    return true
  end }
]], path))
    assert.is_not_nil(H.wait_log(srv, "Adding local socket listener"))
    local h = H.wait_for(5, function() return mio.localconnect(path) end)
    assert.is_not_nil(h, H.log_text(srv))
    local reply = H.read_all(h)
    h:close()
    assert.equal("unix nil nil\n", reply)
    assert.equal("socket", H.file_type(path))
    H.stop_clean(srv)
    assert.is_false(H.exists(path))
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

describe("worker output and traces", function()
  it("logs each line a worker writes to stderr as [Pool #N, PID P] line", function()
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, pre_fork=1, min_fork=1, max_fork=1,
  connect=function(s)
    io.stderr:write("first line\nsecond line\n")
    io.stderr:write(("L"):rep(10000), "\n")
    io.stderr:write("after the long one\n")
    io.stderr:write("unterminated")
    return false
  end }
]], { args = { "-d" } })
    assert.is_not_nil(H.request(srv, nil))
    local pid = H.wait_log(srv, "%[Pool #1, PID (%d+)%] first line")
    assert.is_not_nil(pid, H.log_text(srv))
    assert.is_not_nil(H.wait_log(srv, "%[Pool #1, PID " .. pid .. "%] unterminated\n"))
    local log = H.stop_clean(srv)
    local p = "%[Pool #1, PID " .. pid .. "%] "
    assert.matches(p .. "second line\n", log)
    assert.matches(p .. ("L"):rep(4000) .. " %[line truncated%]\n", log)
    assert.not_matches(("L"):rep(4001), log)
    assert.matches(p .. "after the long one\n", log)
    -- -d traces the control messages (connections need none: see src/server/board.rs)
    assert.matches("Worker process %(PID " .. pid .. "%) of pool #1: leaving", log)
    -- -d implies -s
    assert.matches("Created worker process %(PID " .. pid .. "%) in pool #1", log)
    assert.matches("Resource usage of worker process %(PID " .. pid .. "%) of pool #1: user time", log)
  end)
end)

describe("globals", function()
  it("listen is gone after loading and refused from handlers; timeout stays", function()
    local srv = H.start([[
local moonbridge = require "moonbridge"
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  connect=function(s)
    local ok, err = pcall(moonbridge.listen, { {proto="interval", delay=1}, connect=print })
    s:write(type(listen), " ", type(timeout), " ", tostring(ok), " ", err, "\n")
    return true
  end }
]])
    local reply = H.request(srv, nil)
    H.stop_clean(srv)
    assert.matches("^nil function false .*must not be called after the server started", reply)
  end)
end)

describe('require "moonbridge" from plain Lua', function()
  it("serves with moonbridge.listen and moonbridge.run, which returns 0 after SIGTERM", function()
    local srv = H.start([[
local moonbridge = require "moonbridge"
assert(listen == nil and timeout == nil)
moonbridge.listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  connect=function(s)
    s:write(string.format("plain %g %g\n", moonbridge.timeout(), moonbridge.timeout(3)))
    return true
  end }
local code = moonbridge.run()
io.stderr:write("run returned ", code, "\n")
os.exit(code)
]], { command = H.lua .. " $APP" })
    local reply = H.request(srv, nil)
    local log = H.stop_clean(srv)
    assert.equal("plain 0 0\n", reply)
    assert.matches("run returned 0\n", log)
  end)

  it("raises start-up errors from run()", function()
    local dir = H.tmpdir()
    local busy = assert(mio.tcplisten("127.0.0.1", 0))
    H.write_file(dir .. "/app.lua", string.format([[
local moonbridge = require "moonbridge"
local ok, err = pcall(moonbridge.run)
print("empty:", ok, err)
moonbridge.listen{ {proto="tcp", host="127.0.0.1", port=%d}, connect=print }
print("busy:", pcall(moonbridge.run))
]], busy.local_tcpport))
    local code, out = H.run(H.lua .. " " .. H.quote(dir .. "/app.lua"))
    busy:close()
    os.execute("rm -rf " .. H.quote(dir))
    assert.equal(0, code, out)
    assert.matches("empty:%s+false%s+.*No listener registered", out)
    assert.matches("busy:%s+false%s+Could not initialize listener #1 of pool #1: Address already in use", out)
  end)
end)
