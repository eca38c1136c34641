-- Pieces of moonbridge_io working together: poll over listeners, sockets and child
-- handles, and a small coroutine scheduler driving the _yield forms.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

describe("poll with every kind of key", function()
  it("waits for a pending connection on a listener", function()
    local l = assert(mio.tcplisten("127.0.0.1", 0))
    assert.same({ false, "Timeout" }, { mio.poll({ [l] = true }, nil, 0.05) })
    local c = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
    assert.is_true(mio.poll({ [l] = true }, nil, 5))
    local s = assert(l:accept_nb())
    s:close(); c:close(); l:close()
    assert.has_error(function() mio.poll({ [l] = true }, nil, 0) end, "Attempt to use a closed listener")
  end)

  it("wakes when a child process exits", function()
    local child = assert(mio.exec("/bin/sh", "-c", "read x; exit 7"))
    assert.same({ false, "Timeout" }, { mio.poll({ [child] = true }, nil, 0.05) })
    child.stdin:write("go\n"):close()
    local t0 = mio.timeref()
    assert.is_true(mio.poll({ [child] = true }, nil, 5))
    assert.is_true(mio.timeref(t0) < 4)
    assert.equals(7, child:wait())
    -- an exited and reaped child stays ready
    assert.is_true(mio.poll({ [child] = true }, nil, 0))
  end)

  it("waits on a child with wait_call over poll", function()
    local child = assert(mio.exec("/bin/sh", "-c", "sleep 0.1; exit 3"))
    local calls = 0
    local code = child:wait_call(function(c, mode, first, m)
      calls = calls + 1
      assert.equals(child, c)
      assert.equals("r", mode)
      assert.equals(calls == 1, first)
      assert.equals(mio, m)
      assert(m.poll({ [c] = true }, nil, 5))
    end)
    assert.equals(3, code)
    assert.is_true(calls >= 1 and calls <= 3, "waited by polling, not spinning: " .. calls)
  end)
end)

describe("a coroutine scheduler over poll", function()
  it("runs an echo server, a TCP client and a child process concurrently with _yield", function()
    local l = assert(mio.tcplisten("127.0.0.1", 0))
    local port = l.local_tcpport
    local tasks, waiting = {}, {}
    local function spawn(fn) tasks[#tasks + 1] = coroutine.create(fn) end

    spawn(function() -- server: accept one client, echo lines until EOF
      while true do
        local s = l:accept_nb()
        if s then
          while true do
            local line, status = s:read_yield(nil, "\n")
            assert(line, status)
            if #line > 0 then s:write_yield("echo: ", line) s:flush_yield() end
            if status == "eof" then break end
          end
          s:close()
          return "served"
        end
        coroutine.yield(l, "r")
      end
    end)

    local replies = {}
    spawn(function() -- client: send three lines, read the echoes
      local c = assert(mio.tcpconnect_nb("127.0.0.1", port))
      for i = 1, 3 do
        c:write_yield("line ", i, "\n")
        c:flush_yield()
        replies[i] = c:read_yield(nil, "\n")
      end
      c:finish()
      assert.same({ "", "eof" }, { c:read_yield() })
      c:close()
      return "client done"
    end)

    -- a child process through its pipes: more data than a pipe holds, so writing and
    -- reading must interleave
    local child = assert(mio.exec("/bin/cat"))
    local out
    spawn(function()
      child.stdin:write_yield(helper.pattern(200000))
      child.stdin:flush_yield()
      child.stdin:close()
      return child:wait_yield()
    end)
    spawn(function()
      out = child.stdout:read_yield()
      return #out
    end)

    local results = {}
    for _ = 1, 100000 do
      local inputs, outputs, alive = {}, {}, 0
      for i, co in ipairs(tasks) do
        if coroutine.status(co) == "suspended" then
          local ok, a, b = coroutine.resume(co, table.unpack(waiting[i] or {}))
          assert(ok, a)
          if coroutine.status(co) == "dead" then
            results[i] = a
          else
            alive = alive + 1
            waiting[i] = nil
            if b == "w" then outputs[a] = true else inputs[a] = true end
          end
        end
      end
      if alive == 0 then break end
      assert(mio.poll(inputs, outputs, 5), "scheduler stalled")
    end
    assert.same({ "served", "client done", 0, 200000 }, results)
    assert.same({ "echo: line 1\n", "echo: line 2\n", "echo: line 3\n" }, replies)
    assert.is_true(out == helper.pattern(200000))
    l:close()
  end)
end)

describe("standard streams", function()
  it("are not closed when the module is collected, so buffered output survives exit", function()
    local p = io.popen(helper.lua .. [[ -e 'require "moonbridge_io"; io.stdout:write("kept\n")']])
    local out = p:read("a")
    p:close()
    assert.equals("kept\n", out)
  end)
end)
