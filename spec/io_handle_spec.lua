-- Handle methods over real sockets: both ends live in this process (non-blocking calls make
-- that possible); a child interpreter plays the peer where timing between segments matters.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

local MiB = 1024 * 1024

local function sleep(seconds)
  assert(os.execute("sleep " .. seconds))
end

-- Waits until `h` may be ready for `mode` ("r" or "w"), at most `seconds`. Uses
-- moonbridge_io.poll where the module has it, else a short sleep (callers loop anyway).
local function wait(h, mode, seconds)
  if mio.poll then
    local set = { [h] = true }
    if mode == "r" then mio.poll(set, nil, seconds or 5) else mio.poll(nil, set, seconds or 5) end
  else
    sleep(0.005)
  end
end

-- Two connected handles: a client `a` and the accepted `b`.
local function tcp_pair(host)
  host = host or "127.0.0.1"
  local l = assert(mio.tcplisten(host, 0))
  local a = assert(mio.tcpconnect(host, l.local_tcpport))
  local b = assert(l:accept())
  l:close()
  return a, b
end

local function local_pair()
  local path = helper.tmpname(".sock")
  local l = assert(mio.locallisten(path))
  local a = assert(mio.localconnect(path))
  local b = assert(l:accept())
  l:close()
  os.remove(path)
  return a, b
end

local spawn = helper.spawn

-- Reads with read_nb until `n` bytes arrived (bounded), for data the peer already flushed.
local function read_exactly(h, n)
  local parts, got = {}, 0
  for _ = 1, 1000 do
    local data, status = h:read_nb(n - got)
    assert(data, status)
    parts[#parts + 1] = data
    got = got + #data
    if got == n or status == "eof" then break end
    wait(h, "r", 1)
  end
  return table.concat(parts)
end

local function closes(...)
  for _, h in ipairs { ... } do h:close() end
end

describe("moonbridge_io handles over sockets", function()
  describe("read", function()
    it("stops at the terminator, at maxlen, or at whichever comes first", function()
      local a, b = tcp_pair()
      a:flush("line one\nline two\nabcdef")
      assert.same({ "line one\n", "term" }, { b:read(nil, "\n") })
      assert.same({ "line", "maxlen" }, { b:read(4) })
      assert.same({ " two\n", "term" }, { b:read(100, "\n") })
      assert.same({ "abc", "maxlen" }, { b:read(3, "\n") })
      assert.same({ "def", "maxlen" }, { b:read(3) }) -- maxlen hit exactly, nothing left
      assert.same({ "", "block" }, { b:read_nb() })
      a:flush("xy\n")
      assert.same({ "xy\n", "term" }, { b:read(3, "\n") }) -- both hit: "term"
      closes(a, b)
    end)

    it("read(0) returns an empty string with status maxlen, even with nothing buffered", function()
      local a, b = tcp_pair()
      assert.same({ "", "maxlen" }, { b:read(0) })
      assert.same({ "", "maxlen" }, { b:read_nb(0) })
      a:flush("z")
      assert.same({ "", "maxlen" }, { b:read(0, "z") })
      assert.same({ "z", "term" }, { b:read(1, "z") })
      closes(a, b)
    end)

    it("read_nb and drain_nb report block with nothing available", function()
      local a, b = tcp_pair()
      assert.same({ "", "block" }, { b:read_nb() })
      assert.same({ "", "block" }, { b:read_nb(10, "\n") })
      assert.same({ 0, "block" }, { b:drain_nb() })
      assert.same({ 0, "block" }, { b:drain_nb(10, "\n") })
      closes(a, b)
    end)

    it("read_nb returns what is buffered with status block", function()
      local a, b = tcp_pair()
      a:flush("abc")
      assert.same({ "a", "maxlen" }, { b:read(1) }) -- the whole segment is buffered now
      assert.same({ "bc", "block" }, { b:read_nb(nil, "\n") })
      a:flush("de\nf")
      assert.equals("d", b:read(1))
      assert.same({ "e\n", "term" }, { b:read_nb(nil, "\n") })
      assert.same({ "f", "block" }, { b:read_nb(5) })
      closes(a, b)
    end)

    it("joins segments sent at different times, then sees EOF mid-line", function()
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local child, script = spawn([[
        local mio = require "moonbridge_io"
        local h = assert(mio.tcpconnect("127.0.0.1", tonumber(arg[1])))
        io.write("connected\n"); io.flush()
        for _, piece in ipairs { "hel", "lo\nwor", "ld\nlast line without end" } do
          h:flush(piece)
          os.execute("sleep 0.05")
        end
        h:close()
      ]], l.local_tcpport)
      assert.equals("connected", child:read("l"))
      local b = assert(l:accept())
      l:close()
      assert.same({ "hello\n", "term" }, { b:read(nil, "\n") })   -- terminator in segment 2
      assert.same({ "world\n", "term" }, { b:read(nil, "\n") })   -- spans segments 2 and 3
      assert.same({ "last line without end", "eof" }, { b:read(nil, "\n") })
      for _ = 1, 3 do
        assert.same({ "", "eof" }, { b:read() })
        assert.same({ "", "eof" }, { b:read(10, "\n") })
        assert.same({ "", "eof" }, { b:read_nb() })
        assert.same({ 0, "eof" }, { b:drain() })
        assert.same({ 0, "eof" }, { b:drain_nb() })
      end
      assert.is_true(b:close())
      assert.is_true(child:close())
      os.remove(script)
    end)
  end)

  describe("drain", function()
    it("discards through the terminator, up to maxlen, or to EOF", function()
      local a, b = tcp_pair()
      a:write("xxxx\nyyyyyyyy")
      a:finish()
      assert.same({ 5, "term" }, { b:drain(nil, "\n") })
      assert.same({ 3, "maxlen" }, { b:drain(3) })
      assert.same({ 5, "eof" }, { b:drain() })
      assert.same({ 0, "eof" }, { b:drain_nb() })
      closes(a, b)
    end)

    it("drain_nb counts what it discarded before blocking", function()
      local a, b = tcp_pair()
      a:flush("12345")
      assert.equals("1", b:read(1))
      assert.same({ 4, "block" }, { b:drain_nb(nil, "\n") })
      a:flush("67\n89")
      assert.same({ 2, "maxlen" }, { b:drain(2) })
      assert.same({ 1, "term" }, { b:drain_nb(nil, "\n") })
      closes(a, b)
    end)
  end)

  describe("write and flush", function()
    it("write buffers until flush and returns the handle", function()
      local a, b = tcp_pair()
      assert.equals(a, a:write("abc", 12, "\n"))
      wait(b, "r", 0.05)
      assert.same({ "", "block" }, { b:read_nb() })
      assert.equals(a, a:flush())
      assert.same({ "abc12\n", "term" }, { b:read(nil, "\n") })
      assert.equals(a, a:flush("direct"))
      assert.equals("direct", b:read(6))
      closes(a, b)
    end)

    it("write_nb and flush_nb return the bytes still pending", function()
      local a, b = tcp_pair()
      assert.equals(0, a:write_nb("small"))
      assert.equals(0, a:flush_nb())
      assert.equals("small", b:read(5))
      -- the peer does not read: the socket buffers fill and bytes stay pending
      local big = ("x"):rep(32 * MiB)
      local pending = a:flush_nb(big)
      assert.is_true(pending > 0)
      assert.is_true(a:write_nb("tail") > 0)
      -- draining on the peer lets the flush complete
      local drained = 0
      for _ = 1, 100000 do
        local n, status = b:drain_nb()
        assert.equals("block", status)
        drained = drained + n
        pending = assert(a:flush_nb())
        if pending == 0 then break end
        if n == 0 then wait(a, "w", 1) end
      end
      assert.equals(0, pending)
      a:finish()
      local rest, status = b:drain()
      assert.equals("eof", status)
      assert.equals(#big + 4, drained + rest)
      closes(a, b)
    end)

    it("write after finish raises; finish half-closes TCP", function()
      local a, b = tcp_pair()
      a:write("request")
      assert.is_true(a:finish())
      local ok, err = pcall(a.write, a, "more")
      assert.is_false(ok)
      assert.equals("Attempt to write to a finished I/O handle", err)
      assert.same({ "request", "eof" }, { b:read() })    -- the peer sees EOF
      b:flush("reply")                                   -- and can still answer
      assert.is_true(b:close())
      assert.same({ "reply", "eof" }, { a:read() })
      assert.is_true(a:close())
    end)

    it("an argument error raises but leaves the handle usable", function()
      local a, b = tcp_pair()
      local ok, err = pcall(a.write, a, "ok", {})
      assert.is_false(ok)
      assert.equals("bad argument #2 to 'write' (string expected, got table)", err)
      ok, err = pcall(a.flush_nb, a, "x", nil)
      assert.is_false(ok)
      assert.equals("bad argument #2 to 'flush_nb' (string expected, got nil)", err)
      assert.equals(a, a:flush("fine"))
      assert.same({ "fine", "maxlen" }, { b:read(4) }) -- nothing of the failed calls was sent
      assert.same({ "", "block" }, { b:read_nb() })
      closes(a, b)
    end)
  end)

  describe("Unix sockets", function()
    it("finish closes the socket; reads return buffered data, then EOF", function()
      local a, b = local_pair()
      b:flush("line1\nline2")
      assert.same({ "line1\n", "term" }, { a:read(nil, "\n") })
      a:write("bye")
      assert.is_true(a:finish())
      assert.same({ "line2", "eof" }, { a:read() })
      assert.same({ "", "eof" }, { a:read() })
      assert.same({ "", "eof" }, { a:read_nb() })
      assert.same({ "bye", "eof" }, { b:read() })  -- finish flushed, then closed
      assert.is_true(a:close())
      assert.is_true(b:close())
    end)
  end)

  describe("close and reset", function()
    it("close returns true; any later use raises a plain string", function()
      local a, b = tcp_pair()
      assert.is_true(a:close())
      local cases = {
        { "read", "Attempt to read from a closed I/O handle" },
        { "read_nb", "Attempt to read from a closed I/O handle" },
        { "drain", "Attempt to read from a closed I/O handle" },
        { "write", "Attempt to write to a closed I/O handle" },
        { "flush_nb", "Attempt to write to a closed I/O handle" },
        { "close", "Attempt to close a closed I/O handle" },
        { "reset", "Attempt to reset a closed I/O handle" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(a[case[1]], a)
        assert.is_false(ok, case[1])
        assert.equals(case[2], err, case[1])
      end
      assert.same({ "", "eof" }, { b:read() })
      b:close()
    end)

    it("reset makes the peer see a connection reset; read errors are sticky", function()
      local a, b = tcp_pair()
      a:flush("x")
      assert.equals("x", b:read(1))
      assert.is_true(a:reset())
      assert.same({ nil, "Connection reset by peer" }, { b:read() })
      assert.same({ nil, "Previous read error" }, { b:read() })
      assert.same({ nil, "Previous read error" }, { b:read_nb() })
      assert.same({ nil, "Previous read error" }, { b:drain() })
      local ok, err = b:flush("into the void")
      assert.is_nil(ok)
      assert.is_string(err)
      assert.same({ nil, "Previous write error" }, { b:flush("again") })
      assert.is_true(b:close())
    end)

    it("a collected, unclosed TCP handle resets its peer", function()
      local b = (function()
        local a, b = tcp_pair()
        a:flush("last words")
        return b
      end)()
      collectgarbage()
      collectgarbage()
      assert.same({ "last words", "maxlen" }, { b:read(10) })
      assert.same({ nil, "Connection reset by peer" }, { b:read() })
      b:close()
    end)
  end)

  describe("_call forms", function()
    it("call waitfunc(handle, mode, first, module) while blocked", function()
      local a, b = tcp_pair()
      local calls = {}
      local pieces = { "lo wor", "ld\nrest" }
      local function waitfunc(h, mode, first, m)
        calls[#calls + 1] = { h = h, mode = mode, first = first, m = m }
        local piece = table.remove(pieces, 1)
        if piece then a:flush(piece) end
        wait(h, mode, 1)
      end
      a:flush("hel")
      assert.same({ "hello world\n", "term" }, { b:read_call(waitfunc, nil, "\n") })
      assert.is_true(#calls >= 2)
      for i, c in ipairs(calls) do
        assert.equals(b, c.h)
        assert.equals("r", c.mode)
        assert.equals(i == 1, c.first)
        assert.equals(mio, c.m)
      end
      -- no call at all when the data is there
      calls = {}
      assert.same({ "rest", "maxlen" }, { b:read_call(waitfunc, 4) })
      assert.equals(0, #calls)

      -- drain_call: 3 bytes now, 3 when waitfunc first runs
      pieces = { "456" }
      a:flush("123")
      assert.same({ 6, "maxlen" }, { b:drain_call(waitfunc, 6) })
      assert.equals("r", calls[1].mode)
      assert.is_true(calls[1].first)

      -- write_call/flush_call block on a full socket; waitfunc drains the peer
      local drained = 0
      local wcalls = {}
      local function drain_peer(h, mode, first, m)
        wcalls[#wcalls + 1] = { h = h, mode = mode, first = first, m = m }
        local n = assert(b:drain_nb())
        drained = drained + n
        if n == 0 then wait(h, mode, 1) end
      end
      local big = ("y"):rep(16 * MiB)
      assert.equals(a, a:write_call(drain_peer, big))
      assert.equals(a, a:flush_call(drain_peer, "end"))
      assert.is_true(#wcalls > 0)
      for i, c in ipairs(wcalls) do
        assert.equals(a, c.h)
        assert.equals("w", c.mode)
        assert.equals(mio, c.m)
        if i > 1 then assert.is_false(c.first) end
      end
      assert.is_true(wcalls[1].first)
      a:finish()
      local rest = assert(b:drain())
      assert.equals(#big + 3, drained + rest)
      closes(a, b)
    end)
  end)

  describe("_yield forms", function()
    it("yield (handle, mode, first, module) to a scheduler", function()
      local a, b = tcp_pair()
      -- more than the socket buffers hold, so both sides have to wait
      local payload = helper.pattern(MiB + 17):rep(20)
      local yields = { r = 0, w = 0 }
      local writer = coroutine.create(function()
        assert.equals(a, a:write_yield(payload))
        assert.equals(a, a:flush_yield("end"))
        assert.is_true(a:finish())
        return "written"
      end)
      local reader = coroutine.create(function()
        local parts = {}
        while true do
          local data, status = b:read_yield(MiB)
          parts[#parts + 1] = data
          if status == "eof" then break end
          assert.equals("maxlen", status)
        end
        assert.same({ 0, "eof" }, { b:drain_yield() })
        return table.concat(parts)
      end)
      local results = {}
      for _ = 1, 100000 do
        local waiting = {}
        for name, co in pairs { writer = writer, reader = reader } do
          if coroutine.status(co) == "suspended" then
            local ok, h, mode, first, m = coroutine.resume(co)
            assert(ok, h)
            if coroutine.status(co) == "dead" then
              results[name] = h
            else
              assert.equals(name == "writer" and a or b, h)
              assert.equals(name == "writer" and "w" or "r", mode)
              assert.is_boolean(first)
              assert.equals(mio, m)
              yields[mode] = yields[mode] + 1
              waiting[#waiting + 1] = { h, mode }
            end
          end
        end
        if #waiting == 0 then break end
        if #waiting == 2 and mio.poll then
          mio.poll({ [b] = true }, { [a] = true }, 1)
        end
      end
      assert.equals("written", results.writer)
      assert.equals(#payload + 3, #results.reader)
      assert.is_true(results.reader == payload .. "end")
      assert.is_true(yields.w > 0 and yields.r > 0)
      closes(a, b)
    end)
  end)

  it("moves 64 MiB between two sockets with non-blocking calls, byte for byte", function()
    local a, b = tcp_pair()
    local period = 1000003 -- prime, so a lost or repeated write cannot line up with it
    local pattern = helper.pattern(period)
    local total, piece = 64 * MiB, 65536
    local sent, received, finished = 0, 0, false
    local mismatch
    for _ = 1, 1000000 do
      local progress = false
      -- sender: keep at most a little pending, then flush, then finish
      local pending = finished and 0 or assert(a:flush_nb())
      while sent < total and pending < 256 * 1024 do
        local off = sent % period
        local len = math.min(piece, period - off, total - sent)
        pending = assert(a:write_nb(pattern:sub(off + 1, off + len)))
        sent = sent + len
        progress = true
      end
      if sent == total and not finished and assert(a:flush_nb()) == 0 then
        assert.is_true(a:finish())
        finished = true
      end
      -- receiver: read pieces that never wrap around the period and compare them
      local off = received % period
      local data, status = b:read_nb(period - off)
      assert(data, status)
      if #data > 0 then
        progress = true
        if not mismatch and data ~= pattern:sub(off + 1, off + #data) then mismatch = received end
        received = received + #data
      end
      if status == "eof" then break end
      if not progress and mio.poll then mio.poll({ [b] = true }, nil, 1) end
    end
    assert.is_nil(mismatch)
    assert.equals(total, received)
    closes(a, b)
  end)

  it("keeps user fields next to the built-in ones", function()
    local a, b = tcp_pair()
    a.foo = 42
    a.read_timeout = "user"
    assert.equals(42, a.foo)
    assert.equals("user", a.read_timeout)
    assert.is_nil(b.foo)
    assert.is_number(a.local_tcpport)
    a.foo = nil
    assert.is_nil(a.foo)
    a:flush("still works")
    assert.equals("still works", b:read(11))
    closes(a, b)
  end)

  -- The address fields are computed on first access and kept: what the handle shows must
  -- not depend on whether a field was read before.
  it("computes the address fields on first access, like stored ones", function()
    local a, b = tcp_pair()
    a.remote_ip = "set first" -- before any access: the user's value wins
    assert.equals("set first", a.remote_ip)
    local port = b.local_tcpport
    assert.is_number(port)
    assert.equals(port, b.local_tcpport)
    assert.equals(port, a.remote_tcpport)
    assert.equals("127.0.0.1", b.local_ip)
    assert.equals("\127\0\0\1", b.remote_ip4)
    assert.is_nil(b.remote_ip6) -- IPv4: no 16-byte form
    b.local_tcpport = nil -- a cleared built-in field is computed again
    assert.equals(port, b.local_tcpport)
    assert.is_nil(a[1])
    assert.is_nil(a[true])
    assert.is_nil(a.no_such_field)
    a.read = "shadowed"
    assert.equals("shadowed", a.read)
    a.read = nil -- the method shows through again
    assert.equals("function", type(a.read))
    closes(a, b)
    -- a closed handle keeps its addresses, also those not read before
    assert.equals(port, b.local_tcpport)
    assert.equals("\127\0\0\1", a.local_ip4)
  end)
end)
