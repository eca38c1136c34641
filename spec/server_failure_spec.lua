-- What happens when handlers fail: errors (logged with a traceback, connection reset, worker
-- replaced), os.exit, memory_limit, prepare errors, and a master that dies. The server keeps
-- serving; nothing is left behind.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

-- Answers "<pid>\n" for "pid\n"; other commands fail in various ways.
local APP = [[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=2, max_fork=4, fork_delay=0, memory_limit=8000000,
  connect = function(s)
    local line = s:read(100, "\n")
    if line == "error\n" then
      s:write("partial"):flush()
      local t = nil
      return t.field -- a runtime error with a traceback
    elseif line == "exit\n" then
      os.exit(3)
    elseif line == "close-exit\n" then
      os.exit(4, true) -- closes the Lua state: every block freed, the module unloaded
    elseif line == "churn\n" then
      -- many small objects made and dropped (the small-block cache under memory_limit)
      local sum, keep = 0, {}
      for i = 1, 200000 do
        local t = { i, tostring(i), { i } }
        if i % 1000 == 0 then keep[#keep + 1] = t end
        sum = sum + t[1] + #t[2] + t[3][1]
      end
      for _, t in ipairs(keep) do sum = sum + t[1] + tonumber(t[2]) + t[3][1] end
      s:write(sum, "\n")
      return true
    elseif line == "big\n" then
      local ok, err = pcall(string.rep, "x", 64 * 1000 * 1000)
      s:write(tostring(ok), " ", tostring(err), "\n"):flush()
      return true
    elseif line == "huge\n" then
      local t = {}
      for i = 1, 1e9 do t[i] = ("y"):rep(100) .. i end
    elseif line == "medium\n" then
      local big = ("z"):rep(2 * 1000 * 1000)
      s:write(#big, "\n")
      return true
    elseif line == "hold\n" then
      io.stderr:write("holding\n")
      s:write("held\n"):flush()
      s:read(100, "\n")
    end
    s:write(moonbridge_io.getpid(), "\n")
    return true
  end }
]]

local function pid_of(srv)
  local reply = H.request(srv, "pid\n", 5)
  return tonumber(reply and reply:match("^(%d+)\n$"))
end

describe("handler failures", function()
  local srv
  after_each(function()
    if srv then
      H.stop_clean(srv)
      srv = nil
    end
  end)

  it("an error resets the connection, is logged with a traceback, and the worker is replaced",
    function()
      srv = H.start(APP)
      local w = assert(H.wait_workers(srv, 2))
      local h = assert(H.connect(srv))
      h:write("error\n"):flush()
      local data, status = H.read_all(h)
      h:close()
      -- the partial answer may or may not arrive before the reset; the end is never clean
      assert.is_true(data == "" or data == "partial")
      assert.not_equal("eof", status)
      local pid = H.wait_log(srv, "%[Pool #1, PID (%d+)%] Error in \"connect\" function: ")
      assert.is_not_nil(pid, H.log_text(srv))
      assert.matches("%[Pool #1, PID " .. pid .. "%] Error in \"connect\" function: [^\n]*app.lua:%d+: attempt to index",
        H.log_text(srv))
      assert.matches("%[Pool #1, PID " .. pid .. "%] stack traceback:", H.log_text(srv))
      assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. pid .. "%) of pool #1 exited with code 1"))
      -- replaced, and the server keeps serving
      assert.is_truthy(H.wait_for(5, function()
        local now = H.workers(srv)
        return #now == 2 and now[1] ~= tonumber(pid) and now[2] ~= tonumber(pid)
      end))
      assert.is_not_nil(pid_of(srv))
      local _ = w
    end)

  it("os.exit in a handler ends the worker; it is replaced", function()
    srv = H.start(APP)
    assert.is_not_nil(H.wait_workers(srv, 2))
    local data, status = H.request(srv, "exit\n")
    assert.equal("", data)
    assert.not_equal("eof", status) -- the process died: reset
    assert.is_not_nil(H.wait_log(srv, "of pool #1 exited with code 3"))
    assert.is_not_nil(H.wait_workers(srv, 2))
    assert.is_not_nil(pid_of(srv))
  end)

  it("os.exit(code, true) in a handler closes the state and exits with that code", function()
    srv = H.start(APP)
    assert.is_not_nil(H.wait_workers(srv, 2))
    local data, status = H.request(srv, "close-exit\n")
    assert.equal("", data)
    assert.not_equal("eof", status)
    assert.is_not_nil(H.wait_log(srv, "of pool #1 exited with code 4"), H.log_text(srv))
    assert.is_nil(H.log_text(srv):match("signal"), H.log_text(srv))
    assert.is_not_nil(pid_of(srv))
  end)

  it("objects made and dropped by the hundred thousand keep their contents", function()
    srv = H.start(APP)
    local expect = 0
    for i = 1, 200000 do expect = expect + 2 * i + #tostring(i) end
    for i = 1000, 200000, 1000 do expect = expect + 3 * i end
    for _ = 1, 3 do -- the same worker again and again: its cache in use
      assert.equal(string.format("%d\n", expect), (H.request(srv, "churn\n", 20)))
    end
  end)

  it("memory_limit makes allocations fail with 'not enough memory'", function()
    srv = H.start(APP)
    local reply = H.request(srv, "big\n")
    assert.matches("^false not enough memory", reply) -- 5.3 adds " for buffer allocation"
    -- below the limit, allocations succeed
    assert.equal("2000000\n", (H.request(srv, "medium\n")))
  end)

  it("a handler exceeding memory_limit fails, its worker is replaced, others keep serving",
    function()
      srv = H.start(APP)
      assert.is_not_nil(H.wait_workers(srv, 2))
      -- another client is in the middle of a request meanwhile
      local other = assert(H.connect(srv))
      other:write("hold\n"):flush()
      assert.equal("held\n", H.read_line(other))
      local data, status = H.request(srv, "huge\n", 20)
      assert.not_equal("eof", status, data)
      local pid = H.wait_log(srv, "%[Pool #1, PID (%d+)%] Error in \"connect\" function: not enough memory")
      assert.is_not_nil(pid, H.log_text(srv))
      assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. pid .. "%) of pool #1 exited with code 1"))
      -- the other connection is still served by its worker
      other:write("go\n"):flush()
      local rest = H.read_all(other)
      other:close()
      assert.matches("^%d+\n$", rest)
      assert.not_equal(pid, rest:match("%d+"))
      assert.is_not_nil(pid_of(srv))
    end)

  it("a prepare that exits (even with code 0) is retried only after fork_error_delay", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=2, fork_delay=0, fork_error_delay=0.4,
  prepare = function() io.stderr:write("preparing\n") os.exit(0) end,
  connect = function() return true end }
]])
    assert.is_truthy(H.wait_for(5, function() return H.log_count(srv, "preparing") >= 2 end))
    local t0 = mio.timeref()
    local n0 = H.log_count(srv, "preparing")
    H.wait_for(1, function() return false end) -- observe one second
    local rate = (H.log_count(srv, "preparing") - n0) / (mio.timeref() - t0)
    assert.is_true(rate <= 4, "prepare retried " .. rate .. " times per second")
  end)

  it("a failing prepare is logged and retried only after fork_error_delay", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=2, fork_delay=0, fork_error_delay=0.4,
  prepare = function() error("prepare failed") end,
  connect = function() return true end }
]])
    assert.is_truthy(H.wait_for(5, function()
      return H.log_count(srv, 'Error in "prepare" function: ') >= 3
    end), H.log_text(srv))
    -- attempts are spaced by the error delay, not a tight loop
    local stamps = {}
    for line in H.log_text(srv):gmatch("[^\n]+") do
      if line:find('Error in "prepare"', 1, true) then stamps[#stamps + 1] = line end
    end
    assert.matches("prepare failed", stamps[1])
    local t0 = mio.timeref()
    local n0 = H.log_count(srv, 'Error in "prepare" function: ')
    H.wait_for(1, function() return false end) -- observe one second
    local rate = (H.log_count(srv, 'Error in "prepare" function: ') - n0) / (mio.timeref() - t0)
    assert.is_true(rate <= 4, "prepare retried " .. rate .. " times per second")
  end)
end)

describe("a dying master", function()
  it("takes its workers along (no orphans)", function()
    local srv = H.start(APP)
    local w = assert(H.wait_workers(srv, 2))
    local busy = assert(H.connect(srv))
    busy:write("hold\n"):flush()
    assert.equal("held\n", H.read_line(busy))
    local busy_pid = H.wait_log(srv, "PID (%d+)%] holding")
    os.execute("kill -KILL " .. srv.pid)
    local function gone(pids)
      return H.wait_for(5, function()
        for _, p in ipairs(pids) do
          if H.alive(p) then return false end
        end
        return true
      end)
    end
    -- the idle worker goes at once; the busy one finishes its connection first
    local idle = {}
    for _, p in ipairs(w) do
      if p ~= tonumber(busy_pid) then idle[#idle + 1] = p end
    end
    local idle_gone = gone(idle)
    busy:write("done\n"):flush()
    local rest = H.read_all(busy)
    busy:close()
    local all_gone = gone(w)
    H.cleanup(srv)
    assert.is_true(idle_gone)
    assert.is_true(all_gone)
    assert.matches("^%d+\n$", rest)
  end)
end)
