-- moonbridge_io.poll, catch_sigterm, timeref and getpid (manual "I/O library"; listen.md §6).
-- Cases that need controlled descriptors or signals run in a child interpreter (arg[-1]),
-- which finds the module through the inherited LUA_CPATH_5_x. Every child bounds its own
-- waits with poll timeouts; signals go to the child's PID only.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Prepended to every child script: `show(...)` prints "n:v1,v2,..." (newlines as \n) and
-- flushes.
local PRELUDE = [[
local mio = require "moonbridge_io"
local function show(...)
  local t = table.pack(...)
  local parts = {}
  for i = 1, t.n do parts[i] = (tostring(t[i]):gsub("\n", "\\n")) end
  io.stdout:write(t.n, ":", table.concat(parts, ","), "\n")
  io.stdout:flush()
end
]]

local function script_file(src)
  local path = helper.tmpname(".lua")
  local f = assert(io.open(path, "w"))
  f:write(PRELUDE, src)
  f:close()
  return path
end

-- Runs a child script to completion; `input` is a shell command whose output is its stdin.
-- Returns the output lines.
local function run(src, input)
  local path = script_file(src)
  local cmd = sh_quote(helper.lua) .. " " .. sh_quote(path) .. " 2>&1"
  if input then cmd = input .. " | " .. cmd end
  local p = assert(io.popen(cmd))
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  p:close()
  os.remove(path)
  return lines
end

-- Starts a child script in the background of a shell that reports its PID ("pid N") and,
-- once it ends, its exit status ("status N"; 128 + signal number if killed).
local function start(src)
  local path = script_file(src)
  -- the shell's own stderr is silenced: it reports a killed job as "Terminated"
  local p = assert(io.popen("exec 2>/dev/null; " .. sh_quote(helper.lua) .. " "
    .. sh_quote(path) .. ' 2>&1 & echo "pid $!"; wait $!; echo "status $?"'))
  return { p = p, path = path, lines = {} }
end

-- Reads output lines until `done(proc)` holds; false at EOF.
local function read_until(proc, done)
  while not done(proc) do
    local line = proc.p:read("l")
    if not line then return false end
    local pid = line:match("^pid (%d+)$")
    if pid then
      proc.pid = tonumber(pid)
    else
      proc.lines[#proc.lines + 1] = line
      if line == "ready" then proc.ready = true end
    end
  end
  return true
end

local function ready(proc) return proc.pid ~= nil and proc.ready end

-- Reads everything up to the exit status line; returns the output lines (without "pid").
local function finish(proc)
  read_until(proc, function() return false end)
  proc.p:close()
  os.remove(proc.path)
  return proc.lines
end

local function sigterm(pid)
  assert(os.execute("kill -TERM " .. pid))
end

describe("moonbridge_io.poll", function()
  it("returns true when a raw fd or a handle is ready for reading", function()
    -- the writer sends a line after 0.3 s and keeps the pipe open for a while
    local out = run([[
      local t0 = mio.timeref()
      show(mio.poll({[0] = true}))                -- nil timeout: waits for the data
      show(mio.timeref(t0) >= 0.25)
      show(mio.poll({[mio.stdin] = true}, nil, 5))
    ]], "{ sleep 0.3; printf 'hello\\n'; }")
    assert.same({ "1:true", "1:true", "1:true" }, out)
  end)

  it("treats a handle with buffered input or EOF as ready without waiting", function()
    local out = run([[
      show(mio.poll({[0] = true}, nil, 5))
      show(mio.stdin:read(1))                    -- buffers the rest of "hello\n"
      local t0 = mio.timeref()
      show(mio.poll({[mio.stdin] = true}, nil, 5))
      show(mio.timeref(t0) < 0.5)
      show(mio.poll({[0] = true}, nil, 0.1))     -- the kernel has nothing more
      show(mio.stdin:read(5))
      show(mio.poll({[mio.stdin] = true}, nil, 0.1))
      show(mio.poll({[mio.stdin] = true}, nil, 5)) -- the writer exits: EOF
      show(mio.stdin:read())
      show(mio.poll({[mio.stdin] = true}, nil, -1)) -- known EOF
    ]], "{ printf 'hello\\n'; sleep 1.5; }")
    assert.same({
      "1:true", "2:h,maxlen", "1:true", "1:true", "2:false,Timeout", "2:ello\\n,maxlen",
      "2:false,Timeout", "1:true", "2:,eof", "1:true",
    }, out)
  end)

  it("returns true when a raw fd or a handle is ready for writing", function()
    local out = run([[
      show(mio.poll(nil, {[1] = true}, 5))
      show(mio.poll(nil, {[mio.stdout] = true}, 5))
      show(mio.poll({}, {[mio.stdout] = true, [2] = false}, 5))
    ]])
    assert.same({ "1:true", "1:true", "1:true" }, out)
  end)

  it("times out with exactly false, \"Timeout\"", function()
    local t0 = mio.timeref()
    local r = table.pack(mio.poll(nil, nil, 0.2))
    local elapsed = mio.timeref(t0)
    assert.same({ n = 2, false, "Timeout" }, r)
    assert.is_true(elapsed >= 0.19 and elapsed < 2, "elapsed " .. elapsed)
    -- the message makes assert(moonbridge_io.poll(...)) raise "Timeout"
    local ok, err = pcall(function() assert(mio.poll({}, {}, 0)) end)
    assert.is_false(ok)
    assert.matches("Timeout", err)
  end)

  it("adds false as third value on timeout when woken by SIGTERM is requested", function()
    assert.same({ n = 3, false, "Timeout", false }, table.pack(mio.poll(nil, nil, 0.05, true)))
    assert.same({ n = 2, false, "Timeout" }, table.pack(mio.poll(nil, nil, 0.05, false)))
  end)

  it("returns at once for a negative timeout", function()
    local t0 = mio.timeref()
    assert.same({ n = 2, false, "Timeout" }, table.pack(mio.poll(nil, nil, -1)))
    assert.same({ n = 3, false, "Timeout", false }, table.pack(mio.poll({}, nil, -10, true)))
    assert.is_true(mio.timeref(t0) < 0.5)
  end)

  it("treats nil sets as empty and ignores entries whose value is false", function()
    -- stdout and stderr are writable, so only the false values keep this from returning true
    local sets = { [mio.stdout] = false, [1] = false, [2] = false, [mio.stderr] = false }
    assert.same({ n = 2, false, "Timeout" }, table.pack(mio.poll(sets, sets, 0.05)))
    assert.same({ n = 2, false, "Timeout" }, table.pack(mio.poll(nil, nil, 0)))
    assert.is_true(mio.poll(nil, { [mio.stderr] = "yes" }, 5))
  end)

  it("raises plain-string errors for bad arguments", function()
    local cases = {
      { { 5 }, "bad argument #1 to 'poll' (table expected, got number)" },
      { { nil, "x" }, "bad argument #2 to 'poll' (table expected, got string)" },
      { { { x = true } },
        "bad argument #1 to 'poll' (file descriptor or I/O handle expected as key, got string)" },
      { { nil, { [{}] = true } },
        "bad argument #2 to 'poll' (file descriptor or I/O handle expected as key, got table)" },
      { { { [io.stdout] = true } },
        "bad argument #1 to 'poll' (file descriptor or I/O handle expected as key, got FILE*)" },
      { { { [-1] = true } }, "bad argument #1 to 'poll' (invalid file descriptor)" },
      { { { [2 ^ 40] = true } }, "bad argument #1 to 'poll' (invalid file descriptor)" },
      { { { [1.5] = true } }, "bad argument #1 to 'poll' (number has no integer representation)" },
      { { nil, nil, "1" }, "bad argument #3 to 'poll' (number expected, got string)" },
      { { nil, nil, 0 / 0 }, "bad argument #3 to 'poll' (timeout is NaN)" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(mio.poll, table.unpack(case[1], 1, 4))
      assert.is_false(ok)
      assert.equals("string", type(err))
      assert.equals(case[2], err)
    end
  end)

  it("raises a plain-string error for a closed handle", function()
    local out = run([[
      mio.stdin:close()
      show(pcall(mio.poll, {[mio.stdin] = true}, nil, 0))
      show(pcall(mio.poll, nil, {[mio.stdin] = true}, 0))
    ]])
    assert.same({
      "2:false,Attempt to poll a closed I/O handle",
      "2:false,Attempt to poll a closed I/O handle",
    }, out)
  end)
end)

describe("moonbridge_io.catch_sigterm", function()
  it("makes poll(..., true) return false, \"SIGTERM received\", true", function()
    local proc = start([[
      mio.catch_sigterm()
      mio.catch_sigterm() -- a second call is harmless
      print("ready"); io.stdout:flush()
      local t0 = mio.timeref()
      show(mio.poll(nil, nil, 10, true))
      show(mio.timeref(t0) < 5)
      show(mio.poll({[0] = true}, {[1] = true}, 10, true)) -- the flag stays set
    ]])
    assert.is_true(read_until(proc, ready))
    sigterm(proc.pid)
    assert.same({
      "ready",
      "3:false,SIGTERM received,true",
      "1:true",
      "3:false,SIGTERM received,true",
      "status 0",
    }, finish(proc))
  end)

  it("does not end a poll without the 4th argument, which keeps waiting", function()
    local proc = start([[
      mio.catch_sigterm()
      print("ready"); io.stdout:flush()
      local t0 = mio.timeref()
      show(mio.poll(nil, nil, 1.5))
      show(mio.timeref(t0) >= 1.45)
      show(mio.poll(nil, nil, 10, true)) -- the SIGTERM of earlier is remembered
    ]])
    assert.is_true(read_until(proc, ready))
    local t0 = mio.timeref()
    sigterm(proc.pid)
    -- the signal was sent while the child's first poll was still waiting
    assert.is_true(mio.timeref(t0) < 1)
    assert.same({
      "ready", "2:false,Timeout", "1:true", "3:false,SIGTERM received,true", "status 0",
    }, finish(proc))
  end)

  it("is needed: without it SIGTERM terminates the process", function()
    local proc = start([[
      print("ready"); io.stdout:flush()
      show(mio.poll(nil, nil, 10, true))
      print("survived")
    ]])
    assert.is_true(read_until(proc, ready))
    sigterm(proc.pid)
    assert.same({ "ready", "status 143" }, finish(proc))
  end)

  it("leaves SIGTERM deliverable to programs started with io.popen", function()
    local out = run([[
      mio.catch_sigterm()
      local p = io.popen("echo $$; exec sleep 5")
      local pid = p:read("l")
      os.execute("kill -TERM " .. pid)
      show(p:close())
    ]])
    assert.same({ "3:nil,signal,15" }, out)
  end)
end)

describe("moonbridge_io.timeref", function()
  it("is a monotonic clock in seconds", function()
    local t1 = mio.timeref()
    assert.equals("float", math.type(t1))
    mio.poll(nil, nil, 0.05)
    local t2 = mio.timeref()
    assert.is_true(t2 - t1 >= 0.045 and t2 - t1 < 2)
  end)

  it("returns the time since a previous reference", function()
    local t1 = mio.timeref()
    mio.poll(nil, nil, 0.05)
    local d = mio.timeref(t1)
    assert.equals("float", math.type(d))
    assert.is_true(d >= 0.045 and d < 2)
    assert.is_true(math.abs(mio.timeref(mio.timeref())) < 0.5)
  end)

  it("raises a plain-string error for a non-number", function()
    local ok, err = pcall(mio.timeref, "x")
    assert.is_false(ok)
    assert.equals("bad argument #1 to 'timeref' (number expected, got string)", err)
    ok, err = pcall(mio.timeref, {})
    assert.equals("bad argument #1 to 'timeref' (number expected, got table)", err)
  end)
end)

describe("moonbridge_io.getpid", function()
  it("returns the pid the shell sees, as an integer", function()
    local pid = mio.getpid()
    assert.equals("integer", math.type(pid))
    local p = io.popen("echo $PPID")
    local ppid = tonumber(p:read("l"))
    p:close()
    assert.equals(pid, ppid)
  end)

  it("differs in another process", function()
    local p = io.popen("echo $$; exec " .. sh_quote(helper.lua)
      .. " -e 'print(require(\"moonbridge_io\").getpid())'")
    local shell, child = tonumber(p:read("l")), tonumber(p:read("l"))
    p:close()
    assert.equals(shell, child)
    assert.are_not.equal(mio.getpid(), child)
  end)
end)
