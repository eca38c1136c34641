-- Interval and main listeners (listen.md §2): timing of strict and non-strict intervals
-- (bounded, with tolerances for a loaded machine), no interval running twice at once, the
-- handler's argument, and a main listener whose end stops the server with exit code 0.
-- Handlers report through stderr, which the master logs as "[Pool #N, PID P] ...".
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

-- Times (moonbridge_io.timeref, the system's monotonic clock) a handler logged as `word`.
local function times(srv, word)
  local out = {}
  for t in H.log_text(srv):gmatch("%] " .. word .. " ([%d%.]+)") do out[#out + 1] = tonumber(t) end
  return out
end

local function gaps(ts)
  local out = {}
  for i = 2, #ts do out[#out + 1] = ts[i] - ts[i - 1] end
  return out
end

local function assert_between(lo, hi, values, what)
  for i, v in ipairs(values) do
    assert(v >= lo and v <= hi, string.format("%s #%d: %.3f not in [%.2f, %.2f] (all: %s)",
      what, i, v, lo, hi, table.concat(values, ", ")))
  end
end

local function ticker(opts)
  return string.format([[
listen{ {proto="interval", name="tick", delay=%s, strict=%s}, pre_fork=1, min_fork=1,
  connect = function(e)
    io.stderr:write("start ", moonbridge_io.timeref(), "\n")
    moonbridge_io.poll(nil, nil, %s)
    io.stderr:write("end ", moonbridge_io.timeref(), "\n")
    return true
  end }
]], opts.delay, tostring(opts.strict), opts.work)
end

describe("interval listeners", function()
  local srv
  after_each(function()
    if srv then
      H.stop_clean(srv)
      srv = nil
    end
  end)

  it("non-strict: first run one delay after start, then delay after the end of each run",
    function()
      local t0 = mio.timeref()
      srv = H.start(ticker { delay = 0.2, strict = false, work = 0.1 })
      assert.is_truthy(H.wait_for(5, function() return #times(srv, "start") >= 5 end))
      local starts = times(srv, "start")
      assert_between(0.2, 0.2 + 1.0, { starts[1] - t0 }, "first run after start")
      assert_between(0.28, 0.45, gaps(starts), "start to start")
    end)

  it("strict: runs stay on the delay grid", function()
    srv = H.start(ticker { delay = 0.2, strict = true, work = 0.1 })
    assert.is_truthy(H.wait_for(5, function() return #times(srv, "start") >= 6 end))
    local g = gaps(times(srv, "start"))
    assert_between(0.12, 0.3, g, "start to start")
    local sum = 0
    for _, x in ipairs(g) do sum = sum + x end
    assert_between(0.18, 0.23, { sum / #g }, "mean period")
  end)

  it("strict: an overrunning run skips the missed slots", function()
    srv = H.start(ticker { delay = 0.2, strict = true, work = 0.3 })
    assert.is_truthy(H.wait_for(6, function() return #times(srv, "start") >= 4 end))
    assert_between(0.33, 0.5, gaps(times(srv, "start")), "start to start")
  end)

  it("never runs the same interval twice at once, even with idle workers", function()
    srv = H.start([[
listen{ {proto="interval", delay=0.05, strict=true}, pre_fork=3, min_fork=3, fork_delay=0,
  connect = function(e)
    io.stderr:write("start ", moonbridge_io.timeref(), "\n")
    moonbridge_io.poll(nil, nil, 0.25)
    io.stderr:write("end ", moonbridge_io.timeref(), "\n")
    return true
  end }
]])
    assert.is_truthy(H.wait_for(6, function() return #times(srv, "end") >= 4 end))
    local starts, ends = times(srv, "start"), times(srv, "end")
    for i = 2, #starts do
      assert(starts[i] >= ends[i - 1], string.format("run %d started at %.3f before run %d ended at %.3f",
        i, starts[i], i - 1, ends[i - 1]))
    end
    local pids = {}
    for p in H.log_text(srv):gmatch("PID (%d+)%] start") do pids[p] = true end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.is_true(n >= 1)
  end)

  it("runs on an idle worker while another one holds a long connection", function()
    srv = H.start([[
listen{ {proto="interval", delay=0.1}, {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=2, max_fork=2,
  connect = function(s)
    if s.interval then
      io.stderr:write("tick ", moonbridge_io.timeref(), "\n")
    else
      s:write("holding\n"):flush()
      s:read(100, "\n")
    end
    return true
  end }
]])
    assert.is_not_nil(H.wait_workers(srv, 2))
    local c = assert(H.connect(srv))
    assert.equal("holding\n", H.read_line(c))
    local t0 = mio.timeref()
    local n0 = #times(srv, "tick")
    local ticking = H.wait_for(3, function()
      local after = 0
      for _, t in ipairs(times(srv, "tick")) do
        if t > t0 then after = after + 1 end
      end
      return after >= 3
    end)
    c:write("bye\n"):flush()
    c:close()
    assert.is_true(ticking, "intervals stalled behind a connection: " .. n0)
  end)

  it("passes an object with the interval's name and no I/O methods", function()
    srv = H.start([[
listen{ {proto="interval", name="named", delay=0.1}, {proto="interval", delay=0.1},
  pre_fork=0, min_fork=0, max_fork=1,
  connect = function(e)
    io.stderr:write(string.format("interval=%q read=%s main=%s\n", e.interval, type(e.read),
      tostring(e.main)))
    return true
  end }
]], { args = { "-d" } })
    assert.is_not_nil(H.wait_log(srv, 'interval="named" read=nil main=nil'), H.log_text(srv))
    assert.is_not_nil(H.wait_log(srv, 'interval="" read=nil main=nil'), H.log_text(srv))
    -- -d traces the job queue
    assert.matches("Queued job #1 of pool #1", H.log_text(srv))
    assert.matches("Worker process %(PID %d+%) of pool #1: took job #2", H.log_text(srv))
    -- a pool of intervals alone forks on demand: one worker (max_fork = 1)
    assert.equal(1, #H.workers(srv))
  end)

  it("a worker stops after a handler not returning true; the interval goes on", function()
    srv = H.start([[
listen{ {proto="interval", delay=0.1}, pre_fork=1, min_fork=1, max_fork=1,
  connect = function(e)
    io.stderr:write("tick ", moonbridge_io.timeref(), "\n")
    return false
  end }
]])
    assert.is_truthy(H.wait_for(5, function() return #times(srv, "tick") >= 3 end))
    local pids = {}
    for p in H.log_text(srv):gmatch("PID (%d+)%] tick") do pids[#pids + 1] = p end
    assert.not_equal(pids[1], pids[2])
    assert.not_equal(pids[2], pids[3])
  end)

  it("an interval whose worker crashes runs again", function()
    srv = H.start([[
listen{ {proto="interval", delay=0.1}, pre_fork=1, min_fork=1, max_fork=2,
  connect = function(e)
    io.stderr:write("tick ", moonbridge_io.timeref(), "\n")
    os.exit(5)
  end }
]])
    assert.is_truthy(H.wait_for(5, function() return #times(srv, "tick") >= 3 end),
      H.log_text(srv))
    assert.is_true(H.log_count(srv, "exited with code 5") >= 2)
  end)

  -- The gap between a worker receiving a job from its pool's queue and claiming it: a
  -- worker killed there (the server's fault injection makes one end there, once) took the
  -- job's message with it, and the interval never ran again.
  it("an interval whose worker ends right after receiving it runs again", function()
    local marker = H.tmpdir() .. "/die-once"
    H.write_file(marker, "")
    srv = H.start(ticker { delay = 0.2, strict = false, work = 0 }, {
      command = "MOONBRIDGE_TEST_DIE_AFTER_RECEIVING_JOB=" .. H.quote(marker) .. " "
        .. H.quote(H.launcher) .. " $APP",
    })
    assert.is_truthy(H.wait_for(8, function() return #times(srv, "start") >= 3 end),
      H.log_text(srv))
    assert.is_nil(H.read_file(marker), "the fault was not injected")
    assert.are.equal(1, H.log_count(srv, "exited with code 9"), H.log_text(srv))
    assert.are.equal(1, H.log_count(srv, "queued again"), H.log_text(srv))
  end)
end)

describe("main listeners", function()
  it("run once at start; when the handler returns the server exits with code 0", function()
    local srv = H.start([[
listen{ {proto="main", name="boss"},
  connect = function(e)
    io.stderr:write(string.format("main=%q interval=%s\n", e.main, tostring(e.interval)))
    moonbridge_io.poll(nil, nil, 0.2)
  end,
  finish = function() io.stderr:write("main finish\n") end }
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) s:write("up\n") return true end,
  finish = function() io.stderr:write("tcp finish\n") end }
]])
    local code = H.wait_exit(srv, 10)
    H.stop(srv)
    local log = H.log_text(srv)
    H.cleanup(srv)
    assert.equal(0, code, log)
    assert.matches('main="boss" interval=nil', log)
    assert.matches("Main handler finished: graceful shutdown", log)
    assert.matches("main finish", log)
    assert.matches("tcp finish", log)
    assert.same({}, srv.leftover)
    local _, n = log:gsub('main="boss"', "")
    assert.equal(1, n)
  end)

  it("a main handler returning true keeps serving its pool; the server ends with its worker",
    function()
      local srv = H.start([[
listen{ {proto="main"}, {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=0, min_fork=0, max_fork=1,
  connect = function(s)
    if s.main then
      io.stderr:write("main ran\n")
      return true
    end
    local line = s:read(100, "\n")
    s:write("served by ", moonbridge_io.getpid(), "\n")
    return line ~= "last\n"
  end }
]])
      assert.is_not_nil(H.wait_log(srv, "main ran"))
      local pid = H.wait_log(srv, "%[Pool #1, PID (%d+)%] main ran")
      assert.equal("served by " .. pid .. "\n", (H.request(srv, "more\n")))
      assert.equal("served by " .. pid .. "\n", (H.request(srv, "last\n")))
      local code = H.wait_exit(srv, 10)
      H.stop(srv)
      local log = H.log_text(srv)
      H.cleanup(srv)
      assert.equal(0, code, log)
      assert.same({}, srv.leftover)
    end)

  it("an error in the main handler also ends the server with code 0", function()
    local code, out = H.launch([[
listen{ {proto="main"}, connect = function() error("main broke") end }
]], {}, 10)
    assert.equal(0, code, out)
    assert.matches('Error in "connect" function: .*main broke', out)
  end)
end)
