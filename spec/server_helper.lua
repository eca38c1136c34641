-- Starts the `moonbridge` launcher (from the rocks tree of this interpreter) on a temporary
-- application, and stops it by PID. Every wait has a deadline.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

local H = {}

local ROOT = os.getenv("PWD") or "."
local V = _VERSION:match("%d+%.%d+")
H.launcher = ROOT .. "/.trees/" .. V .. "/bin/moonbridge"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read_file = read_file

local function sleep(s)
  mio.poll(nil, nil, s)
end
H.sleep = sleep

-- Waits until fn() returns a truthy value, at most `seconds`; returns that value or nil.
function H.wait_for(seconds, fn)
  local deadline = mio.timeref() + seconds
  repeat
    local v = fn()
    if v then return v end
    sleep(0.02)
  until mio.timeref() > deadline
  return nil
end

-- A TCP port that was free a moment ago.
function H.free_port()
  local l = assert(mio.tcplisten("127.0.0.1", 0))
  local port = l.local_tcpport
  l:close()
  return port
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- start(app_source, {args = {...}, port = n}) -> server table
-- The application text may contain $PORT, replaced by a free port.
function H.start(app, opts)
  opts = opts or {}
  local srv = { dir = helper.tmpname("-mb") }
  os.execute("mkdir -p " .. srv.dir)
  srv.port = opts.port or H.free_port()
  srv.app = srv.dir .. "/app.lua"
  local f = assert(io.open(srv.app, "w"))
  f:write((app:gsub("%$PORT", tostring(srv.port)):gsub("%$DIR", srv.dir)))
  f:close()
  srv.log = srv.dir .. "/log"
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = shell_quote(a) end
  local script = srv.dir .. "/run.sh"
  f = assert(io.open(script, "w"))
  f:write(string.format("%s %s %s >>%s 2>&1 &\necho $! > %s/pid\nwait $!\necho $? > %s/code\n",
    shell_quote(H.launcher), table.concat(args, " "), shell_quote(srv.app), shell_quote(srv.log),
    srv.dir, srv.dir))
  f:close()
  os.execute("sh " .. shell_quote(script) .. " </dev/null >/dev/null 2>&1 &")
  srv.pid = tonumber(H.wait_for(5, function() return read_file(srv.dir .. "/pid") end))
  assert(srv.pid, "launcher did not start")
  return srv
end

-- Connects (retrying while the server starts) and returns a handle or nil.
function H.connect(srv, seconds)
  return H.wait_for(seconds or 5, function()
    return mio.tcpconnect("127.0.0.1", srv.port)
  end)
end

-- Waits for the launcher to exit; returns its exit code (nil on timeout).
function H.wait_exit(srv, seconds)
  local code = H.wait_for(seconds or 10, function() return read_file(srv.dir .. "/code") end)
  return code and tonumber(code)
end

function H.alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- Sends `sig` (default TERM) to the master and waits for its exit code.
function H.stop(srv, sig, seconds)
  if srv.pid and H.alive(srv.pid) then
    os.execute("kill -" .. (sig or "TERM") .. " " .. srv.pid .. " 2>/dev/null")
  end
  local code = H.wait_exit(srv, seconds)
  if code == nil and srv.pid then
    os.execute("kill -KILL " .. srv.pid .. " 2>/dev/null")
    code = H.wait_exit(srv, 5)
  end
  return code
end

function H.log_text(srv)
  return read_file(srv.log) or ""
end

-- PIDs of the children of `pid` (the workers of a master).
function H.children(pid)
  local out = {}
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  if f then
    for p in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(p) end
    f:close()
  end
  return out
end

function H.cleanup(srv)
  os.execute("rm -rf " .. srv.dir)
end

return H
