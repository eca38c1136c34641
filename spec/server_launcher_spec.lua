-- The launcher as existing applications start it: the application's own arguments, -L,
-- -t that checks what binding needs, -b that reports a failed start, process titles, and the
-- permissions of a local socket.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

-- Writes `files` ({name = source}) into a new directory; returns it.
local function app_dir(files)
  local dir = H.tmpdir()
  for name, text in pairs(files) do H.write_file(dir .. "/" .. name, text) end
  return dir
end

-- Runs the launcher with a shell-quoted argument list; returns exit code and output.
local function launcher(args, seconds)
  local q = {}
  for i, a in ipairs(args) do q[i] = H.quote(a) end
  return H.run(H.quote(H.launcher) .. " " .. table.concat(q, " "), seconds)
end

-- An application that prints what it received and serves nothing lasting (a main listener
-- whose worker ends at once stops the server with exit code 0).
local ECHO_ARGS = [[
io.stderr:write("args=[", table.concat({...}, "|"), "] arg0=", tostring(arg and arg[0]),
  " arg1=", tostring(arg and arg[1]), "\n")
listen{ {proto="main"}, connect=function() end }
]]

describe("the launcher's command line", function()
  it("hands every argument after the application to it as ... (and as arg)", function()
    local dir = app_dir { ["app.lua"] = ECHO_ARGS }
    local code, out = launcher { dir .. "/app.lua", "webmcp/", "app dir", "-x", "--y", "--" }
    assert.equal(0, code, out)
    assert.matches("args=%[webmcp/|app dir|%-x|%-%-y|%-%-%] arg0=" .. dir:gsub("%p", "%%%0")
      .. "/app.lua arg1=webmcp/\n", out)
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("leaves options after the application to the application", function()
    local dir = app_dir { ["app.lua"] = ECHO_ARGS }
    local code, out = launcher { dir .. "/app.lua", "-t", "-h" }
    assert.equal(0, code, out)
    assert.matches("args=%[%-t|%-h%]", out)
    assert.not_matches("configuration of", out) -- -t was not the launcher's
    assert.not_matches("Usage:", out)
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("ends its options at --, so an application's name may begin with -", function()
    local dir = app_dir { ["-app.lua"] = ECHO_ARGS }
    local code, out = H.run(string.format("cd %s && %s -t -- -app.lua -x", H.quote(dir),
      H.quote(H.launcher)))
    assert.equal(0, code, out)
    assert.matches("args=%[%-x%]", out)
    assert.matches("configuration of 1 pool%(s%) is valid", out)
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("runs -L files before the application, in order, without its arguments", function()
    local dir = app_dir {
      ["a.lua"] = 'order = (order or "") .. "a"; io.stderr:write("a got ", select("#", ...), "\\n")',
      ["b.lua"] = 'order = order .. "b"',
      ["app.lua"] = 'io.stderr:write("order=", order, " args=", ..., "\\n")\n' ..
        'listen{ {proto="main"}, connect=function() end }',
    }
    local code, out = launcher { "-L", dir .. "/a.lua", "--load=" .. dir .. "/b.lua", "-t",
      dir .. "/app.lua", "x" }
    assert.equal(0, code, out)
    assert.matches("a got 0\n", out)
    assert.matches("order=ab args=x\n", out)
    code, out = launcher { "-L", dir .. "/a.lua" }
    assert.equal(1, code, out)
    assert.matches("moonbridge: no application file given", out)
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

describe("-t", function()
  local cases = {
    { "an unresolvable host",
      "listen{ {proto='tcp', host='no-such-host.invalid', port=80}, connect=function() end }",
      'Could not initialize listener #1 of pool #1: .*no%-such%-host%.invalid' },
    { "an unknown service name",
      "listen{ {proto='tcp', host='127.0.0.1', port='no-such-service'}, connect=function() end }",
      "Could not initialize listener #1 of pool #1: .*no%-such%-service" },
    { "a local socket in a missing directory",
      "listen{ {proto='main'}, connect=function() end }\n" ..
      "listen{ {proto='local', path='$DIR/missing/sock'}, connect=function() end }",
      'Could not initialize listener #1 of pool #2: No directory ".*/missing"' },
  }
  for _, c in ipairs(cases) do
    it("rejects " .. c[1] .. " (what it accepts binds)", function()
      local code, out = H.launch(c[2], { "-t" })
      assert.equal(3, code, out)
      assert.matches(c[3], out)
      assert.not_matches("is valid", out)
    end)
  end

  it("accepts names that resolve and a local socket in an existing directory", function()
    local code, out = H.launch([[
listen{ {proto='tcp', host='localhost', port='http'}, {proto='local', path='$DIR/sock'},
  connect=function() end }
]], { "-t" })
    assert.equal(0, code, out)
    assert.matches("configuration of 1 pool%(s%) is valid", out)
  end)

  it("logs the unknown options it ignores (a framework's own settings)", function()
    local code, out = H.launch([[
listen{ {proto='interval', delay=1, handler=function() end}, connect=function() end,
  http_options={}, max_requests_per_fork=200 }
]], { "-t" })
    assert.equal(0, code, out)
    assert.matches('listen{} #1: ignoring unknown option "handler" in interval listener #1', out)
    assert.matches('listen{} #1: ignoring unknown option "http_options"\n', out)
    assert.matches('listen{} #1: ignoring unknown option "max_requests_per_fork"\n', out)
  end)

  it("rejects a misspelt option naming the one it resembles", function()
    local code, out = H.launch(
      "listen{ {proto='main'}, connect=function() end, max_froks=4 }", { "-t" })
    assert.equal(3, code, out)
    assert.matches('app.lua:1: Unknown option "max_froks" %(did you mean "max_fork"%?%)', out)
  end)
end)

describe("-b (background)", function()
  it("reports a listener that cannot be opened on stderr, with exit code 3", function()
    local busy = assert(mio.tcplisten("127.0.0.1", 0))
    local dir = app_dir { ["app.lua"] = string.format(
      "listen{ {proto='tcp', host='127.0.0.1', port=%d}, connect=function() end }",
      busy.local_tcpport) }
    local code, out = H.run(string.format("%s -b -p %s %s 2>&1 >/dev/null", H.quote(H.launcher),
      H.quote(dir .. "/pid"), H.quote(dir .. "/app.lua")), 10)
    busy:close()
    assert.equal(3, code, out)
    assert.matches("Could not initialize listener #1 of pool #1: Address already in use", out)
    assert.is_false(H.exists(dir .. "/pid")) -- nothing stays behind
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("reports a pid file held by a running server with exit code 2, naming it", function()
    local dir = H.tmpdir()
    local pidfile = dir .. "/pid"
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) s:write("x") return true end }
]], { args = { "-p", pidfile } })
    assert.is_truthy(H.wait_for(5, function() return H.read_file(pidfile) == srv.pid .. "\n" end))
    H.write_file(dir .. "/app.lua", "listen{ {proto='main'}, connect=function() end }")
    local code, out = H.run(string.format("%s -b -p %s %s 2>&1 >/dev/null", H.quote(H.launcher),
      H.quote(pidfile), H.quote(dir .. "/app.lua")), 10)
    assert.equal(2, code, out)
    assert.matches("is locked by another process %(PID " .. srv.pid .. "%)", out)
    assert.equal(srv.pid .. "\n", H.read_file(pidfile)) -- untouched
    H.stop_clean(srv)
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)

describe("processes", function()
  local function cmdline(pid)
    local text = H.read_file("/proc/" .. pid .. "/cmdline") or ""
    return (text:gsub("%z+$", ""):gsub("%z", " "))
  end

  it("are titled moonbridge: master / worker pool #N with the application", function()
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) return true end,
  min_fork=1, max_fork=1, pre_fork=1 }
listen{ {proto="tcp", host="127.0.0.1", port=$PORT2}, connect=function(s) return true end,
  min_fork=1, max_fork=1, pre_fork=1 }
]])
    local workers = H.wait_workers(srv, 2)
    assert.is_not_nil(workers, H.log_text(srv))
    local app = srv.app:gsub("%p", "%%%0")
    assert.matches("^moonbridge: master " .. app .. "$", cmdline(srv.pid))
    -- a new worker bears the master's title until it has set its own
    local titles = H.wait_for(5, function()
      local t = { cmdline(workers[1]), cmdline(workers[2]) }
      table.sort(t)
      return not (t[1] .. t[2]):find("master", 1, true) and t
    end)
    assert.is_not_nil(titles, "workers kept the master's title")
    assert.matches("^moonbridge: worker pool #1 " .. app .. "$", titles[1])
    assert.matches("^moonbridge: worker pool #2 " .. app .. "$", titles[2])
    assert.equal("moonbridge", (H.read_file("/proc/" .. srv.pid .. "/comm") or ""):sub(1, 10))
    H.stop_clean(srv)
  end)
end)

describe("a local listener's mode", function()
  it("sets the permissions of the socket file before anyone can connect", function()
    local srv = H.start([[
listen{ {proto="local", path="$DIR/sock", mode="660"},
  connect=function(s) s:write("hi") return true end }
]])
    local path = srv.dir .. "/sock"
    assert.is_truthy(H.wait_for(5, function() return H.file_type(path) == "socket" end))
    assert.equal("rw-rw----", require("lfs").attributes(path, "permissions"))
    local h = assert(H.wait_for(5, function() return mio.localconnect(path) end))
    assert.equal("hi", (H.read_all(h, 5)))
    h:close()
    H.stop_clean(srv)
  end)
end)
