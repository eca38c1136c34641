-- No descriptor leaks: the number of open descriptors of this process is the same before
-- and after many connect/accept/close and exec/wait cycles, on every path (graceful close,
-- reset, garbage collection, failed connects, failed execs).
local mio = require "moonbridge_io"
local helper = require "spec.helper"

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
end

describe("descriptor hygiene", function()
  it("leaks nothing over 1000 TCP connect/accept/close cycles", function()
    local l = assert(mio.tcplisten("127.0.0.1", 0))
    local port = l.local_tcpport
    settle()
    local before = helper.fd_count()
    for i = 1, 1000 do
      local c = assert(mio.tcpconnect("127.0.0.1", port))
      local s = assert(l:accept())
      assert(c:write("ping\n"):flush())
      assert.equals("ping\n", (s:read(nil, "\n")))
      if i % 3 == 0 then
        assert(s:reset())
        c:close()
      elseif i % 3 == 1 then
        assert(s:close())
        assert(c:close())
      else
        -- left to the garbage collector
        s, c = nil, nil
      end
      if i % 100 == 0 then settle() end
    end
    settle()
    assert.equals(before, helper.fd_count())
    l:close()
  end)

  it("leaks nothing over Unix socket cycles and failed connects", function()
    local path = helper.tmpname(".sock")
    local l = assert(mio.locallisten(path))
    settle()
    local before = helper.fd_count()
    for _ = 1, 200 do
      local c = assert(mio.localconnect(path))
      local s = assert(l:accept())
      assert(c:close())
      assert(s:close())
      assert.is_nil((mio.localconnect(path .. ".missing")))
      assert.is_nil((mio.tcpconnect("127.0.0.1", 1)))
    end
    settle()
    assert.equals(before, helper.fd_count())
    l:close()
    os.remove(path)
  end)

  it("leaks nothing over 200 exec/wait cycles, failed execs and collected children", function()
    settle()
    local before = helper.fd_count()
    for i = 1, 200 do
      local child = assert(mio.exec("/bin/sh", "-c", "exit " .. (i % 5)))
      assert.equals(i % 5, child:wait())
      if i % 10 == 0 then
        local nochild, err = mio.exec("/nonexistent/program")
        assert.is_nil(nochild)
        assert.matches("No such file or directory", err)
        local forgotten = assert(mio.exec("/bin/cat")) -- collected while running
        forgotten = nil
        settle()
      end
    end
    settle()
    assert.equals(before, helper.fd_count())
  end)
end)
