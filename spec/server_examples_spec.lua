-- The examples of the README start and do what their comments say; -s logs statistics.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local ROOT = os.getenv("PWD") or "."

local function example(name, env)
  return H.start("", { command = env .. " " .. H.quote(H.launcher) .. " -s " ..
    H.quote(ROOT .. "/examples/" .. name) })
end

describe("examples", function()
  it("echo.lua echoes lines back", function()
    local srv = example("echo.lua", "PORT=$PORT")
    local h = assert(H.connect(srv))
    h:write("hello\nworld\n"):flush()
    h:finish()
    local reply, status = H.read_all(h)
    h:close()
    local log = H.stop_clean(srv)
    assert.equal("hello\nworld\n", reply)
    assert.equal("eof", status)
    -- -s: worker creation, pool counts and resource usage
    assert.matches("Created worker process %(PID %d+%) in pool #1", log)
    assert.matches("Pool #1: %d+ worker%(s%): %d+ starting, %d+ idle, %d+ busy", log)
    assert.matches("Resource usage of worker process %(PID %d+%) of pool #1: user time", log)
  end)

  it("unix_socket.lua greets and answers on a Unix socket", function()
    local dir = H.tmpdir()
    local path = dir .. "/example.sock"
    local srv = example("unix_socket.lua", "SOCKET=" .. H.quote(path))
    local h = H.wait_for(5, function() return mio.localconnect(path) end)
    assert.is_not_nil(h, H.log_text(srv))
    assert.matches("^hello from PID %d+\n$", H.read_line(h))
    h:write("ping\n"):flush()
    assert.equal("you said: ping\n", H.read_line(h))
    h:close()
    H.stop_clean(srv)
    assert.is_false(H.exists(path))
    os.execute("rm -rf " .. H.quote(dir))
  end)

  it("interval.lua fires every 2 seconds", function()
    local srv = example("interval.lua", "")
    local fired = H.wait_log(srv, 'interval "heartbeat" fired in PID %d+', 5)
    H.stop_clean(srv)
    assert.is_not_nil(fired)
  end)

  it("concurrent.lua serves many clients from one worker, each at its own pace", function()
    local srv = example("concurrent.lua", "PORT=$PORT")
    local clients, pids = {}, {}
    for i = 1, 50 do
      local h = assert(H.connect(srv))
      local greeting = assert(H.read_line(h))
      pids[greeting:match("^hello from worker (%d+)\n$")] = true
      clients[i] = h
    end
    -- all 50 are connected at once; answer them in reverse order
    for i = 50, 1, -1 do
      clients[i]:write("line " .. i .. "\n"):flush()
      assert.equal("line " .. i .. "\n", H.read_line(clients[i]))
      clients[i]:write("quit\n"):flush()
      clients[i]:close()
    end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equal(1, n, "one worker served them all")
    H.stop_clean(srv)
  end)
end)
