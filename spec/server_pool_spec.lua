-- Pools: worker counts (pre_fork, min_fork, max_fork), growth under load and shrinking after
-- exit_delay, idle_timeout, a handler's return value, and replacement of lost workers.
-- Worker PIDs are counted through /proc/<master>/task/<master>/children.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

-- A handler that waits for one line, then answers with its PID.
local PID_HANDLER = [[
  connect = function(s)
    s:read(100, "\n")
    s:write(moonbridge_io.getpid(), "\n")
    return true
  end,
]]

local function pid_of(srv, line)
  local reply = H.request(srv, line or "x\n", 5)
  return tonumber(reply and reply:match("^(%d+)\n"))
end

describe("pools", function()
  local srv
  after_each(function()
    if srv then
      local code = H.stop(srv)
      local zombies = #H.zombies(srv)
      assert.equal(0, code, H.log_text(srv))
      assert.same({}, srv.leftover)
      assert.equal(0, zombies)
      H.cleanup(srv)
      srv = nil
    end
  end)

  it("keeps min_fork workers and no more while idle", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=2, min_fork=3, max_fork=5, fork_delay=0, ]] .. PID_HANDLER .. [[ }
]])
    local w = H.wait_workers(srv, 3)
    assert.is_not_nil(w, H.log_text(srv))
    -- stays at 3 (observed for a while: the pool is satisfied, nothing should change)
    local deadline = mio.timeref() + 0.6
    while mio.timeref() < deadline do
      assert.same(w, H.workers(srv))
      H.sleep(0.05)
    end
    assert.is_not_nil(pid_of(srv))
  end)

  it("wakes one idle worker per new connection, not all of them", function()
    -- 10 idle workers, 30 connections one after another: with every idle worker woken
    -- for each connection (the thundering herd) they would sleep and wake ~300 times.
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=10, min_fork=10, max_fork=10, fork_delay=0, ]] .. PID_HANDLER .. [[ }
]])
    local w = H.wait_workers(srv, 10)
    assert.is_not_nil(w, H.log_text(srv))
    local function switches()
      local total = 0
      for _, pid in ipairs(w) do
        local text = H.read_file("/proc/" .. pid .. "/status") or ""
        total = total + tonumber(text:match("voluntary_ctxt_switches:%s*(%d+)") or 0)
      end
      return total
    end
    H.sleep(0.2) -- let the new workers settle into their wait
    local before = switches()
    for _ = 1, 30 do
      assert.is_not_nil(pid_of(srv))
    end
    local per_connection = (switches() - before) / 30
    assert.same(w, H.workers(srv)) -- the same ten workers served them all
    -- a woken worker sleeps again while reading the line and after answering: about 2-3
    assert.is_true(per_connection < 5, "voluntary switches per connection: " .. per_connection)
  end)

  it("forks pre_fork spare workers beside busy ones, spaced by fork_delay", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=2, min_fork=0, max_fork=6, fork_delay=0.3, ]] .. PID_HANDLER .. [[ }
]], { args = { "-s" } })
    assert.is_not_nil(H.wait_workers(srv, 2, 5), H.log_text(srv))
    local t0 = mio.timeref()
    local c1 = assert(H.connect(srv))
    -- one busy: a third worker comes so that two are spare again
    assert.is_not_nil(H.wait_workers(srv, 3, 5), H.log_text(srv))
    local c2 = assert(H.connect(srv))
    assert.is_not_nil(H.wait_workers(srv, 4, 5), H.log_text(srv))
    -- the 3rd and 4th forks were at least fork_delay apart
    assert.is_true(mio.timeref() - t0 >= 0.3)
    for _, c in ipairs { c1, c2 } do
      c:write("x\n"):flush()
      assert.matches("^%d+\n$", (H.read_all(c)))
      c:close()
    end
  end)

  it("forks nothing before the first client with pre_fork = min_fork = 0", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=0, min_fork=0, max_fork=2, ]] .. PID_HANDLER .. [[ }
]])
    assert.is_not_nil(H.wait_log(srv, "Adding TCP listener"))
    H.sleep(0.3)
    assert.same({}, H.workers(srv))
    local pid = pid_of(srv)
    assert.is_not_nil(pid, H.log_text(srv))
    assert.same({ pid }, H.workers(srv))
  end)

  it("grows to max_fork under concurrent clients, never beyond, and shrinks after exit_delay",
    function()
      srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=4, fork_delay=0, exit_delay=0.5, ]] .. PID_HANDLER .. [[ }
]], { args = { "-s" } })
      assert.is_not_nil(H.wait_workers(srv, 1))
      local clients = {}
      for i = 1, 6 do clients[i] = assert(H.connect(srv)) end
      local most = 0
      local full = H.wait_for(5, function()
        local n = #H.workers(srv)
        most = math.max(most, n)
        return n == 4
      end)
      assert.is_not_nil(full, H.log_text(srv))
      -- a while at the maximum with two clients still waiting: no fifth worker
      local deadline = mio.timeref() + 0.5
      while mio.timeref() < deadline do
        most = math.max(most, #H.workers(srv))
        H.sleep(0.03)
      end
      assert.equal(4, most)
      local pids = {}
      for _, c in ipairs(clients) do c:write("x\n"):flush() end
      for _, c in ipairs(clients) do
        local reply = H.read_all(c)
        local pid = assert(tonumber(reply:match("^(%d+)\n$")), reply)
        pids[pid] = true
        c:close()
      end
      local distinct = 0
      for _ in pairs(pids) do distinct = distinct + 1 end
      assert.is_true(distinct <= 4)
      -- surplus idle workers go, one per exit_delay, down to pre_fork = min_fork = 1
      local t0 = mio.timeref()
      assert.is_not_nil(H.wait_workers(srv, 1, 6), H.log_text(srv))
      assert.is_true(mio.timeref() - t0 >= 1.0) -- three stops, 0.5 s apart
      assert.is_true(H.log_count(srv, "Stopping idle worker process") >= 3)
    end)

  it("ends a worker after idle_timeout, and forks again when needed", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=0, min_fork=0, max_fork=2, idle_timeout=0.3, ]] .. PID_HANDLER .. [[ }
]])
    local first = pid_of(srv)
    assert.is_not_nil(first)
    assert.is_not_nil(H.wait_workers(srv, 0, 3), H.log_text(srv))
    local second = pid_of(srv)
    assert.is_not_nil(second)
    assert.not_equal(first, second)
  end)

  it("replaces a worker that reached idle_timeout below min_fork", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=2, idle_timeout=0.3, ]] .. PID_HANDLER .. [[ }
]])
    local w = assert(H.wait_workers(srv, 1))
    local replaced = H.wait_for(3, function()
      local now = H.workers(srv)
      return #now == 1 and now[1] ~= w[1]
    end)
    assert.is_true(replaced, H.log_text(srv))
  end)

  it("ends a worker whose handler does not return true; finish runs; a new PID serves next",
    function()
      srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1,
  connect = function(s)
    local line = s:read(100, "\n")
    s:write(moonbridge_io.getpid(), "\n")
    if line == "false\n" then return false end
    if line == "nil\n" then return nil end
    return true
  end,
  finish = function() io.stderr:write("finish in ", moonbridge_io.getpid(), "\n") end }
]])
      local a = pid_of(srv, "true\n")
      assert.equal(a, pid_of(srv, "true\n"))  -- true: the same worker again
      assert.equal(a, pid_of(srv, "false\n")) -- served, then the worker ends
      assert.is_not_nil(H.wait_log(srv, "%[Pool #1, PID " .. a .. "%] finish in " .. a))
      local b = pid_of(srv, "nil\n")          -- nil ends it too
      assert.not_equal(a, b)
      local c = pid_of(srv, "true\n")
      assert.not_equal(b, c)
      assert.is_not_nil(H.wait_log(srv, "%[Pool #1, PID " .. b .. "%] finish in " .. b))
    end)

  it("replaces a worker killed from outside and logs the signal", function()
    srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=2, max_fork=4, ]] .. PID_HANDLER .. [[ }
]])
    local w = assert(H.wait_workers(srv, 2))
    os.execute("kill -KILL " .. w[1])
    assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. w[1] ..
      "%) of pool #1 terminated by signal 9 %(SIGKILL%)"))
    local now = H.wait_for(5, function()
      local x = H.workers(srv)
      return #x == 2 and x[1] ~= w[1] and x[2] ~= w[1] and x
    end)
    assert.is_truthy(now, H.log_text(srv))
    assert.is_not_nil(pid_of(srv))
  end)

  it("serves each listener of a pool and each pool with its own workers", function()
    local dir = H.tmpdir()
    srv = H.start(string.format([[
local function handler(tag)
  return function(s)
    s:read(100, "\n")
    s:write(tag, " ", moonbridge_io.getpid(), "\n")
    return true
  end
end
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, {proto="local", path=%q},
  pre_fork=1, min_fork=1, connect=handler("one") }
listen{ {proto="tcp", host="127.0.0.1", port=$PORT2}, pre_fork=1, min_fork=1,
  connect=handler("two") }
]], dir .. "/sock"))
    local r1 = assert(H.request(srv, "x\n"))
    local r2 = assert(H.request(srv, "x\n", 5, "127.0.0.1", srv.port2))
    local u = assert(mio.localconnect(dir .. "/sock"))
    u:write("x\n"):flush()
    local r3 = H.read_all(u)
    u:close()
    local p1 = tonumber(r1:match("^one (%d+)"))
    local p2 = tonumber(r2:match("^two (%d+)"))
    assert.is_not_nil(p1, r1)
    assert.is_not_nil(p2, r2)
    assert.not_equal(p1, p2)
    assert.matches("^one %d+\n$", r3)
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)
