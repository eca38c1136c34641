-- moonbridge_io.exec and child handles (reference.txt "moonbridge_io.exec"; listen.md §6).
-- Every child a spec starts is waited for, killed by its handle, or collected (which kills
-- and reaps it); blocking reads end because the child closes its pipes when it exits.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

-- The pid of this interpreter (getpid may live in another part of the module).
local function self_pid()
  if mio.getpid then return mio.getpid() end
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

local function shell_lines(cmd)
  local p = io.popen(cmd)
  local lines = {}
  for line in p:lines() do lines[#lines + 1] = line end
  p:close()
  return lines
end

-- Open descriptors of this process, by number. The pipe io.popen reads from is left out:
-- its write end may still be open in this process for a moment while `ls` runs.
-- Open descriptors of this process: fd -> what it refers to ("pipe:[123]", a path). A
-- descriptor that closes while it is listed (its target reads as empty) is left out.
local function fd_set()
  local set = {}
  local script = "me=$(readlink /proc/$$/fd/1); for f in /proc/" .. self_pid() .. "/fd/*; do "
    .. "t=$(readlink $f); [ \"$t\" = \"$me\" ] || echo ${f##*/} $t; done"
  for _, line in ipairs(shell_lines("sh -c '" .. script .. "'")) do
    local fd, target = line:match("^(%d+) (.+)$")
    if fd then set[tonumber(fd)] = target end
  end
  return set
end

-- Descriptors open in `after` that were not open (to the same thing) in `before`: what a
-- piece of code leaked. (Descriptors of earlier specs may close meanwhile; that is fine.)
local function new_fds(before, after)
  local new = {}
  for fd, target in pairs(after) do
    if before[fd] ~= target then new[#new + 1] = fd .. " " .. target end
  end
  table.sort(new)
  return new
end

-- A full collection (twice: finalizers may free more).
local function full_gc()
  collectgarbage()
  collectgarbage()
end

-- Zombie children of this process ("Z" in the state field of /proc/<pid>/stat).
local function zombies()
  return shell_lines("awk '$4 == " .. self_pid() .. " && $3 == \"Z\" { print $1 }' "
    .. "/proc/[0-9]*/stat 2>/dev/null")
end

local function process_exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

-- Busy-waits (bounded) until wait_nb reports a status.
local function wait_nb_until_exit(child, seconds)
  local deadline = os.time() + seconds
  repeat
    local status, msg = child:wait_nb()
    if status ~= false then return status, msg end
  until os.time() > deadline
  error("child did not exit within " .. seconds .. " s")
end

-- A child running `sh -c script` that reports its pid on the first line of stdout.
local function exec_reporting_pid(script)
  local child = assert(mio.exec("/bin/sh", "-c", "echo $$; " .. script))
  local line = assert(child.stdout:read(nil, "\n"))
  return child, assert(tonumber(line))
end

describe("moonbridge_io.exec", function()
  it("runs /bin/cat with its stdin and stdout as pipe handles", function()
    local child = assert(mio.exec("/bin/cat"))
    for _, name in ipairs { "stdin", "stdout", "stderr" } do
      assert.matches("moonbridge_io handle %(pipe", tostring(child[name]))
    end
    assert.matches("^moonbridge_io child %(pid %d+%)$", tostring(child))
    assert.equals(child.stdin, child.stdin:write("hello\n", "world", 42))
    assert.is_true(child.stdin:close())
    assert.same({ "hello\nworld42", "eof" }, { child.stdout:read() })
    assert.same({ "", "eof" }, { child.stderr:read() })
    assert.equals(0, child:wait())
  end)

  it("round-trips a larger binary stream when stdin is finished", function()
    local data = helper.pattern(50000)
    local child = assert(mio.exec("cat"))  -- found through PATH
    assert(child.stdin:write(data))
    assert.is_true(child.stdin:finish())
    local out, status = child.stdout:read()
    assert.equals("eof", status)
    assert.equals(#data, #out)
    assert.is_true(out == data)
    assert.equals(0, child:wait())
  end)

  it("passes numbers as arguments", function()
    local child = assert(mio.exec("/bin/echo", 42, "x y"))
    assert.equals("42 x y\n", (child.stdout:read()))
    assert.equals(0, child:wait())
  end)

  it("returns the exit code from wait() once; the child is then collected", function()
    local child = assert(mio.exec("/bin/sh", "-c", "exit 3"))
    assert.equals(3, child:wait())
    assert.matches("status 3", tostring(child))
    -- an exited, collected child stays ready for poll
    assert.is_true(mio.poll({ [child] = true }, nil, 0))
  end)

  describe("on a collected child", function()
    local WAIT = "Attempt to wait for an already collected child process"
    local KILL = "Attempt to kill an already collected child process"
    local function err_of(f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      assert.is_string(err)  -- a plain string, not an error object
      return err
    end
    -- Closes the pipes now rather than at some later collection.
    local function close_pipes(child)
      for _, name in ipairs { "stdin", "stdout", "stderr" } do child[name]:close() end
    end
    -- Every way of collecting a child, each followed by every method.
    local collectors = {
      wait = function(child) return child:wait() end,
      wait_nb = function(child) return wait_nb_until_exit(child, 5) end,
      wait_call = function(child)
        local deadline = os.time() + 5
        return child:wait_call(function()
          assert(os.time() <= deadline, "wait_call did not finish")
        end)
      end,
      wait_yield = function(child)
        local co = coroutine.wrap(function() return "done", child:wait_yield() end)
        local deadline = os.time() + 5
        while true do
          local tag, status = co()
          if tag == "done" then return status end
          assert(os.time() <= deadline, "wait_yield did not finish")
        end
      end,
    }
    for _, how in ipairs { "wait", "wait_nb", "wait_call", "wait_yield" } do
      it("collected by " .. how .. "(), every wait form and kill raise", function()
        local child = assert(mio.exec("/bin/sh", "-c", "exit 4"))
        assert.equals(4, collectors[how](child))
        assert.equals(WAIT, err_of(child.wait, child))
        assert.equals(WAIT, err_of(child.wait_nb, child))
        assert.equals(WAIT, err_of(child.wait_call, child, function() error("called") end))
        assert.equals(WAIT, err_of(child.wait_yield, child))
        assert.equals(KILL, err_of(child.kill, child))
        assert.equals(KILL, err_of(child.kill, child, 15))
        -- the check comes after the argument checks, as in the original
        assert.equals("bad argument #1 to 'kill' (number expected, got string)",
          err_of(child.kill, child, "TERM"))
        -- the error is raised each time, and the handle stays usable for tostring
        assert.equals(WAIT, err_of(child.wait, child))
        assert.matches("status 4", tostring(child))
        close_pipes(child)
      end)
    end

    it("a child killed and then waited for is collected too", function()
      local child = assert(mio.exec("/bin/cat"))
      assert.equals(child, child:kill(15))
      assert.equals(-15, child:wait())
      assert.equals(KILL, err_of(child.kill, child, 9))
      assert.equals(WAIT, err_of(child.wait_nb, child))
      close_pipes(child)
    end)

    it("a running child's wait_nb does not collect it", function()
      local child = assert(mio.exec("/bin/cat"))
      assert.same({ false, "Process is still running" }, { child:wait_nb() })
      assert.same({ false, "Process is still running" }, { child:wait_nb() })
      assert.equals(child, child:kill())
      assert.equals(-9, child:wait())
      close_pipes(child)
    end)

    if helper.version == "54" then
      it("a to-be-closed child that went out of scope is collected", function()
        local chunk = assert(load([[
          local mio, start = ...
          local kept
          do
            local child <close>, pid = start("exec cat")
            kept = child
          end
          return kept
        ]]))
        local child = chunk(mio, exec_reporting_pid)
        assert.equals(WAIT, err_of(child.wait, child))
        assert.equals(WAIT, err_of(child.wait_nb, child))
        assert.equals(KILL, err_of(child.kill, child))
        assert.matches("status %-9", tostring(child))
        close_pipes(child)
      end)
    end
  end)

  it("captures stderr separately", function()
    local child = assert(mio.exec("/bin/sh", "-c", "echo out; echo err >&2"))
    assert.equals("out\n", (child.stdout:read()))
    assert.equals("err\n", (child.stderr:read()))
    assert.equals(0, child:wait())
  end)

  it("kill(15) makes wait() return -15, and kill returns the child handle", function()
    local child = assert(mio.exec("/bin/cat"))
    assert.equals(child, child:kill(15))
    assert.equals(-15, wait_nb_until_exit(child, 5))
  end)

  it("kill() sends SIGKILL by default", function()
    local child = assert(mio.exec("/bin/cat"))
    assert.equals(child, child:kill())
    assert.equals(-9, wait_nb_until_exit(child, 5))
  end)

  it("signals a child that has exited but is not reaped yet", function()
    local child = assert(mio.exec("/bin/true"))
    assert.same({ "", "eof" }, { child.stdout:read() })
    assert.equals(child, child:kill(15))
    local status = child:wait()
    assert.is_true(status == 0 or status == -15)
  end)

  it("wait_nb() reports a running child, then its status", function()
    local child = assert(mio.exec("/bin/cat"))
    assert.same({ false, "Process is still running" }, { child:wait_nb() })
    child.stdin:close()
    assert.equals(0, wait_nb_until_exit(child, 5))
  end)

  it("wait_call() calls waitfunc(child, 'r', first, moonbridge_io) until exit", function()
    local child = assert(mio.exec("/bin/cat"))
    local calls, deadline = {}, os.time() + 5
    local status = child:wait_call(function(...)
      calls[#calls + 1] = table.pack(...)
      if #calls == 1 then child.stdin:close() end
      assert(os.time() <= deadline, "wait_call did not finish")
    end)
    assert.equals(0, status)
    assert.is_true(#calls >= 1)
    for i, c in ipairs(calls) do
      assert.equals(4, c.n)
      assert.equals(child, c[1])
      assert.equals("r", c[2])
      assert.equals(i == 1, c[3])
      assert.equals(mio, c[4])
    end
  end)

  it("wait_yield() yields from a coroutine until the child exits", function()
    local child = assert(mio.exec("/bin/sh", "-c", "read line; exit 7"))
    local co = coroutine.create(function() return "done", child:wait_yield() end)
    local ok, a, b, c, d = coroutine.resume(co)
    assert.is_true(ok)
    assert.equals("suspended", coroutine.status(co))
    assert.same({ child, "r", true, mio }, { a, b, c, d })
    child.stdin:write("go\n")
    child.stdin:flush()
    local deadline = os.time() + 5
    local results
    repeat
      results = { coroutine.resume(co) }
      assert.is_true(results[1])
      if coroutine.status(co) == "suspended" then assert.is_false(results[4]) end
    until coroutine.status(co) == "dead" or os.time() > deadline
    assert.same({ true, "done", 7 }, results)
  end)

  it("returns nil and a message for a missing program, leaking nothing", function()
    full_gc()
    local before = fd_set()
    local child, err = mio.exec("/nonexistent/program")
    assert.is_nil(child)
    assert.equals("Could not execute: No such file or directory", err)
    child, err = mio.exec("no-such-program-in-path")
    assert.is_nil(child)
    assert.equals("Could not execute: No such file or directory", err)
    child, err = mio.exec("/etc")
    assert.is_nil(child)
    assert.equals("Could not execute: Permission denied", err)
    full_gc()
    assert.same({}, new_fds(before, fd_set()))
    assert.same({}, zombies())
  end)

  it("raises plain-string errors for bad arguments", function()
    local function err_of(...)
      local ok, err = pcall(...)
      assert.is_false(ok)
      assert.is_string(err)
      return err
    end
    assert.equals("bad argument #1 to 'exec' (string expected, got no value)", err_of(mio.exec))
    assert.equals("bad argument #1 to 'exec' (string expected, got nil)", err_of(mio.exec, nil))
    assert.equals("bad argument #3 to 'exec' (string expected, got table)",
      err_of(mio.exec, "/bin/echo", "a", {}))
    assert.equals("bad argument #2 to 'exec' (string expected, got boolean)",
      err_of(mio.exec, "/bin/echo", true))
    assert.equals("bad argument #2 to 'exec' (string contains a NUL byte)",
      err_of(mio.exec, "/bin/echo", "a\0b"))
    local child = assert(mio.exec("/bin/cat"))
    assert.equals("bad argument #1 to 'kill' (number expected, got string)",
      err_of(child.kill, child, "TERM"))
    assert.equals("bad argument #1 to 'kill' (invalid signal number)", err_of(child.kill, child, 1000))
    assert.matches("^bad self to 'wait'", err_of(child.wait, 42))
    assert.matches("^bad self to 'wait_nb'", err_of(child.wait_nb, child.stdin))
    child:kill()
    assert.equals(-9, child:wait())
  end)

  it("gives the program default signal handling and an empty signal mask", function()
    -- moonbridge_io ignores SIGPIPE; the exec'd program must not inherit that
    local child = assert(mio.exec("/bin/sh", "-c", "kill -PIPE $$; echo survived"))
    assert.equals("", (child.stdout:read()))
    assert.equals(-13, child:wait())
    child = assert(mio.exec("/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"))
    assert.equals("SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n", (child.stdout:read()))
    assert.equals(0, child:wait())
  end)

  it("passes none of its own descriptors to the program", function()
    local holder = assert(mio.exec("/bin/cat"))  -- its pipes and pidfd are open meanwhile
    local inherited = {}  -- what any child inherits here (busted's own descriptors)
    for _, name in ipairs(shell_lines("ls /proc/self/fd")) do inherited[tonumber(name)] = true end
    local child = assert(mio.exec("/bin/ls", "/proc/self/fd"))
    local listing = child.stdout:read()
    assert.equals(0, child:wait())
    for name in listing:gmatch("%d+") do
      local fd = tonumber(name)
      assert.is_true(fd <= 2 or inherited[fd] == true, "descriptor " .. fd .. " leaked")
    end
    holder:kill()
    assert.equals(-9, holder:wait())
  end)

  it("works when the process has closed its standard streams", function()
    local script = helper.tmpname(".lua")
    local f = assert(io.open(script, "w"))
    f:write(string.format("package.cpath = %q\n", package.cpath), [[
      local mio = require "moonbridge_io"
      local child = assert(mio.exec("/bin/sh", "-c", "cat; echo E >&2"))
      child.stdin:write("x")
      child.stdin:close()
      print(child.stdout:read(), child.stderr:read(), child:wait())
    ]])
    f:close()
    -- fds 0 and 2 closed: the new pipes land on them and must not collide in the child
    local out = shell_lines(helper.lua .. " " .. script .. " 0<&- 2>&-")
    os.remove(script)
    assert.equals("x\tE\n\t0", table.concat(out, "\n"))
  end)

  it("kills and reaps a collected child, leaving no zombie", function()
    -- started in their own frame, so that no stack slot keeps a child handle alive
    local pids = (function()
      local list = {}
      for i = 1, 3 do
        local _, pid = exec_reporting_pid("exec cat")
        list[i] = pid
        assert.is_true(process_exists(pid))
      end
      return list
    end)()
    full_gc()
    for _, pid in ipairs(pids) do
      assert.is_false(process_exists(pid), "child " .. pid .. " still exists")
    end
    assert.same({}, zombies())
  end)

  it("leaks no descriptor and leaves no zombie over many runs", function()
    full_gc()
    local before = fd_set()
    for _ = 1, 200 do
      local child = assert(mio.exec("/bin/true"))
      assert.equals(0, child:wait())
    end
    for _ = 1, 20 do
      local child = assert(mio.exec("/bin/sh", "-c", "exit 5"))
      assert.equals(5, wait_nb_until_exit(child, 5))
    end
    for _ = 1, 5 do
      assert(mio.exec("/bin/cat"))  -- dropped without waiting
      local child = assert(mio.exec("/bin/cat"))
      child:kill(15)
    end
    full_gc()
    assert.same({}, new_fds(before, fd_set()))
    assert.same({}, zombies())
  end)

  if helper.version == "54" then
    it("kills and reaps a to-be-closed child that goes out of scope", function()
      local pid
      local chunk = assert(load([[
        local mio, start = ...
        local child <close>, pid = start("exec cat")
        return pid
      ]]))
      pid = chunk(mio, exec_reporting_pid)
      assert.is_false(process_exists(pid))
    end)
  end
end)
