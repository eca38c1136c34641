-- moonbridge_io networking: tcpconnect(_nb), localconnect(_nb), tcplisten, locallisten and
-- listener objects, over 127.0.0.1, ::1 and Unix sockets in a temporary directory.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

-- A fresh private directory for socket files; removed by `cleanup`.
local function tempdir()
  local dir = helper.tmpname(".d")
  assert(os.execute("mkdir -m 700 '" .. dir .. "'"))
  return dir
end

local function cleanup(dir, ...)
  for _, name in ipairs { ... } do os.remove(dir .. "/" .. name) end
  os.remove(dir)
end

-- Sleeps briefly (the module has no sleep; a child process is the portable way).
local function sleep(seconds)
  assert(os.execute("sleep " .. seconds))
end

local spawn = helper.spawn

-- Open descriptors of this process. A listing may briefly include the write end of its own
-- popen pipe (the parent closes it only after the child started), so the count is the
-- smallest of three listings; a real leak shows in all of them. Garbage is collected first,
-- so that handles of earlier tests do not close in between.
local function fd_count()
  collectgarbage()
  collectgarbage()
  local stat = assert(io.open("/proc/self/stat"))
  local pid = stat:read("n")
  stat:close()
  local least = math.huge
  for _ = 1, 3 do
    local p = io.popen("ls /proc/" .. pid .. "/fd")
    local n = 0
    for _ in p:lines() do n = n + 1 end
    p:close()
    least = math.min(least, n - 1) -- minus the read end of the pipe itself
  end
  return least
end

local function is_socket(path)
  return os.execute("test -S '" .. path .. "'") == true
end

-- A port nothing listens on: listen on port 0, note the port, close.
local function free_port(host)
  local l = assert(mio.tcplisten(host or "127.0.0.1", 0))
  local port = l.local_tcpport
  l:close()
  return port
end

-- Sends a line each way and checks both arrive.
local function exchange(a, b)
  assert.equals(a, a:write("ping\n"))
  assert.equals(a, a:flush())
  assert.same({ "ping\n", "term" }, { b:read(nil, "\n") })
  b:flush("pong\n")
  assert.same({ "pong\n", "term" }, { a:read(nil, "\n") })
end

describe("moonbridge_io networking", function()
  it("exports every connect and listen function of the manual", function()
    for _, name in ipairs { "tcpconnect", "tcpconnect_nb", "localconnect", "localconnect_nb",
      "tcplisten", "locallisten" } do
      assert.is_function(mio[name], name)
    end
  end)

  describe("tcplisten", function()
    it("listens on port 0 and reports the real port and address", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      assert.matches("^moonbridge_io listener %(tcp, 127%.0%.0%.1:%d+%)$", tostring(l))
      assert.is_true(l.local_tcpport > 0)
      assert.equals("127.0.0.1", l.local_ip)
      assert.equals("\127\0\0\1", l.local_ip4)
      assert.is_nil(l.local_ip6)
      assert.is_nil(l.remote_tcpport)
      for _, m in ipairs { "accept", "accept_nb", "close" } do assert.is_function(l[m], m) end
      assert.is_true(l:close())
    end)

    it("listens on ::1 with a 16-byte local_ip6", function()
      local l = assert(mio.tcplisten("::1", 0))
      assert.equals("::1", l.local_ip)
      assert.equals(("\0"):rep(15) .. "\1", l.local_ip6)
      assert.is_nil(l.local_ip4)
      l:close()
    end)

    it("accept_nb returns false and a notice when nothing is pending", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      assert.same({ false, "No incoming connection pending" }, { l:accept_nb() })
      l:close()
    end)

    it("accept_nb returns a pending connection", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local c = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
      local s
      for _ = 1, 500 do -- the handshake may finish a moment after connect returned
        s = l:accept_nb()
        if s then break end
        sleep(0.01)
      end
      assert.is_userdata(s)
      exchange(c, s)
      c:close(); s:close(); l:close()
    end)

    it("fails with a message when the port is taken", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local l2, err = mio.tcplisten("127.0.0.1", l.local_tcpport)
      assert.is_nil(l2)
      assert.equals("Address already in use", err)
      l:close()
    end)

    it("accepts IPv4 clients on the dual-stack wildcard ::", function()
      local l = assert(mio.tcplisten("::", 0))
      local c = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
      local s = assert(l:accept())
      assert.equals("127.0.0.1", s.remote_ip)
      assert.equals("\127\0\0\1", s.remote_ip4)
      assert.equals(c.local_tcpport, s.remote_tcpport)
      exchange(c, s)
      c:close(); s:close(); l:close()
    end)

    it("takes the port as a service name or numeric string", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local c = assert(mio.tcpconnect("localhost", tostring(l.local_tcpport)))
      local s = assert(l:accept())
      exchange(c, s)
      c:close(); s:close(); l:close()
      local none, err = mio.tcplisten("127.0.0.1", "no-such-service")
      assert.is_nil(none)
      assert.is_string(err)
    end)

    it("blocks in accept until a client connects", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local child, script = spawn([[
        local mio = require "moonbridge_io"
        io.write("ready\n"); io.flush()
        os.execute("sleep 0.2")
        local h = assert(mio.tcpconnect("127.0.0.1", tonumber(arg[1])))
        h:flush("hello from the child\n")
        h:read()
        h:close()
      ]], l.local_tcpport)
      assert.equals("ready", child:read("l"))
      local t0 = mio.timeref and mio.timeref() or os.time()
      local s = assert(l:accept())
      if mio.timeref then assert.is_true(mio.timeref() - t0 > 0.1) end
      assert.same({ "hello from the child\n", "term" }, { s:read(nil, "\n") })
      s:close()
      assert.is_true(child:close())
      os.remove(script)
      l:close()
    end)
  end)

  describe("tcpconnect", function()
    for _, host in ipairs { "127.0.0.1", "::1" } do
      it("connects over " .. host .. " with address fields on both ends", function()
        local l = assert(mio.tcplisten(host, 0))
        local port = l.local_tcpport
        local c = assert(mio.tcpconnect(host, port))
        local s = assert(l:accept())
        assert.matches("moonbridge_io handle %(tcp", tostring(c))
        assert.equals(port, c.remote_tcpport)
        assert.equals(port, s.local_tcpport)
        assert.equals(c.local_tcpport, s.remote_tcpport)
        assert.equals(host, c.remote_ip)
        assert.equals(host, c.local_ip)
        assert.equals(host, s.remote_ip)
        if host == "::1" then
          local raw = ("\0"):rep(15) .. "\1"
          assert.equals(raw, c.remote_ip6)
          assert.equals(raw, s.local_ip6)
          assert.is_nil(c.remote_ip4)
        else
          assert.equals("\127\0\0\1", c.remote_ip4)
          assert.equals("\127\0\0\1", s.remote_ip4)
          assert.is_nil(c.local_ip6)
        end
        exchange(c, s)
        assert.is_true(c:close())
        assert.same({ "", "eof" }, { s:read() })
        assert.is_true(s:close())
        l:close()
      end)
    end

    it("returns nil and the reason when the connection is refused", function()
      local h, err = mio.tcpconnect("127.0.0.1", free_port())
      assert.is_nil(h)
      assert.equals("Connection refused", err)
    end)

    it("returns nil and a message for a host that does not resolve", function()
      for _, host in ipairs { "nonexistent.invalid", "a\0b", "" } do
        local h, err = mio.tcpconnect(host, 80)
        assert.is_nil(h)
        assert.is_string(err)
        assert.is_true(#err > 0)
      end
      local h, err = mio.tcpconnect("127.0.0.1", "no-such-service")
      assert.is_nil(h)
      assert.is_string(err)
    end)
  end)

  describe("tcpconnect_nb", function()
    it("returns a handle at once that works after the handshake", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local c = assert(mio.tcpconnect_nb("127.0.0.1", l.local_tcpport))
      assert.equals(l.local_tcpport, c.remote_tcpport)
      c:write("early")                   -- buffered while the handshake may still run
      assert.equals(c, c:flush("\n"))    -- waits for the connection, then sends
      local s = assert(l:accept())
      assert.same({ "early\n", "term" }, { s:read(nil, "\n") })
      exchange(s, c)
      c:close(); s:close(); l:close()
    end)

    it("reports a refused connection on the first read, then the sticky error", function()
      local c, err = mio.tcpconnect_nb("127.0.0.1", free_port())
      if c then
        assert.same({ nil, "Connection refused" }, { c:read() })
        assert.same({ nil, "Previous read error" }, { c:read() })
        assert.is_true(c:close())
      else
        assert.equals("Connection refused", err)
      end
    end)

    it("reports a refused connection on the first flush", function()
      local c, err = mio.tcpconnect_nb("127.0.0.1", free_port())
      if c then
        assert.equals(c, c:write("buffered"))
        assert.same({ nil, "Connection refused" }, { c:flush() })
        assert.same({ nil, "Previous write error" }, { c:flush("more") })
        c:close()
      else
        assert.equals("Connection refused", err)
      end
    end)

    it("returns nil and a message for a host that does not resolve", function()
      local h, err = mio.tcpconnect_nb("nonexistent.invalid", 80)
      assert.is_nil(h)
      assert.is_string(err)
    end)
  end)

  describe("locallisten and localconnect", function()
    it("connect, exchange data and report no TCP address fields", function()
      local dir = tempdir()
      local path = dir .. "/s"
      local l = assert(mio.locallisten(path))
      assert.equals("moonbridge_io listener (local, " .. path .. ")", tostring(l))
      assert.is_nil(l.local_tcpport)
      assert.is_true(is_socket(path))
      for _, connect in ipairs { mio.localconnect, mio.localconnect_nb } do
        local c = assert(connect(path))
        local s = assert(l:accept())
        assert.matches("moonbridge_io handle %(local", tostring(c))
        assert.is_nil(c.remote_tcpport)
        assert.is_nil(s.local_ip)
        exchange(c, s)
        assert.is_true(c:close())
        assert.same({ "", "eof" }, { s:read() })
        s:close()
      end
      assert.is_true(l:close())
      assert.is_true(is_socket(path), "close must not unlink the socket file")
      cleanup(dir, "s")
    end)

    it("replaces a stale socket file", function()
      local dir = tempdir()
      local path = dir .. "/s"
      assert(mio.locallisten(path)):close()
      assert.is_true(is_socket(path))
      local l = assert(mio.locallisten(path))
      local c = assert(mio.localconnect(path))
      local s = assert(l:accept())
      exchange(c, s)
      c:close(); s:close(); l:close()
      cleanup(dir, "s")
    end)

    it("refuses to replace a file that is not a socket, leaving it untouched", function()
      local dir = tempdir()
      local path = dir .. "/precious"
      local f = assert(io.open(path, "w"))
      f:write("keep me")
      f:close()
      local l, err = mio.locallisten(path)
      assert.is_nil(l)
      assert.equals("File exists and is not a socket", err)
      f = assert(io.open(path))
      assert.equals("keep me", f:read("a"))
      f:close()
      cleanup(dir, "precious")
    end)

    it("return nil and a message without leaking a descriptor", function()
      local dir = tempdir()
      local before = fd_count()
      for _, connect in ipairs { mio.localconnect, mio.localconnect_nb } do
        assert.same({ nil, "No such file or directory" }, { connect(dir .. "/missing") })
      end
      -- a socket file nobody listens on
      assert(mio.locallisten(dir .. "/s")):close()
      for _, connect in ipairs { mio.localconnect, mio.localconnect_nb } do
        assert.same({ nil, "Connection refused" }, { connect(dir .. "/s") })
      end
      assert.same({ nil, "No such file or directory" }, { mio.locallisten(dir .. "/no/dir") })
      assert.equals(before, fd_count())
      cleanup(dir, "s")
    end)

    describe("with a mode (NEW)", function()
      -- The permission bits of a file, as `stat -c %a` prints them (octal).
      local function mode_of(path)
        local p = assert(io.popen("stat -c %a '" .. path .. "'"))
        local text = p:read("l")
        p:close()
        return tonumber(text, 8)
      end

      it("gives the socket file exactly the permission bits asked for", function()
        local dir = tempdir()
        local path = dir .. "/s"
        for _, octal in ipairs { "600", "660", "777", "700", "0", "1777", "7777" } do
          local mode = tonumber(octal, 8)
          local l = assert(mio.locallisten(path, mode))
          assert.is_true(is_socket(path))
          assert.equals(mode, mode_of(path), string.format("mode %o", mode))
          -- and it serves (root ignores the bits, the owner would need write permission)
          if mode & tonumber("200", 8) ~= 0 then
            local c = assert(mio.localconnect(path))
            local s = assert(l:accept())
            exchange(c, s)
            c:close(); s:close()
          end
          assert.is_true(l:close())
        end
        cleanup(dir, "s")
      end)

      it("leaves the default (the umask's) without a mode, and accepts nil", function()
        local p = assert(io.popen("umask"))
        local umask = tonumber(p:read("l"), 8)
        p:close()
        local dir = tempdir()
        local path = dir .. "/s"
        assert(mio.locallisten(path)):close()
        assert.equals(tonumber("777", 8) & ~umask, mode_of(path))
        assert(mio.locallisten(path, nil)):close()
        assert.equals(tonumber("777", 8) & ~umask, mode_of(path))
        cleanup(dir, "s")
      end)

      it("raises a plain-string error for a mode of the wrong type or range", function()
        local dir = tempdir()
        local path = dir .. "/s"
        local function err_of(...)
          local ok, err = pcall(mio.locallisten, ...)
          assert.is_false(ok)
          assert.is_string(err)
          return err
        end
        local range = "bad argument #2 to 'locallisten' (mode out of range (0 to 0o7777))"
        assert.equals(range, err_of(path, -1))
        assert.equals(range, err_of(path, tonumber("10000", 8)))
        assert.equals(range, err_of(path, math.mininteger))
        assert.equals("bad argument #2 to 'locallisten' (number expected, got string)",
          err_of(path, "0600"))
        assert.equals("bad argument #2 to 'locallisten' (number expected, got table)",
          err_of(path, {}))
        assert.equals("bad argument #2 to 'locallisten' (number has no integer representation)",
          err_of(path, 1.5))
        -- nothing was created
        assert.is_false(is_socket(path))
        cleanup(dir)
      end)
    end)

    it("reject paths longer than 107 bytes with a message", function()
      local long = "/tmp/" .. ("x"):rep(103)
      assert.equals(108, #long)
      for _, f in ipairs { mio.localconnect, mio.localconnect_nb, mio.locallisten } do
        assert.same({ nil, "File name too long" }, { f(long) })
      end
    end)
  end)

  describe("listener objects", function()
    it("raise a plain-string error when used after close", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      assert.is_true(l:close())
      assert.equals("moonbridge_io listener (closed)", tostring(l))
      for _, m in ipairs { "accept", "accept_nb", "close" } do
        local ok, err = pcall(l[m], l)
        assert.is_false(ok)
        assert.equals("Attempt to use a closed listener", err)
      end
    end)

    -- Lua 5.3 has no to-be-closed variables, so this case exists only on 5.4.
    if _VERSION == "Lua 5.4" then
      it("close at the end of a to-be-closed variable's scope (Lua 5.4)", function()
        local chunk = assert(load([[
          local mio = ...
          local kept
          do
            local l <close> = assert(mio.tcplisten("127.0.0.1", 0))
            kept = l
          end
          return kept
        ]]))
        local l = chunk(mio)
        assert.equals("moonbridge_io listener (closed)", tostring(l))
        assert.has_error(function() l:accept_nb() end, "Attempt to use a closed listener")
      end)
    end

    it("accept user fields", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      l.name = "api"
      assert.equals("api", l.name)
      l:close()
    end)
  end)

  it("raise plain-string errors naming the function and argument on misuse", function()
    local cases = { -- message, function, arguments
      table.pack("bad argument #1 to 'tcpconnect' (string expected, got nil)", mio.tcpconnect, nil, 80),
      table.pack("bad argument #2 to 'tcpconnect' (port number or service name expected, got no value)",
        mio.tcpconnect, "127.0.0.1"),
      table.pack("bad argument #2 to 'tcpconnect_nb' (port number or service name expected, got table)",
        mio.tcpconnect_nb, "127.0.0.1", {}),
      table.pack("bad argument #2 to 'tcplisten' (port number out of range)", mio.tcplisten, "::1", 65536),
      table.pack("bad argument #2 to 'tcplisten' (port number out of range)", mio.tcplisten, "::1", -1),
      table.pack("bad argument #2 to 'tcplisten' (number has no integer representation)",
        mio.tcplisten, "::1", 1.5),
      table.pack("bad argument #1 to 'localconnect' (string expected, got table)", mio.localconnect, {}),
      table.pack("bad argument #1 to 'localconnect_nb' (string expected, got no value)", mio.localconnect_nb),
      table.pack("bad argument #1 to 'locallisten' (string expected, got boolean)", mio.locallisten, false),
    }
    for i, case in ipairs(cases) do
      local ok, err = pcall(case[2], table.unpack(case, 3, case.n))
      assert.is_false(ok, i)
      assert.equals(case[1], err, i)
    end
    local l = assert(mio.tcplisten("127.0.0.1", 0))
    local ok, err = pcall(l.accept, mio.stdin)
    assert.is_false(ok)
    assert.equals("bad self to 'accept' (moonbridge_io listener expected, got moonbridge_io handle)", err)
    l:close()
  end)
end)
