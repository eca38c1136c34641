-- Starts the `moonbridge` launcher (from the rocks tree of this interpreter) on a temporary
-- application, talks to it with deadlines, and stops it by PID. Every wait has a deadline;
-- nothing sleeps blindly.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

local H = {}

-- Servers started and not cleaned up yet (a failed spec leaves nothing behind: see
-- cleanup_all, run after each spec).
H.running = {}

local ROOT = os.getenv("PWD") or "."
local V = _VERSION:match("%d+%.%d+")
H.launcher = ROOT .. "/.trees/" .. V .. "/bin/moonbridge"
H.lua = "lua" .. V

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read_file = read_file

-- Whether anything (a file, a socket, a directory) exists at `path`.
function H.exists(path)
  return require("lfs").symlinkattributes(path) ~= nil
end

-- The type of the file at `path` ("file", "socket", ...), or nil.
function H.file_type(path)
  local a = require("lfs").symlinkattributes(path)
  return a and a.mode
end

function H.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function H.sleep(s)
  mio.poll(nil, nil, s)
end

-- Waits until fn() returns a truthy value, at most `seconds`; returns that value or nil.
function H.wait_for(seconds, fn)
  local deadline = mio.timeref() + seconds
  repeat
    local v = fn()
    if v then return v end
    H.sleep(0.02)
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

function H.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function H.tmpdir()
  local dir = helper.tmpname("-mb")
  assert(os.execute("mkdir -p " .. H.quote(dir)))
  return dir
end

-- Runs a shell command to its end (bounded by `timeout`); returns exit code, stdout+stderr.
function H.run(cmd, seconds)
  local p = io.popen(string.format("timeout %d sh -c %s 2>&1; echo \"rc=$?\"",
    seconds or 20, H.quote(cmd)))
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("rc=(%d+)%s*$"))
  return code, (out:gsub("rc=%d+%s*$", ""))
end

-- Writes an application file: $PORT, $PORT2 and $DIR are substituted.
local function write_app(srv, app)
  local text = app:gsub("%$PORT2", tostring(srv.port2)):gsub("%$PORT", tostring(srv.port))
    :gsub("%$DIR", srv.dir)
  H.write_file(srv.app, text)
end

-- Runs the launcher synchronously (for start-up errors and -t): exit code, output.
function H.launch(app, args, seconds)
  local srv = { dir = H.tmpdir(), port = H.free_port(), port2 = H.free_port() }
  srv.app = srv.dir .. "/app.lua"
  write_app(srv, app)
  local a = {}
  for _, x in ipairs(args or {}) do a[#a + 1] = H.quote(x) end
  local code, out = H.run(string.format("%s %s %s", H.quote(H.launcher), table.concat(a, " "),
    H.quote(srv.app)), seconds)
  os.execute("rm -rf " .. H.quote(srv.dir))
  return code, out
end

-- start(app_source, {args = {...}, command = "..."}) -> server table (pid, port, dir, log)
-- Runs the launcher in the background (or `command`, where $APP is the application file and
-- $PORT the port),
-- records its PID and, once it ends, its exit code.
function H.start(app, opts)
  opts = opts or {}
  local srv = { dir = H.tmpdir(), port = H.free_port(), port2 = H.free_port() }
  srv.app = srv.dir .. "/app.lua"
  srv.log = srv.dir .. "/log"
  write_app(srv, app)
  local args = {}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = H.quote(a) end
  local command = opts.command
    and opts.command:gsub("%$APP", H.quote(srv.app)):gsub("%$PORT", tostring(srv.port))
    or string.format("%s %s %s", H.quote(H.launcher), table.concat(args, " "), H.quote(srv.app))
  H.write_file(srv.dir .. "/run.sh", string.format(
    "%s </dev/null >>%s 2>&1 &\necho $! > %s/pid.tmp && mv %s/pid.tmp %s/pid\nwait $!\n" ..
    "echo $? > %s/code.tmp && mv %s/code.tmp %s/code\n",
    command, H.quote(srv.log), srv.dir, srv.dir, srv.dir, srv.dir, srv.dir, srv.dir))
  os.execute("sh " .. H.quote(srv.dir .. "/run.sh") .. " </dev/null >/dev/null 2>&1 &")
  srv.pid = tonumber(H.wait_for(5, function() return read_file(srv.dir .. "/pid") end))
  assert(srv.pid, "launcher did not start")
  -- Until the master runs, the PID's children are not workers (the shell wrapper's command
  -- substitutions, the LuaRocks loader's `uname`) and a signal finds no handler: wait for
  -- the master's title (set just before it serves) or for the launcher's end.
  H.wait_for(5, function()
    return read_file(srv.dir .. "/code") or H.comm(srv.pid):match("^moonbridge: mas")
  end)
  srv.seen = {} -- every worker PID seen, for the leftover check
  H.running[srv] = true
  return srv
end

-- Waits until `pattern` (a Lua pattern) appears in the log; returns the capture or match.
function H.wait_log(srv, pattern, seconds)
  return H.wait_for(seconds or 5, function()
    return (read_file(srv.log) or ""):match(pattern)
  end)
end

function H.log_text(srv)
  return read_file(srv.log) or ""
end

-- Counts the occurrences of a plain string in the log.
function H.log_count(srv, text)
  local n, pos, log = 0, 1, H.log_text(srv)
  while true do
    local i = log:find(text, pos, true)
    if not i then return n end
    n, pos = n + 1, i + #text
  end
end

-- PIDs of the children of `pid` (the workers of a master).
function H.children(pid)
  local out = {}
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  if f then
    for p in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(p) end
    f:close()
  end
  table.sort(out)
  return out
end

-- The comm name of a process ("" once it is gone).
function H.comm(pid)
  return read_file("/proc/" .. pid .. "/comm") or ""
end

-- The master's workers (recorded for the leftover check).
function H.workers(srv)
  local w = H.children(srv.pid)
  for _, p in ipairs(w) do srv.seen[p] = true end
  return w
end

-- Waits until the master has exactly `n` workers; returns their PIDs or nil.
function H.wait_workers(srv, n, seconds)
  return H.wait_for(seconds or 5, function()
    local w = H.workers(srv)
    return #w == n and w or nil
  end)
end

-- Whether a process exists and is not a zombie.
function H.alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

-- Children of the master that are zombies (never collected).
function H.zombies(srv)
  local z = {}
  for _, p in ipairs(H.children(srv.pid)) do
    local stat = read_file("/proc/" .. p .. "/stat")
    if stat and stat:match("^%d+ %b() Z") then z[#z + 1] = p end
  end
  return z
end

-- Waits for the launcher to exit; returns its exit code (nil on timeout).
function H.wait_exit(srv, seconds)
  local code = H.wait_for(seconds or 10, function() return read_file(srv.dir .. "/code") end)
  return code and tonumber(code)
end

-- Sends `sig` (default TERM) to the master and waits for its exit code. Workers seen
-- before are checked afterwards: `srv.leftover` lists any that survived the master.
function H.stop(srv, sig, seconds)
  H.workers(srv)
  if srv.pid and H.alive(srv.pid) then
    os.execute("kill -" .. (sig or "TERM") .. " " .. srv.pid .. " 2>/dev/null")
  end
  local code = H.wait_exit(srv, seconds)
  if code == nil and srv.pid then
    os.execute("kill -KILL " .. srv.pid .. " 2>/dev/null")
    code = H.wait_exit(srv, 5)
    code = nil -- a forced stop is a failure
  end
  srv.leftover = {}
  H.wait_for(2, function()
    srv.leftover = {}
    for p in pairs(srv.seen) do
      if H.alive(p) then srv.leftover[#srv.leftover + 1] = p end
    end
    return #srv.leftover == 0
  end)
  for _, p in ipairs(srv.leftover) do os.execute("kill -KILL " .. p .. " 2>/dev/null") end
  return code
end

-- Stops the server if a spec left it running, and removes its files.
function H.cleanup(srv)
  if not srv or not H.running[srv] then return end
  H.running[srv] = nil
  if not read_file(srv.dir .. "/code") then H.stop(srv, "KILL", 5) end
  os.execute("rm -rf " .. H.quote(srv.dir))
end

-- For after_each: stops whatever a (failed) spec left running.
function H.cleanup_all()
  for srv in pairs(H.running) do H.cleanup(srv) end
end

-- Connects (retrying while the server starts) and returns a handle or nil, error.
function H.connect(srv, seconds, host, port)
  local err
  local h = H.wait_for(seconds or 5, function()
    local h, e = mio.tcpconnect(host or "127.0.0.1", port or srv.port)
    err = e
    return h
  end)
  return h, err
end

-- Reads until EOF or `seconds` pass; returns data, status ("eof", "timeout" or an error).
function H.read_all(h, seconds)
  local parts = {}
  local deadline = mio.timeref() + (seconds or 5)
  while true do
    local data, status = h:read_nb()
    if not data then return table.concat(parts), status end
    parts[#parts + 1] = data
    if status == "eof" then return table.concat(parts), "eof" end
    local left = deadline - mio.timeref()
    if left <= 0 then return table.concat(parts), "timeout" end
    mio.poll({ [h] = true }, nil, left)
  end
end

-- Reads one line (up to "\n", at most 4096 bytes) within `seconds`; nil, reason otherwise.
function H.read_line(h, seconds)
  local parts = {}
  local deadline = mio.timeref() + (seconds or 5)
  while true do
    local data, status = h:read_nb(4096, "\n")
    if not data then return nil, status end
    parts[#parts + 1] = data
    if status ~= "block" then return table.concat(parts), status end
    local left = deadline - mio.timeref()
    if left <= 0 then return nil, "timeout" end
    mio.poll({ [h] = true }, nil, left)
  end
end

-- One exchange: connect, send `data` (then half-close), read to EOF. Returns the reply and
-- its status ("eof" when the server closed cleanly).
function H.request(srv, data, seconds, host, port)
  local h, err = H.connect(srv, seconds, host, port)
  if not h then return nil, err end
  if data then
    h:write(data)
    h:flush()
  end
  local reply, status = H.read_all(h, seconds)
  h:close()
  return reply, status
end

-- Stops a server a spec started and checks that it ended cleanly: exit code 0 and no
-- worker left behind. Removes its files; returns its log.
function H.stop_clean(srv)
  local luassert = require "luassert" -- busted's assert; helper modules see only Lua's
  local code = H.stop(srv)
  local log = H.log_text(srv)
  H.cleanup(srv)
  luassert.equal(0, code, log)
  luassert.same({}, srv.leftover)
  return log
end

return H
