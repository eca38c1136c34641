-- listen{} validation (every field, its default and its error), the launcher's command line,
-- `-t`, and start-up errors with their exit codes (listen.md §1, §2).
local config = require "moonbridge_config"
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local function f() end

local function tcp(extra)
  local args = { { proto = "tcp", host = "127.0.0.1", port = 8080 }, connect = f }
  for k, v in pairs(extra or {}) do args[k] = v end
  return args
end

-- The error config.pool raises for `args` (a plain string), or nil.
local function error_of(args)
  local ok, err = pcall(config.pool, args)
  if ok then return nil end
  assert.is_string(err)
  return err
end

describe("listen{} validation", function()
  it("fills in every default of listen.md", function()
    local p = config.pool(tcp())
    assert.same({ 1, 2, 16 }, { p.pre_fork, p.min_fork, p.max_fork })
    assert.same({ 0.25, 2, 60, 0, 0 },
      { p.fork_delay, p.fork_error_delay, p.exit_delay, p.idle_timeout, p.memory_limit })
    assert.equal(1, p.concurrency) -- NEW: the classic pool
    assert.equal(f, p.connect)
    assert.is_nil(p.prepare)
    assert.is_nil(p.finish)
    p = config.pool { { proto = "tcp", port = 80 }, { proto = "interval", delay = 1 },
      { proto = "main" }, connect = f }
    assert.same({ proto = "tcp", host = "::", port = 80, defer_accept = 0 }, p.listeners[1])
    assert.same({ proto = "interval", delay = 1, name = "", strict = false }, p.listeners[2])
    assert.same({ proto = "main", name = "" }, p.listeners[3])
  end)

  it("derives fork counts from each other without contradicting what was given", function()
    local cases = {
      { { pre_fork = 5 }, { 5, 5, 16 } },
      { { pre_fork = 20 }, { 20, 20, 20 } },
      { { min_fork = 30 }, { 1, 30, 30 } },
      { { max_fork = 1 }, { 1, 1, 1 } },
      { { pre_fork = 0, min_fork = 0 }, { 0, 0, 16 } },
      { { pre_fork = 0, max_fork = 3 }, { 0, 2, 3 } },
      { { pre_fork = 2.0 }, { 2, 2, 16 } },
    }
    for _, c in ipairs(cases) do
      local p = config.pool(tcp(c[1]))
      assert.same(c[2], { p.pre_fork, p.min_fork, p.max_fork })
      assert.equal("integer", math.type(p.pre_fork))
    end
  end)

  it("accepts false (= 0) for time options and keeps fork_error_delay >= fork_delay", function()
    local p = config.pool(tcp { fork_delay = 3, exit_delay = false, idle_timeout = 0.5,
      memory_limit = false })
    assert.same({ 3, 3, 0, 0.5, 0 },
      { p.fork_delay, p.fork_error_delay, p.exit_delay, p.idle_timeout, p.memory_limit })
    p = config.pool(tcp { fork_error_delay = 7, memory_limit = 1e6 })
    assert.equal(7, p.fork_error_delay)
    assert.equal(1000000, p.memory_limit)
    assert.equal("integer", math.type(p.memory_limit))
  end)

  it("accepts service names and integral float ports", function()
    assert.equal("http", config.pool { { proto = "tcp", port = "http" }, connect = f }
      .listeners[1].port)
    local port = config.pool { { proto = "tcp", port = 8080.0 }, connect = f }.listeners[1].port
    assert.equal(8080, port)
    assert.equal("integer", math.type(port))
  end)

  it("takes the manual's idle_time as idle_timeout", function()
    assert.equal(5, config.pool(tcp { idle_time = 5 }).idle_timeout)
    assert.equal(0, config.pool(tcp { idle_time = false }).idle_timeout)
    assert.matches('Option "idle_time" is expected', error_of(tcp { idle_time = -1 }))
    assert.matches('Options "idle_timeout" and "idle_time" are the same; give one of them',
      error_of(tcp { idle_time = 1, idle_timeout = 1 }))
  end)

  it("ignores, and lists, unknown options that resemble no known one (frameworks' own)", function()
    local p = config.pool { { proto = "interval", delay = 1, handler = f },
      { proto = "tcp", port = 80 }, connect = f, http_options = {}, max_requests_per_fork = 200 }
    assert.same({ '"handler" in interval listener #1', '"http_options"',
      '"max_requests_per_fork"' }, p.ignored)
    assert.same({}, config.pool(tcp()).ignored)
  end)

  it("turns a local listener's octal mode text into permission bits", function()
    local function mode(m)
      return config.pool { { proto = "local", path = "/tmp/x", mode = m }, connect = f }
        .listeners[1].mode
    end
    assert.equal(6 * 64 + 6 * 8, mode("660"))
    assert.equal(6 * 64, mode("0600"))
    assert.is_nil(mode(nil))
  end)

  it("takes defer_accept of a tcp listener as whole seconds (NEW; off by default)", function()
    local function defer(v)
      return config.pool { { proto = "tcp", port = 80, defer_accept = v }, connect = f }
        .listeners[1].defer_accept
    end
    assert.same({ 0, 0, 1, 1, 3, 0 }, { defer(nil), defer(false), defer(true), defer(1), defer(2.5), defer(0) })
  end)

  local bad = {
    -- what, args, pattern the error must match
    { "defer_accept text", { { proto = "tcp", port = 1, defer_accept = "yes" }, connect = f },
      'Listener #1: "defer_accept" must be a boolean or a number of seconds %(0 to 3600%)' },
    { "defer_accept negative", { { proto = "tcp", port = 1, defer_accept = -1 }, connect = f }, '"defer_accept"' },
    { "defer_accept NaN", { { proto = "tcp", port = 1, defer_accept = 0 / 0 }, connect = f }, '"defer_accept"' },
    { "defer_accept on a local listener", { { proto = "local", path = "/tmp/x", defer_accept = true }, connect = f },
      '^Option "defer_accept" in local listener #1 belongs in a listener with proto "tcp"$' },
    { "not a table", "tcp", "listen{...} expects a table, got string" },
    { "no listener", { connect = f }, "No listener given" },
    { "listener not a table", { "tcp", connect = f }, "Listener #1 must be a table, got string" },
    { "missing proto", { { port = 1 }, connect = f }, 'Listener #1 has no "proto"' },
    { "unknown proto", { { proto = "foo" }, connect = f }, 'Unknown protocol "foo" %(listener #1%)' },
    { "proto of wrong type", { { proto = 6 }, connect = f }, 'Unknown protocol "6"' },
    { "second listener named", { { proto = "tcp", port = 1 }, { proto = "udp" }, connect = f },
      'Unknown protocol "udp" %(listener #2%)' },
    { "missing port", { { proto = "tcp", host = "::1" }, connect = f },
      'No port specified; use listen{{proto="tcp", host=..., port=...}, ...} %(listener #1%)' },
    { "negative port", { { proto = "tcp", port = -1 }, connect = f }, "Listener #1: port %-1 out of range" },
    { "port too big", { { proto = "tcp", port = 65536 }, connect = f }, "port 65536 out of range" },
    { "port of wrong type", { { proto = "tcp", port = {} }, connect = f },
      'Listener #1: "port" must be a number or a service name' },
    { "fractional port", { { proto = "tcp", port = 80.5 }, connect = f }, '"port" must be a number' },
    { "host of wrong type", { { proto = "tcp", host = 1, port = 1 }, connect = f },
      'Listener #1: "host" must be a non%-empty string' },
    { "missing path", { { proto = "local" }, connect = f }, "No path specified.*listener #1" },
    { "path too long", { { proto = "local", path = ("x"):rep(108) }, connect = f },
      "Listener #1: path longer than 107 bytes" },
    { "interval without delay", { { proto = "interval" }, connect = f },
      'Listener #1: interval needs a "delay"' },
    { "interval delay 0", { { proto = "interval", delay = 0 }, connect = f }, '"delay" in seconds greater than 0' },
    { "interval delay negative", { { proto = "interval", delay = -1 }, connect = f }, '"delay"' },
    { "interval delay string", { { proto = "interval", delay = "1" }, connect = f }, '"delay"' },
    { "interval name", { { proto = "interval", delay = 1, name = 5 }, connect = f },
      'Listener #1: "name" must be a string' },
    { "interval strict", { { proto = "interval", delay = 1, strict = "yes" }, connect = f },
      'Listener #1: "strict" must be a boolean' },
    { "main name", { { proto = "main", name = true }, connect = f }, '"name" must be a string' },
    { "missing connect", { { proto = "main" } }, 'Option "connect" must be a function' },
    { "connect of wrong type", { { proto = "main" }, connect = "f" }, 'Option "connect" must be a function' },
    { "prepare of wrong type", tcp { prepare = 5 }, 'Option "prepare" must be a function' },
    { "finish of wrong type", tcp { finish = {} }, 'Option "finish" must be a function' },
    { "negative pre_fork", tcp { pre_fork = -1 }, 'Option "pre_fork" is expected to be a non%-negative integer' },
    { "fractional min_fork", tcp { min_fork = 1.5 }, 'Option "min_fork" is expected to be a non%-negative integer' },
    { "string max_fork", tcp { max_fork = "4" }, 'Option "max_fork" is expected to be a non%-negative integer' },
    { "NaN pre_fork", tcp { pre_fork = 0 / 0 }, 'Option "pre_fork"' },
    { "huge max_fork", tcp { max_fork = math.huge }, 'Option "max_fork" is too large' },
    { "max_fork = 0", tcp { max_fork = 0 }, 'Option "max_fork" must be at least 1' },
    { "min_fork > max_fork", tcp { min_fork = 5, max_fork = 2 },
      'Option "min_fork" %(5%) must not exceed "max_fork" %(2%)' },
    { "pre_fork > max_fork", tcp { pre_fork = 3, max_fork = 2 },
      'Option "pre_fork" %(3%) must not exceed "max_fork" %(2%)' },
    { "negative fork_delay", tcp { fork_delay = -1 }, 'Option "fork_delay" is expected to be a non%-negative number' },
    { "string fork_error_delay", tcp { fork_error_delay = "2" }, 'Option "fork_error_delay"' },
    { "huge exit_delay", tcp { exit_delay = 1e9 }, 'Option "exit_delay"' },
    { "true idle_timeout", tcp { idle_timeout = true }, 'Option "idle_timeout"' },
    { "NaN idle_timeout", tcp { idle_timeout = 0 / 0 }, 'Option "idle_timeout"' },
    { "negative memory_limit", tcp { memory_limit = -1 }, 'Option "memory_limit" is expected to be a non%-negative integer' },
    { "fractional memory_limit", tcp { memory_limit = 1.5 }, 'Option "memory_limit"' },
    { "infinite memory_limit", tcp { memory_limit = math.huge }, 'Option "memory_limit"' },
    { "string memory_limit", tcp { memory_limit = "1M" }, 'Option "memory_limit"' },
    { "a misspelt pool option", tcp { max_froks = 3 },
      '^Unknown option "max_froks" %(did you mean "max_fork"%?%)$' },
    { "a differently cased pool option", tcp { Connect = f },
      '^Unknown option "Connect" %(did you mean "connect"%?%)$' },
    { "a misspelt option without listeners", { connect = f, prefork = 1 },
      '^Unknown option "prefork" %(did you mean "pre_fork"%?%)$' },
    { "a key beyond the listeners", { { proto = "main" }, [3] = { proto = "main" }, connect = f },
      "^Unexpected key 3 %(listeners go in the array part, options are named%)$" },
    { "a misspelt listener field", { { proto = "tcp", hots = "::1", port = 1 }, connect = f },
      '^Unknown option "hots" in tcp listener #1 %(did you mean "host"%?%)$' },
    { "another kind's listener field", { { proto = "tcp", port = 1, path = "/x" }, connect = f },
      '^Option "path" in tcp listener #1 belongs in a listener with proto "local"$' },
    { "a field of two other kinds", { { proto = "tcp", port = 1, name = "x" }, connect = f },
      '^Option "name" in tcp listener #1 belongs in a listener with proto "interval" or "main"$' },
    { "a pool option in a listener", { { proto = "main", connect = f }, connect = f },
      '^Option "connect" in main listener #1 belongs in the listen{} table, not in a listener$' },
    { "a listener field at the pool level", { { proto = "tcp", port = 1 }, port = 2, connect = f },
      '^Option "port" belongs in a listener table such as {proto="tcp", port=...}$' },
    { "a misspelt interval field", { { proto = "main" }, { proto = "interval", dealy = 1 }, connect = f },
      '^Unknown option "dealy" in interval listener #2 %(did you mean "delay"%?%)$' },
    { "a numeric socket mode", { { proto = "local", path = "/tmp/x", mode = 660 }, connect = f },
      'Listener #1: "mode" must be a string of three octal digits, such as "660"' },
    { "a non-octal socket mode", { { proto = "local", path = "/tmp/x", mode = "680" }, connect = f },
      '"mode" must be a string of three octal digits' },
  }
  for _, case in ipairs(bad) do
    it("rejects " .. case[1], function()
      local err = error_of(case[2])
      assert.is_not_nil(err, "accepted: " .. case[1])
      assert.matches(case[3], err)
    end)
  end

  it("rejects more than 100 listeners", function()
    local args = { connect = f }
    for i = 1, 101 do args[i] = { proto = "interval", delay = 1 } end
    assert.matches("At most 100 listeners", error_of(args))
    args[101] = nil
    assert.equal(100, #config.pool(args).listeners)
  end)
end)

describe("the launcher", function()
  it("prints usage for --help and exits 0", function()
    local code, out = H.run(H.quote(H.launcher) .. " --help")
    assert.equal(0, code)
    assert.matches("Usage: moonbridge", out)
    assert.matches("%-t, %-%-test", out)
  end)

  it("exits 1 on a bad command line", function()
    for _, args in ipairs { "", "--bogus app.lua", "-x app.lua", "-p", "-l",
      "-f NOPE app.lua", "--help=yes" } do
      local code, out = H.run(H.quote(H.launcher) .. " " .. args)
      assert.equal(1, code, args .. ": " .. out)
      assert.matches("moonbridge: ", out)
    end
  end)

  it("-t loads and validates without binding anything", function()
    local port = H.free_port()
    local code, out = H.launch(string.format([[
      assert(type(listen) == "function" and type(timeout) == "function")
      assert(_MOONBRIDGE_VERSION and moonbridge_io and require("moonbridge_io") == moonbridge_io)
      io.stderr:write("script args: ", table.concat({...}, ","), "\n")
      listen{ {proto="tcp", host="127.0.0.1", port=%d}, connect=function() end }
      listen{ {proto="interval", delay=1}, connect=function() end }
    ]], port), { "-t", "--" }) -- "--" before the file: still a file, no arguments
    assert.equal(0, code, out)
    assert.matches("configuration of 2 pool%(s%) is valid", out)
    assert.matches("script args: \n", out)
    -- nothing is bound: the port is still free
    local l = assert(mio.tcplisten("127.0.0.1", port))
    l:close()
  end)

  it("-t reports a listen{} error naming the option, with exit code 3", function()
    local code, out = H.launch([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function() end,
  min_fork=5, max_fork=2 }
]], { "-t" })
    assert.equal(3, code, out)
    assert.matches('app.lua:1: Option "min_fork" %(5%) must not exceed "max_fork" %(2%)', out)
    code, out = H.launch([[listen{ {proto="foo"}, connect=function() end }]], { "-t" })
    assert.equal(3, code, out)
    assert.matches('Unknown protocol "foo" %(listener #1%)', out)
  end)

  it("exits 3 for listen{} errors, naming the option or listener", function()
    local T = "{proto='tcp', host='127.0.0.1', port=$PORT}"
    local C = "connect=function() end"
    local cases = {
      { "{ {port=1}, " .. C .. " }", 'Listener #1 has no "proto"' },
      { "{ " .. T .. ", {proto='udp'}, " .. C .. " }", 'Unknown protocol "udp" %(listener #2%)' },
      { "{ {proto='tcp'}, " .. C .. " }", "No port specified.*%(listener #1%)" },
      { "{ {proto='local'}, " .. C .. " }", "No path specified.*%(listener #1%)" },
      { "{ {proto='interval'}, " .. C .. " }", 'Listener #1: interval needs a "delay"' },
      { "{ " .. T .. " }", 'Option "connect" must be a function' },
      { "{ " .. T .. ", " .. C .. ", max_fork=0 }", 'Option "max_fork" must be at least 1' },
      { "{ " .. T .. ", " .. C .. ", min_fork=3, max_fork=2 }", 'Option "min_fork" %(3%) must not exceed' },
      { "{ " .. T .. ", " .. C .. ", pre_fork=-1 }", 'Option "pre_fork" is expected to be a non%-negative integer' },
      { "{ " .. T .. ", " .. C .. ", min_fork='2' }", 'Option "min_fork" is expected' },
      { "{ " .. T .. ", " .. C .. ", exit_delay=-5 }", 'Option "exit_delay" is expected to be a non%-negative number' },
      { "{ " .. T .. ", " .. C .. ", memory_limit=0.5 }", 'Option "memory_limit" is expected' },
      { "{ " .. T .. ", " .. C .. ", prepare=true }", 'Option "prepare" must be a function' },
    }
    for _, c in ipairs(cases) do
      local code, out = H.launch("listen" .. c[1], {}, 10)
      assert.equal(3, code, c[1] .. ": " .. out)
      assert.matches("app.lua:1: " .. c[2], out)
      assert.not_matches("Created worker", out)
    end
  end)

  it("accepts the syslog options (-f, -i) and then logs nothing to stderr", function()
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT}, connect=function(s) s:write("ok") return true end }
]], { args = { "-f", "3", "-i", "mbspec" } })
    assert.equal("ok", (H.request(srv, nil)))
    local code = H.stop(srv)
    local log = H.log_text(srv)
    H.cleanup(srv)
    assert.equal(0, code)
    assert.equal("", log)
  end)

  it("exits 3 without serving for every start-up error", function()
    local busy = assert(mio.tcplisten("127.0.0.1", 0))
    local dir = H.tmpdir()
    H.write_file(dir .. "/plain", "keep me")
    local cases = {
      { "syntax error", "listen{", "Error while loading application: .*app.lua:1:" },
      { "error raised", "error('boom')", "Error while loading application: .*boom" },
      { "no listener", "local x = 1", "No listener registered" },
      { "max_fork = 0", "listen{ {proto='tcp', port=$PORT}, connect=function() end, max_fork=0 }",
        'Option "max_fork" must be at least 1' },
      { "port in use", string.format(
        "listen{ {proto='tcp', host='127.0.0.1', port=%d}, connect=function() end }",
        busy.local_tcpport), "Could not initialize listener #1 of pool #1: Address already in use" },
      { "unresolvable host",
        "listen{ {proto='tcp', host='no-such-host.invalid', port=1}, connect=function() end }",
        "Could not initialize listener #1 of pool #1: " },
      { "regular file at a local path", string.format(
        "listen{ {proto='local', path=%q}, connect=function() end }", dir .. "/plain"),
        "Could not initialize listener #1 of pool #1: File exists and is not a socket" },
      { "missing directory", string.format(
        "listen{ {proto='local', path=%q}, connect=function() end }", dir .. "/no/sock"),
        "Could not initialize listener #1 of pool #1: No such file or directory" },
    }
    for _, c in ipairs(cases) do
      local code, out = H.launch(c[2], {}, 10)
      assert.equal(3, code, c[1] .. ": " .. out)
      assert.matches(c[3], out, 1, false, c[1])
      assert.not_matches("Created worker", out)
    end
    busy:close()
    assert.equal("keep me", H.read_file(dir .. "/plain")) -- never deleted
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("closes what it opened when a later listener fails (nothing half-started)", function()
    local dir = H.tmpdir()
    local port = H.free_port()
    local code, out = H.launch(string.format([[
listen{ {proto="local", path=%q}, {proto="tcp", host="127.0.0.1", port=%d},
  {proto="tcp", host="no-such-host.invalid", port=1}, connect=function() end }
]], dir .. "/sock", port), {}, 10)
    assert.equal(3, code, out)
    assert.matches("listener #3 of pool #1", out)
    assert.is_false(H.exists(dir .. "/sock")) -- socket file removed again
    local l = assert(mio.tcplisten("127.0.0.1", port)) -- port released
    l:close()
    os.execute("rm -rf " .. H.quote(dir))
  end)
end)
