-- An application in the style of WebMCP (the framework behind LiquidFeedback), started the
-- way WebMCP is started: `moonbridge -- <framework>/bin/mcp.lua <framework> <app> <name>
-- <config>` through the installed launcher. The framework's launcher reads its directories
-- from `...`, uses the `moonbridge_io` global, wraps `listen` to add its own settings to the
-- tables it passes on (`http_options`, `max_requests_per_fork`, interval `handler`s), and
-- calls listen three times: an HTTP pool, an interval pool of exactly one worker, and a
-- main listener. Handlers return true to keep their workers.
local H = require "spec.server_helper"
local http = require "spec.http_helper"

after_each(H.cleanup_all)

-- The framework's launcher (bin/mcp.lua).
local MCP = [==[
local framework_path, base_path, app_name, config_name = ...
assert(_MOONBRIDGE_VERSION, "not started by moonbridge")
local mio = moonbridge_io -- the global, as WebMCP uses it
package.path = framework_path .. "lib/?.lua;" .. package.path
local util = require "mcp_util" -- the framework's own library
local http = require "moonbridge_http"

local moonbridge_listen = listen
function listen(args) -- the framework's wrapper, as WebMCP does it
  local handlers = {}
  for _, l in ipairs(args) do
    if l.proto == "interval" then handlers[l.name] = l.handler end
  end
  local main = args.main
  args.main = nil -- the framework's own key, not Moonbridge's
  local max_requests = args.max_requests_per_fork or 200
  local served = 0
  local outer = http.generate_handler(function(req)
    served = served + 1
    if served >= max_requests then req:close_after_finish() end
    req:send_status("200 OK")
    req:send_header("X-Served", tostring(served))
    req:send_data(util.greeting(app_name, config_name, req.path))
    req:finish()
    return true
  end, args.http_options)
  args.connect = function(socket)
    if socket.interval then
      handlers[socket.interval]()
      return true
    elseif socket.main then
      return main()
    end
    return outer(socket)
  end
  moonbridge_listen(args)
end

util.log_file = base_path .. "events"
util.event("launcher " .. framework_path .. " " .. base_path .. " " .. app_name .. " " ..
  config_name .. " pid " .. mio.getpid())
dofile(base_path .. "config/" .. config_name .. ".lua")
]==]

local UTIL = [==[
local M = {}
function M.event(text)
  local f = assert(io.open(M.log_file, "a"))
  f:write(text, "\n")
  f:close()
end
function M.greeting(app, config, path)
  return "app " .. app .. ", config " .. config .. ", path " .. tostring(path)
end
return M
]==]

-- The application's configuration (config/test.lua), in the framework's terms.
local CONFIG = [==[
local util = require "mcp_util"
listen{
  { proto = "tcp", host = "127.0.0.1", port = $PORT },
  pre_fork = 1, min_fork = 1, max_fork = 4,
  max_requests_per_fork = 100,
  http_options = { static_headers = { "X-Framework: mcp" } },
}
listen{
  { proto = "interval", name = "heartbeat", delay = 0.1,
    handler = function() util.event("heartbeat " .. moonbridge_io.getpid()) end },
  min_fork = 1, max_fork = 1,
}
listen{
  { proto = "main" },
  main = function()
    util.event("main " .. moonbridge_io.getpid())
    -- a background job that runs until the server is told to stop
    while not select(3, moonbridge_io.poll(nil, nil, nil, true)) do end
    util.event("main done")
    return false
  end,
}
]==]

describe("a WebMCP-style application", function()
  it("starts with its directories from ..., serves, runs its intervals and main, stops", function()
    local root = H.tmpdir()
    local fw, app = root .. "/webmcp/", root .. "/app/"
    assert(os.execute("mkdir -p " .. H.quote(fw .. "bin") .. " " .. H.quote(fw .. "lib") ..
      " " .. H.quote(app .. "config")))
    H.write_file(fw .. "bin/mcp.lua", MCP)
    H.write_file(fw .. "lib/mcp_util.lua", UTIL)
    local port = H.free_port()
    H.write_file(app .. "config/test.lua", (CONFIG:gsub("%$PORT", tostring(port))))
    finally(function() os.execute("rm -rf " .. H.quote(root)) end)
    local srv = H.start("-- unused: the framework's launcher is the application\n", {
      command = string.format("%s -- %s %s %s main test", H.quote(H.launcher),
        H.quote(fw .. "bin/mcp.lua"), H.quote(fw), H.quote(app)),
    })
    local sock = H.connect(srv, 10, "127.0.0.1", port)
    assert.is_not_nil(sock, H.log_text(srv))

    -- two requests on one keep-alive connection, answered by the framework's handler
    http.send(sock, http.get("/hello?x=1"), http.get("/again"))
    local r1 = http.read_response(sock)
    local r2 = http.read_response(sock)
    sock:close()
    assert.equal(200, r1.status, H.log_text(srv))
    assert.equal("app main, config test, path hello", r1.body)
    assert.equal("mcp", r1.header("x-framework"))
    assert.equal("app main, config test, path again", r2.body)
    assert.equal(tostring(tonumber(r1.header("x-served")) + 1), r2.header("x-served"))

    local events = function() return H.read_file(app .. "events") or "" end
    assert.matches("^launcher " .. fw:gsub("%p", "%%%0") .. " " .. app:gsub("%p", "%%%0") ..
      " main test pid " .. srv.pid .. "\n", events())
    -- heartbeats keep coming, always from the one interval worker
    assert.is_truthy(H.wait_for(5, function()
      local n = select(2, events():gsub("heartbeat ", ""))
      return n >= 3
    end), events())
    local beater = events():match("heartbeat (%d+)")
    for pid in events():gmatch("heartbeat (%d+)") do assert.equal(beater, pid) end
    assert.matches("\nmain %d+\n", events())

    local log = H.stop_clean(srv)
    assert.matches("main done\n", events())
    assert.matches('ignoring unknown option "http_options"', log)
    assert.not_matches("Error", log)
  end)
end)
