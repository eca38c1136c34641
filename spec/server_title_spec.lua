-- moonbridge_core.set_title (what ps shows for a process) and moonbridge_core.resolve (the
-- launcher's check that a listen address would bind). Titles are set in child processes
-- only (a Lua one-liner started with moonbridge_io.exec, and the workers of a server), each
-- stopped by its own handle or PID; every wait is bounded.
local mio = require "moonbridge_io"
local helper = require "spec.helper"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

-- The core table, loaded as lua/moonbridge.lua does.
local function load_core()
  local path = assert(package.searchpath("moonbridge_io", package.cpath))
  return assert(package.loadlib(path, "luaopen_moonbridge_core"))()
end

local read_file = H.read_file

-- A child interpreter that reports the size of its argv area, sets each title in turn
-- (reporting set_title's results), then waits until its stdin closes.
local CHILD = [[
local titles = ...
local path = assert(package.searchpath("moonbridge_io", package.cpath))
local core = assert(package.loadlib(path, "luaopen_moonbridge_core"))()
local f = assert(io.open("/proc/self/cmdline", "rb"))
io.write(#f:read("a"), "\n")
f:close()
for i, title in ipairs(titles) do
  io.write(tostring(core.set_title(title)), "\n")
  io.stdout:flush()
  if i < #titles then io.read("l") end -- the spec says when to go on
end
io.read("a")
]]

-- Starts CHILD with a list of titles given as Lua expressions (so that a long title need
-- not be in the command line itself); returns the child handle and its stdout.
local function start_child(titles)
  local code = CHILD:gsub("local titles = %.%.%.", function()
    return "local titles = {" .. table.concat(titles, ", ") .. "}"
  end)
  local child = assert(mio.exec(helper.lua, "-e", code))
  return child, child.stdout
end

-- One line of the child's output, within a deadline.
local function line_of(h)
  assert.is_true(mio.poll({ [h] = true }, nil, 5), "child did not answer")
  local line = assert(h:read(nil, "\n"))
  return (line:gsub("\n$", ""))
end

local function pid_of(child)
  return assert(tonumber(tostring(child):match("pid (%d+)")))
end

local function stop(child)
  child.stdin:close()
  local deadline = mio.timeref() + 5
  local status
  repeat
    status = child:wait_nb()
    if status == false then mio.poll(nil, nil, 0.02) end
  until status ~= false or mio.timeref() > deadline
  if status == false then child:kill(); status = child:wait() end
  child.stdout:close()
  child.stderr:close()
  return status
end

local function ps_args(pid)
  local p = assert(io.popen("ps -o args= -p " .. pid))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

describe("moonbridge_core.set_title", function()
  it("sets /proc/<pid>/cmdline (NUL-padded), comm (15 bytes) and what ps shows", function()
    local title = "moonbridge: master app.lua"
    local child, out = start_child { string.format("%q", title) }
    local pid = pid_of(child)
    local size = tonumber(line_of(out))
    assert.equals("true", line_of(out))
    assert.equals(title:sub(1, 15) .. "\n", read_file("/proc/" .. pid .. "/comm"))
    local cmdline = read_file("/proc/" .. pid .. "/cmdline")
    assert.equals(size, #cmdline, "written within the argv area only")
    assert.equals(title .. ("\0"):rep(size - #title), cmdline)
    assert.equals(title, ps_args(pid))
    assert.equals(0, stop(child))
  end)

  it("truncates a title longer than the argv area, keeping a final NUL", function()
    local long = ("x"):rep(4000) .. "END"
    local child, out = start_child { '"first"', '("x"):rep(4000) .. "END"', '"short"' }
    local size = tonumber(line_of(out))
    assert.is_true(size < #long)
    assert.equals("true", line_of(out))
    local pid = pid_of(child)
    assert.equals("first\n", read_file("/proc/" .. pid .. "/comm"))
    assert.equals("first" .. ("\0"):rep(size - 5), read_file("/proc/" .. pid .. "/cmdline"))
    child.stdin:write("next\n"):flush()
    assert.equals("true", line_of(out))
    assert.equals(long:sub(1, size - 1) .. "\0", read_file("/proc/" .. pid .. "/cmdline"))
    assert.equals(("x"):rep(15) .. "\n", read_file("/proc/" .. pid .. "/comm"))
    -- a shorter title after a longer one leaves nothing of the old one behind
    child.stdin:write("next\n"):flush()
    assert.equals("true", line_of(out))
    assert.equals("short" .. ("\0"):rep(size - 5), read_file("/proc/" .. pid .. "/cmdline"))
    assert.equals("short\n", read_file("/proc/" .. pid .. "/comm"))
    -- the environment after the argv area is untouched
    assert.matches("LUA_CPATH_5_%d=", read_file("/proc/" .. pid .. "/environ"))
    assert.equals(0, stop(child))
  end)

  it("works in each forked worker, leaving the master's title alone", function()
    local srv = H.start([[
      local core = require("moonbridge").core
      listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, pre_fork=2,
        connect = function(s)
          local title = "moonbridge: test worker " .. moonbridge_io.getpid()
          s:write(tostring(core.set_title(title)), " ", moonbridge_io.getpid(), "\n")
          return true
        end }
    ]])
    local workers = assert(H.wait_workers(srv, 2))
    local master_cmdline = read_file("/proc/" .. srv.pid .. "/cmdline")
    local seen = {}
    for _ = 1, 2 do
      local c = assert(H.connect(srv))
      local line = H.read_line(c, 5)
      c:close()
      local ok, pid = line:match("^(%a+) (%d+)")
      assert.equals("true", ok)
      pid = tonumber(pid)
      local title = "moonbridge: test worker " .. pid
      local cmdline = read_file("/proc/" .. pid .. "/cmdline")
      assert.equals(title, (cmdline:gsub("%z+$", "")))
      assert.equals(title:sub(1, 15) .. "\n", read_file("/proc/" .. pid .. "/comm"))
      seen[pid] = true
    end
    for pid in pairs(seen) do
      local known = false
      for _, w in ipairs(workers) do known = known or w == pid end
      assert.is_true(known, "answered by a worker of this server")
    end
    assert.equals(master_cmdline, read_file("/proc/" .. srv.pid .. "/cmdline"))
    assert.equals(0, H.stop(srv))
    assert.same({}, srv.leftover)
  end)

  it("raises plain-string errors for a bad title", function()
    local core = load_core()
    local function err_of(...)
      local ok, err = pcall(core.set_title, ...)
      assert.is_false(ok)
      assert.is_string(err)
      return err
    end
    assert.equals("bad argument #1 to 'set_title' (string expected, got no value)", err_of())
    assert.equals("bad argument #1 to 'set_title' (string expected, got table)", err_of({}))
    assert.equals("bad argument #1 to 'set_title' (string contains a NUL byte)",
      err_of("a\0b"))
  end)
end)

describe("moonbridge_core.resolve", function()
  local core = load_core()

  it("returns true for what tcplisten would bind", function()
    assert.same({ true }, { core.resolve("127.0.0.1", 0) })
    assert.same({ true }, { core.resolve("::", "http") })
    assert.same({ true }, { core.resolve("localhost", "8080") })
    assert.same({ true }, { core.resolve("0.0.0.0", 65535) })
  end)

  it("returns nil and a message naming the host or the service", function()
    local r = table.pack(core.resolve("nosuch.invalid", 80))
    assert.equals(2, r.n)
    assert.is_nil(r[1])
    assert.matches('^Could not resolve host "nosuch%.invalid": .+', r[2])
    r = table.pack(core.resolve("127.0.0.1", "nosuchservice"))
    assert.equals(2, r.n)
    assert.is_nil(r[1])
    assert.matches('^Could not resolve service "nosuchservice": .+', r[2])
  end)

  it("raises plain-string errors for bad arguments", function()
    local function err_of(...)
      local ok, err = pcall(core.resolve, ...)
      assert.is_false(ok)
      assert.is_string(err)
      return err
    end
    assert.equals("bad argument #1 to 'resolve' (string expected, got nil)", err_of(nil, 80))
    assert.equals("bad argument #2 to 'resolve' (port number out of range)",
      err_of("127.0.0.1", 65536))
    assert.equals("bad argument #2 to 'resolve' (port number or service name expected, got no value)",
      err_of("127.0.0.1"))
  end)
end)
