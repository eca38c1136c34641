-- timeout(...) inside handlers (listen.md §4): remaining time, clearing, sub-timers and their
-- precedence, the reset after each handler, and the kill of a worker that runs out of time.
-- Handlers compute their observations and send them back as a Lua table literal.
local H = require "spec.server_helper"
local mio = require "moonbridge_io"


local APP = [[
local function near(x, want) return math.abs(x - want) < 0.15 end
local tests = {}

function tests.plain()
  local r = {}
  r.none = timeout()
  r.prev0 = timeout(5)
  r.left5 = near(timeout(), 5)
  r.prev5 = near(timeout(10), 5)
  r.prev10 = near(timeout(0), 10)
  r.after0 = timeout()
  timeout(3)
  r.prev_false = near(timeout(false), 3)
  r.after_false = timeout()
  r.neg = select(2, pcall(timeout, -1))
  r.str = select(2, pcall(timeout, "1"))
  r.badf = select(2, pcall(timeout, 1, 5))
  return r
end

function tests.sub()
  local r = {}
  -- no outer timer: the sub-timer alone, then nothing again
  local a, b, c = timeout(4, function(x, y) return x + y, timeout(), "z" end, 1, 2)
  r.results = a == 3 and near(b, 4) and c == "z"
  r.after_sub = timeout()
  -- a shorter outer timer wins
  timeout(2)
  r.inner_capped = near(timeout(10, function() return timeout() end), 2)
  -- a shorter sub-timer applies inside; afterwards the outer goes on minus the elapsed time
  r.inner_short = near(timeout(1, function()
    moonbridge_io.poll(nil, nil, 0.3)
    return timeout()
  end), 0.7)
  r.outer_after = near(timeout(), 1.7)
  -- timeout(0, f): only the outer timer
  r.zero_sub = near(timeout(0, function() return timeout() end), 1.7)
  -- an error inside passes through; the outer timer is restored
  local ok, err = pcall(timeout, 1, function() error("inner", 0) end)
  r.error = not ok and err == "inner"
  r.restored = near(timeout(), 1.7)
  timeout(0)
  return r
end

function tests.leftover()
  -- a timer left armed by the previous handler is gone
  return { left = timeout() }
end

function tests.arm()
  timeout(0.3) -- not cleared: the server clears it when the handler returns
  return {}
end

-- A cleared timer must neither end the handler later nor cut short its waits, in Lua code
-- or in a system call (an HTTP handler's is even left running: src/server/timer.rs).
function tests.cleared()
  local r = {}
  timeout(0.2)
  r.prev = near(timeout(0), 0.2)
  r.left = timeout()
  local t0 = moonbridge_io.timeref()
  moonbridge_io.poll(nil, nil, 0.35) -- the old expiry comes during this wait
  r.waited = moonbridge_io.timeref() - t0 >= 0.34
  timeout(0.1)
  timeout(false)
  local c0 = os.clock()
  while os.clock() - c0 < 0.25 do end -- and during this computation
  r.after = timeout()
  return r
end

-- Armed again after a clear, the timer is the new one: it kills at its own time.
function tests.rearmkill()
  timeout(5)
  timeout(0)
  timeout(0.2)
  moonbridge_io.poll(nil, nil, 5)
  return { survived = true }
end

function tests.kill()
  io.stderr:write("about to time out\n")
  timeout(0.2)
  moonbridge_io.poll(nil, nil, 5)
  return { survived = true }
end

function tests.subkill()
  timeout(0.2, function() while true do end end)
  return { survived = true }
end

local function serialize(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = string.format("[%q]=%s", k, type(v) == "string" and string.format("%q", v) or tostring(v))
  end
  return "return {" .. table.concat(parts, ",") .. "}"
end

listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1,
  connect = function(s)
    local name = s:read(100, "\n"):gsub("\n", "")
    local r = tests[name]()
    r.pid = moonbridge_io.getpid()
    s:write(serialize(r))
    return true
  end,
  finish = function() io.stderr:write("finish ran\n") end }
]]

local function ask(srv, name)
  local reply, status = H.request(srv, name .. "\n", 10)
  if status ~= "eof" then return nil, status end
  return assert(load(reply))()
end

describe("timeout()", function()
  local srv
  setup(function() srv = H.start(APP) end)
  teardown(function()
    local code = H.stop(srv)
    H.cleanup(srv)
    assert.equal(0, code)
    assert.same({}, srv.leftover)
  end)

  it("sets, returns the previous time, reports the remaining time and clears", function()
    local r = assert(ask(srv, "plain"))
    assert.equal(0, r.none)
    assert.equal(0, r.prev0)
    assert.is_true(r.left5)
    assert.is_true(r.prev5)
    assert.is_true(r.prev10)
    assert.equal(0, r.after0)
    assert.is_true(r.prev_false)
    assert.equal(0, r.after_false)
    assert.matches("bad argument #1 to 'timeout' %(interval in seconds expected%)", r.neg)
    assert.matches("bad argument #1 to 'timeout' %(interval in seconds expected%)", r.str)
    assert.matches("bad argument #2 to 'timeout' %(function expected", r.badf)
  end)

  it("runs a function under a sub-timer; the shorter timer wins; the outer one goes on",
    function()
      local r = assert(ask(srv, "sub"))
      assert.is_true(r.results)
      assert.equal(0, r.after_sub)
      assert.is_true(r.inner_capped)
      assert.is_true(r.inner_short)
      assert.is_true(r.outer_after)
      assert.is_true(r.zero_sub)
      assert.is_true(r.error)
      assert.is_true(r.restored)
    end)

  it("is reset when a handler returns", function()
    local a = assert(ask(srv, "arm"))
    local b = assert(ask(srv, "leftover"))
    assert.equal(a.pid, b.pid) -- the same worker (max_fork = 1), still alive
    assert.equal(0, b.left)
    -- past the 0.3 s of the old timer, the worker is still there
    H.sleep(0.4)
    assert.equal(a.pid, assert(ask(srv, "leftover")).pid)
  end)

  it("lets a cleared timer expire unnoticed, in a wait and in Lua code", function()
    local r = assert(ask(srv, "cleared"))
    assert.is_true(r.prev)
    assert.equal(0, r.left)
    assert.is_true(r.waited)
    assert.equal(0, r.after)
    -- the same worker serves on; the timer the previous handler left is not its
    local again = assert(ask(srv, "cleared"))
    assert.equal(r.pid, again.pid)
    assert.is_true(again.waited)
    assert.is_nil(H.log_text(srv):find("exited prematurely"))
  end)

  it("kills with the timer armed after a clear, not the one before", function()
    local before = assert(ask(srv, "leftover")).pid
    local t0 = mio.timeref()
    local r, status = ask(srv, "rearmkill")
    assert.is_nil(r)
    assert.not_equal("eof", status)
    assert.is_true(mio.timeref() - t0 < 3)
    assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. before ..
      "%) of pool #1 exited prematurely due to timeout"), H.log_text(srv))
  end)

  it("kills the worker when it expires: logged, the client reset, finish skipped, replaced",
    function()
      local before = assert(ask(srv, "leftover")).pid
      local finishes = H.log_count(srv, "finish ran")
      local r, status = ask(srv, "kill")
      assert.is_nil(r)
      assert.not_equal("eof", status)
      assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. before ..
        "%) of pool #1 exited prematurely due to timeout"), H.log_text(srv))
      assert.equal(finishes, H.log_count(srv, "finish ran"))
      local after = assert(ask(srv, "leftover")).pid
      assert.not_equal(before, after)
    end)

  it("kills the worker when a sub-timer expires", function()
    local before = assert(ask(srv, "leftover")).pid
    local r = ask(srv, "subkill")
    assert.is_nil(r)
    assert.is_not_nil(H.wait_log(srv, "Worker process %(PID " .. before ..
      "%) of pool #1 exited prematurely due to timeout"), H.log_text(srv))
    assert.not_equal(before, assert(ask(srv, "leftover")).pid)
  end)
end)
