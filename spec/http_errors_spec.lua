-- What moonbridge_http refuses and what it logs: unsupported expectations (417), the
-- characters of a request-target, unknown options, the log of a handler error whose value
-- is not a string, and the client's faults found while the handler reads the body (one log
-- line, the worker serves on). Also: HEAD gets the header fields of GET.
local H = require "spec.http_helper"
local S = require "spec.server_helper"

-- a spec that fails half-way leaves its server running: stop it when the file ends
teardown(H.cleanup_all)

local APP = [[
options = { request_body_size_limit = 100, static_headers = "Server: errors" }
local mio = require "moonbridge_io"
local routes = {}
function routes.pid(request)
  request:send_status("200 OK")
  request:send_data(mio.getpid())
end
function routes.echo(request)
  local body = request.body
  request:send_status("200 OK")
  request:send_data(request.method, " ", tostring(request.path), " ", request.query, " ", body)
end
function routes.post(request)
  local n = 0
  for _ in pairs(request.post_params) do n = n + 1 end
  request:send_status("200 OK")
  request:send_data(n)
end
function routes.table_error()
  mark("line " .. debug.getinfo(1, "l").currentline + 1)
  error({ code = 42 })
end
function routes.object_error()
  local object = setmetatable({}, { __tostring = function() return "object error 42" end })
  mark("line " .. debug.getinfo(1, "l").currentline + 1)
  error(object)
end
function routes.caught(request)
  local ok = pcall(function() return request.body end)
  mark("caught " .. tostring(not ok))
  return true
end
-- HEAD and GET of the same steps
function routes.known(request)
  request:send_status("200 OK")
  request:send_header("Content-Type", "text/plain")
  request:send_data("hello")
end
function routes.length(request)
  request:send_status("200 OK")
  request:send_header("Content-Length", "5")
  request:send_data("hello")
end
function routes.flushed(request)
  request:send_status("200 OK")
  request:send_data("hel")
  request:flush()
  request:send_data("lo")
end
function routes.large(request)
  request:send_status("200 OK")
  request:send_data(string.rep("x", 100000))
end
function routes.empty(request)
  request:send_status("200 OK")
end
function routes.nocontent(request)
  request:send_status("204 No Content")
  request:send_header("X-A", "1")
end
handler = function(request)
  mark(request.method .. " " .. tostring(request.path))
  local route = routes[request.path] or routes.echo
  route(request)
  return true
end
]]

-- The log written since `mark` (a length of the log text).
local function log_since(srv, mark)
  return H.log_text(srv):sub(mark + 1)
end

-- The PID of a worker serving a new connection.
local function worker_pid(srv)
  local r = H.exchange(srv, H.get("/pid", "Connection: close\r\n"))
  assert.are.equal(200, r.status)
  return tonumber(r.body)
end

-- Asserts that worker `pid` is alive and serves again: the pool has one worker at most,
-- so the next connection goes to it unless it ended.
local function assert_serves_again(srv, pid)
  assert.is_true(S.alive(pid))
  assert.are.equal(pid, worker_pid(srv))
end

describe("moonbridge_http refusals and logs", function()
  local srv
  -- one worker and no more: the next connection shows whether it is still there
  setup(function() srv = H.start(APP, { workers = 1, max_workers = 1 }) end)
  teardown(function()
    if srv then H.stop_clean(srv) end
  end)

  it("answers an expectation other than 100-continue with 417 before the handler runs", function()
    local pid = worker_pid(srv)
    for _, expect in ipairs({ "x-custom", "100-continue, foo", "100-continuex", "200-ok" }) do
      H.clear_calls(srv)
      local sock = H.connect(srv)
      H.send(sock, "PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: " .. expect ..
        "\r\nContent-Length: 2\r\n\r\nab")
      local r = H.read_response(sock)
      assert.are.equal(417, r.status)
      assert.are.equal("Expectation Failed", r.reason)
      assert.are.equal("text/plain", r.header("content-type"))
      assert.are.equal("close", r.header("connection"))
      assert.matches("^417 Expectation Failed\n", r.body)
      assert.are_not.equal("timeout", select(2, H.read_until_close(sock, 5)))
      sock:close()
      assert.are.same({}, H.calls(srv))
    end
    assert_serves_again(srv, pid)
  end)

  it("sends 100 Continue for 100-continue in any case, in a list with empty elements", function()
    local sock = H.connect(srv)
    H.send(sock, "PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: , 100-Continue\r\nContent-Length: 2\r\n\r\n")
    local r = H.read_response(sock)
    assert.are.equal(100, r.status)
    H.send(sock, "ab")
    r = H.read_response(sock)
    assert.are.equal("PUT echo  ab", r.body)
    sock:close()
  end)

  it("ignores Expect in HTTP/1.0, whatever it says", function()
    for _, expect in ipairs({ "100-continue", "x-custom" }) do
      local sock = H.connect(srv)
      H.send(sock, "PUT /echo HTTP/1.0\r\nExpect: " .. expect .. "\r\nContent-Length: 2\r\n\r\nab")
      local r = H.read_response(sock)
      assert.are.equal(200, r.status) -- no 100 Continue first, no 417
      assert.are.equal("PUT echo  ab", r.body)
      sock:close()
    end
  end)

  it("refuses raw UTF-8, fragments and other characters outside RFC 3986 in the target", function()
    local pid = worker_pid(srv)
    local targets = { "/caf\195\169", "/?q=\195\169", "/a#frag", "/a?b#c", "/a%", "/a%4", "/a%zz",
      "/a\"b", "/<a>", "/a\\b", "/a^b", "/a`b", "/{a}", "/a|b", "/[::1]", "/a\127" }
    H.clear_calls(srv)
    for _, target in ipairs(targets) do
      local r = H.exchange(srv, H.get(target))
      assert.are.equal(400, r.status, target)
      assert.are.equal("close", r.header("connection"))
      assert.matches("^400 Bad Request\n\nInvalid request target", r.body)
    end
    assert.are.same({}, H.calls(srv))
    assert_serves_again(srv, pid)
  end)

  it("accepts every character RFC 3986 allows, OPTIONS * and absolute-form targets", function()
    local cases = {
      { "/caf%C3%A9?q=%e9", "GET caf%C3%A9 ?q=%e9 " },
      { "/a-._~!$&'()*+,;=:@/b?c=/d?e", "GET a-._~!$&'()*+,;=:@/b ?c=/d?e " },
      { "http://[::1]:8080/x?y=1", "GET x ?y=1 " },
      { "HTTPS://example.com", "GET  " .. " " },
    }
    for _, case in ipairs(cases) do
      local r = H.exchange(srv, H.get(case[1]))
      assert.are.equal(200, r.status, case[1])
      assert.are.equal(case[2], r.body)
    end
    local r = H.exchange(srv, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.are.equal(200, r.status)
    assert.matches("^OPTIONS nil", r.body)
  end)

  -- Requests `target`, whose handler raises after marking its line; returns that line and
  -- what the log got until the worker exited.
  local function handler_error(target)
    H.clear_calls(srv)
    local mark = #H.log_text(srv)
    assert.are.equal(500, H.exchange(srv, H.get(target)).status)
    local line = H.calls(srv)[2]:match("^line (%d+)$")
    -- a classic worker ends after a handler error; a concurrent one goes on (the error is
    -- logged all the same)
    local ended = H.CONCURRENCY > 1 and "stack traceback:" or "exited with code 1"
    local log = H.wait_for(5, function()
      local text = log_since(srv, mark)
      return text:find(ended, 1, true) and text
    end)
    assert.truthy(log)
    if H.CONCURRENCY > 1 then
      -- the traceback's lines reach the log one by one: take it once it stopped growing
      log = H.wait_for(5, function()
        H.sleep(0.1)
        local text = log_since(srv, mark)
        if text == log then return text end
        log = text
      end)
      assert.truthy(log)
    end
    return line, log
  end

  it("logs a handler error that is a table through tostring, with the handler's line", function()
    local line, log = handler_error("/table_error")
    assert.matches('Error in "connect" function: table: 0x%x+\n', log)
    assert.matches("stack traceback:\n", log)
    assert.truthy(log:find("app.lua:" .. line .. ": in ", 1, true), log)
    assert.is_nil(log:find("moonbridge_http/glue", 1, true), log)
  end)

  it("logs a handler error with __tostring as its text, with the handler's line", function()
    local line, log = handler_error("/object_error")
    assert.matches('Error in "connect" function: object error 42\n', log)
    assert.truthy(log:find("app.lua:" .. line .. ": in ", 1, true), log)
    assert.is_nil(log:find("moonbridge_http/glue", 1, true), log)
  end)

  -- The client's faults found while the handler reads the body.
  local FAULTS = {
    { "a chunked body over the limit", 413,
      "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "80\r\n" .. string.rep("x", 128) .. "\r\n0\r\n\r\n",
      '"POST /echo": 413 Content Too Large (Request body too large)' },
    { "POST parameters of an unknown media type", 415,
      "POST /post HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc",
      '"POST /post": 415 Unsupported Media Type' },
    { "a malformed chunked body", 400,
      "POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      '"POST /echo?x=1": 400 Bad Request (Invalid chunk size)' },
    { "a malformed multipart body", 400,
      "POST /post HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; boundary=b\r\n" ..
      "Content-Length: 10\r\n\r\nno parts..",
      '"POST /post": 400 Bad Request' },
  }
  for _, case in ipairs(FAULTS) do
    local name, status, bytes, logged = case[1], case[2], case[3], case[4]
    it("logs " .. name .. " as one line and keeps the worker (" .. status .. ")", function()
      local pid = worker_pid(srv)
      local mark = #H.log_text(srv)
      local r, sock = H.exchange(srv, bytes, { keep = true })
      assert.are.equal(status, r.status)
      assert.are.equal("close", r.header("connection"))
      assert.are.equal("text/plain", r.header("content-type"))
      assert.are_not.equal("timeout", select(2, H.read_until_close(sock, 5)))
      sock:close()
      local log = H.wait_for(5, function()
        local text = log_since(srv, mark)
        return text:find("Client error", 1, true) and text
      end)
      assert.truthy(log, log_since(srv, mark))
      assert_serves_again(srv, pid)
      log = log_since(srv, mark)
      local lines = {}
      for l in log:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(1, #lines, log)
      assert.truthy(lines[1]:find("[Pool #1, PID " .. pid .. "] " ..
        "Client error while reading the body of HTTP request " .. logged, 1, true), log)
    end)
  end

  it("leaves a client's fault the handler caught to the handler, without a log line", function()
    local pid = worker_pid(srv)
    H.clear_calls(srv)
    local mark = #H.log_text(srv)
    local r = H.exchange(srv, "POST /caught HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "80\r\n" .. string.rep("x", 128) .. "\r\n0\r\n\r\n")
    assert.are.equal(413, r.status)
    -- the response went out before the handler went on
    assert.truthy(H.wait_for(5, function() return #H.calls(srv) == 2 end))
    assert.are.same({ "POST caught", "caught true" }, H.calls(srv))
    assert_serves_again(srv, pid)
    assert.are.equal("", log_since(srv, mark))
  end)

  it("answers HEAD with exactly the header fields of GET (Date aside)", function()
    local function fields(r)
      return (r.raw_head:gsub("\r\nDate: [^\r]*", ""))
    end
    for _, http10 in ipairs({ false, true }) do
      for _, path in ipairs({ "known", "length", "flushed", "large", "empty", "nocontent" }) do
        local function request(method)
          if http10 then
            return method .. " /" .. path .. " HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
          end
          return H.get("/" .. path, nil, method)
        end
        local get = H.exchange(srv, request("GET"))
        local sock = H.connect(srv)
        H.send(sock, request("HEAD"))
        local head = H.read_response(sock, { head = true })
        assert.are.equal(fields(get), fields(head), path)
        -- no body follows: the connection closes or serves the next request at once
        if head.header("connection") == "close" then
          assert.are.equal("", (H.read_until_close(sock, 5)))
        else
          H.send(sock, request("GET"))
          assert.are.equal(fields(get), fields(H.read_response(sock)))
        end
        sock:close()
      end
    end
  end)
end)

describe("moonbridge_http.generate_handler options", function()
  local http = require "moonbridge_http"
  local function hello() end

  it("names an unknown option and suggests a close known one", function()
    local cases = {
      { { chunck_size = 1 }, 'Unknown option "chunck_size" (did you mean "chunk_size"?)' },
      { { Chunk_Size = 1 }, 'Unknown option "Chunk_Size" (did you mean "chunk_size"?)' },
      { { body_size_limt = 1 }, 'Unknown option "body_size_limt" (did you mean "body_size_limit"?)' },
      { { request_header_size_limits = 1 },
        'Unknown option "request_header_size_limits" (did you mean "request_header_size_limit"?)' },
      { { idle_timeuot = 1 }, 'Unknown option "idle_timeuot" (did you mean "idle_timeout"?)' },
      { { static_header = "X: y" }, 'Unknown option "static_header" (did you mean "static_headers"?)' },
      { { foo = 1 }, 'Unknown option "foo"' },
      { { timeout = 1 }, 'Unknown option "timeout"' },
      { { "positional" }, 'Unknown option "1"' },
    }
    for _, case in ipairs(cases) do
      -- raised at the caller's line, as a plain string
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() http.generate_handler(hello, case[1]) end)
      assert.is_false(ok)
      assert.are.equal("string", type(err))
      assert.are.equal(case[2], (err:gsub("^[^:]*http_errors_spec%.lua:" .. line .. ": ", "")))
      ok, err = pcall(function() http.generate_handler(case[1], hello) end)
      assert.is_false(ok)
      assert.matches(": " .. case[2]:gsub("%p", "%%%0") .. "$", err)
    end
  end)

  it("accepts every known option, with both spellings of the size limits", function()
    local all = {
      request_body_size_limit = 1, body_size_limit = 1, request_header_size_limit = 1000,
      header_size_limit = 1000, chunk_size = 1, maximum_input_chunk_size = 1,
      minimum_output_chunk_size = 1, static_headers = "X: y", idle_timeout = 1,
      stall_timeout = false, request_header_timeout = 1, response_timeout = false,
      drain_timeout = 1, poll_function = function() end,
    }
    assert.are.equal("function", type(http.generate_handler(hello, all)))
    assert.are.equal("function", type(http.generate_handler(all, hello)))
  end)

  it("accepts the original's poll_function (never called) and checks its type", function()
    local srv = H.start([[
options = { poll_function = function() error("poll_function was called") end }
function handler(request)
  request:send_status("200 OK")
  request:send_data("served")
  return true
end
]])
    local r = H.exchange(srv, H.get("/", "Connection: close\r\n"))
    assert.are.equal(200, r.status)
    assert.are.equal("served", r.body)
    assert.not_matches("poll_function was called", H.stop_clean(srv))
    local ok, err = pcall(http.generate_handler, hello, { poll_function = true })
    assert.is_false(ok)
    assert.matches('Option "poll_function" must be a function', err)
  end)
end)
