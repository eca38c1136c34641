-- Protocol conformance of moonbridge_http through a real server and raw bytes: every
-- refusal of issue 5 §5 (status line, small response, connection closed, handler never
-- called), keep-alive, pipelining, request bodies, 100-continue, handler errors, SIGTERM.
local H = require "spec.http_helper"

-- a spec that fails half-way leaves its server running: stop it when the file ends
teardown(H.cleanup_all)
local mio = require "moonbridge_io"

local APP = [[
options = { request_body_size_limit = 4096, static_headers = "Server: conformance" }
local routes = {}
function routes.echo(request)
  local body = request.body
  request:send_status("200 OK")
  request:send_header("X-Body-Length", #body)
  request:send_data(body)
end
function routes.ignore(request)
  request:send_status("200 OK")
  request:send_data("ignored the body")
end
function routes.boom()
  error("boom in the handler")
end
function routes.late_boom(request)
  request:send_status("200 OK")
  request:send_data("partial")
  request:flush()
  error("late boom")
end
function routes.nothing()
end
handler = function(request)
  mark(request.method .. " " .. tostring(request.path))
  local route = routes[request.path]
  if route then
    route(request)
  else
    request:send_status("200 OK")
    request:send_data(request.method, " ", tostring(request.path))
  end
  return true
end
]]

-- Refusals: raw request, expected status.
local REFUSALS = {
  { "malformed request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "request line without version", "GET /\r\nHost: a\r\n\r\n", 400 },
  { "malformed header", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400 },
  { "whitespace before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400 },
  { "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400 },
  { "bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400 },
  { "bare CR", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400 },
  { "NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400 },
  { "control character in a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\27b\r\n\r\n", 400 },
  { "missing Host in HTTP/1.1", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400 },
  { "two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
  { "Content-Length and Transfer-Encoding",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
  { "differing Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400 },
  { "negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400 },
  { "fractional Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\n", 400 },
  { "signed Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400 },
  { "hexadecimal Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400 },
  { "Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
  { "chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400 },
  { "unknown transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
  { "CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501 },
  { "HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
  { "HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505 },
  { "HTTP/0.9 style version", "GET / HTTP/0.9\r\n\r\n", 505 },
  { "body over the limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", 413 },
  { "request-target over the limit", "GET /" .. string.rep("a", 70000) .. " HTTP/1.1\r\nHost: a\r\n\r\n", 414 },
  { "header section over the limit", "GET / HTTP/1.1\r\nHost: a\r\n" ..
    string.rep("X-Filler: " .. string.rep("f", 60000) .. "\r\n", 20) .. "\r\n", 431 },
  { "too many header fields", "GET / HTTP/1.1\r\nHost: a\r\n" .. string.rep("X: y\r\n", 300) .. "\r\n", 431 },
  { "unexpected EOF in the head", "GET / HTTP/1.1\r\nHost: a\r\n", 400, true },
  { "an unsupported expectation", "GET / HTTP/1.1\r\nHost: a\r\nExpect: x-custom\r\n\r\n", 417 },
  { "an unsupported expectation in a list",
    "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\nContent-Length: 2\r\n\r\nab", 417 },
  { "raw UTF-8 in the target", "GET /caf\195\169 HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a fragment in the target", "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a fragment after the query", "GET /a?b=c#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "% without two hex digits", "GET /a%2x HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a quote in the target", "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "angle brackets in the target", "GET /<a> HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a backslash in the target", "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "braces and a bar in the query", "GET /?a={b|c} HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a caret in the target", "GET /a^b HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "a backtick in the target", "GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
  { "brackets in an origin-form path", "GET /[::1] HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
}

describe("moonbridge_http conformance", function()
  local srv
  setup(function() srv = H.start(APP) end)
  teardown(function()
    if srv then H.stop_clean(srv) end
  end)

  for _, case in ipairs(REFUSALS) do
    local name, bytes, status, half_close = case[1], case[2], case[3], case[4]
    it("refuses " .. name .. " with " .. status, function()
      H.clear_calls(srv)
      local sock = H.connect(srv)
      H.send(sock, bytes)
      if half_close then sock:finish() end
      local r = H.read_response(sock)
      assert.are.equal(status, r.status)
      assert.matches("^HTTP/1%.1 " .. status .. " %a", r.raw_head)
      assert.are.equal("text/plain", r.header("content-type"))
      assert.are.equal("close", r.header("connection"))
      assert.are.equal("conformance", r.header("server"))
      assert.matches("^" .. status .. " " .. r.reason:gsub("%p", "%%%0") .. "\n", r.body)
      local rest, how = H.read_until_close(sock, 5)
      assert.are.equal("", rest)
      assert.are_not.equal("timeout", how)
      sock:close()
      assert.are.same({}, H.calls(srv))
    end)
  end

  it("keeps HTTP/1.1 connections alive and answers pipelined requests in order", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/a") ..
      "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" ..
      "POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nskip" ..
      "\r\n" .. H.get("/b"))
    local bodies = {}
    for i = 1, 4 do
      local r = H.read_response(sock)
      assert.are.equal(200, r.status)
      assert.is_nil(r.header("connection"))
      bodies[i] = r.body
    end
    assert.are.same({ "GET a", "hello", "ignored the body", "GET b" }, bodies)
    sock:close()
  end)

  it("closes HTTP/1.0 connections unless asked to keep them", function()
    local sock = H.connect(srv)
    H.send(sock, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    local r = H.read_response(sock)
    assert.are.equal("keep-alive", r.header("connection"))
    assert.are.equal("GET x", r.body)
    H.send(sock, "GET /y HTTP/1.0\r\n\r\n")
    r = H.read_response(sock)
    assert.are.equal("close", r.header("connection"))
    assert.are.equal("GET y", r.body)
    assert.are.equal("eof", select(2, H.read_until_close(sock, 5)))
    sock:close()
  end)

  it("honours Connection: close from the client", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/c", "Connection: close\r\n") .. H.get("/never"))
    local r = H.read_response(sock)
    assert.are.equal("close", r.header("connection"))
    assert.are.equal("", (H.read_until_close(sock, 5)))
    sock:close()
    for _, call in ipairs(H.calls(srv)) do assert.are_not.equal("GET never", call) end
  end)

  it("reads chunked request bodies with extensions and trailers", function()
    local r = H.exchange(srv, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "5;name=value\r\nhello\r\n001;x=\"q;\"\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert.are.equal(200, r.status)
    assert.are.equal("hello world!", r.body)
  end)

  it("answers a chunked body over the limit with 413", function()
    local chunk = string.rep("z", 3000)
    local r = H.exchange(srv, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      string.format("%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", #chunk, chunk, #chunk, chunk))
    assert.are.equal(413, r.status)
    assert.are.equal("close", r.header("connection"))
  end)

  it("answers a malformed chunked body with 400", function()
    local r = H.exchange(srv, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "5\r\nhelloXX0\r\n\r\n")
    assert.are.equal(400, r.status)
  end)

  it("sends 100 Continue only when the handler reads the body", function()
    local sock = H.connect(srv)
    H.send(sock, "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    local interim = H.read_response(sock)
    assert.are.equal(100, interim.status)
    H.send(sock, "data")
    local r = H.read_response(sock)
    assert.are.equal(200, r.status)
    assert.are.equal("data", r.body)
    sock:close()

    sock = H.connect(srv)
    H.send(sock, "POST /ignore HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    r = H.read_response(sock)
    assert.are.equal(200, r.status) -- no 100 Continue first
    assert.are.equal("close", r.header("connection"))
    sock:close()
  end)

  it("drains an unread body (within the limit) before the next request", function()
    local sock = H.connect(srv)
    H.send(sock, "POST /ignore HTTP/1.1\r\nHost: a\r\nContent-Length: 4000\r\n\r\n" .. string.rep("x", 100))
    local r = H.read_response(sock)
    assert.are.equal(200, r.status)
    -- 4000 bytes are within the drain limit: the connection waits for them, then serves on
    H.send(sock, string.rep("x", 3900) .. H.get("/next"))
    r = H.read_response(sock)
    assert.are.equal("GET next", r.body)
    sock:close()
  end)

  it("answers a handler error with 500 and keeps serving on new connections", function()
    local r, sock = H.exchange(srv, H.get("/boom"), { keep = true })
    assert.are.equal(500, r.status)
    assert.are.equal("close", r.header("connection"))
    assert.are.equal("500 Internal Server Error\n", r.body)
    assert.are.equal("eof", select(2, H.read_until_close(sock, 5)))
    sock:close()
    assert.truthy(H.wait_for(5, function()
      return H.log_text(srv):find('Error in "connect" function: [^\n]*boom in the handler')
    end))
    assert.matches("stack traceback", H.log_text(srv))
    r = H.exchange(srv, H.get("/after"))
    assert.are.equal("GET after", r.body)
  end)

  it("resets the connection when a handler fails after sending a response head", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/late_boom"))
    local received, how = H.read_until_close(sock, 5)
    -- a reset may discard what the client had not read yet; what arrived is incomplete
    if received ~= "" then assert.matches("^HTTP/1%.1 200 OK\r\n", received) end
    assert.is_nil(received:find("0\r\n\r\n$")) -- the chunked body never ends
    assert.are.equal("reset", how)
    sock:close()
    assert.are.equal("GET after", H.exchange(srv, H.get("/after")).body)
  end)

  it("treats a handler that sends nothing as an error", function()
    local r = H.exchange(srv, H.get("/nothing"))
    assert.are.equal(500, r.status)
    assert.truthy(H.wait_for(5, function()
      return H.log_text(srv):find("returned without sending a response")
    end))
  end)
end)

describe("moonbridge_http timeouts and shutdown", function()
  it("answers an idle keep-alive connection with 408 on SIGTERM, then closes", function()
    local srv = H.start([[handler = function(request)
      request:send_status("200 OK")
      request:send_data("hi")
      return true
    end]])
    local sock = H.connect(srv)
    H.send(sock, H.get("/"))
    assert.are.equal("hi", H.read_response(sock).body)
    -- let a spare worker the master may be forking finish starting (see H.stop)
    H.sleep(0.3)
    local t0 = mio.timeref()
    os.execute("kill -TERM " .. srv.pid)
    local r = H.read_response(sock, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.are.equal("close", r.header("connection"))
    assert.are.equal("eof", select(2, H.read_until_close(sock, 5)))
    assert.is_true(mio.timeref() - t0 < 4)
    sock:close()
    assert.are.equal(0, H.stop(srv, "0")) -- no second SIGTERM (see the server lifecycle spec)
    H.cleanup(srv)
  end)

  it("closes idle connections after idle_timeout and slow heads after request_header_timeout", function()
    local srv = H.start([[
      options = { idle_timeout = 0.3, request_header_timeout = 0.5, stall_timeout = 0.4 }
      handler = function(request)
        if request.path == "body" then
          local ok, err = pcall(function() return request.body end)
          mark(tostring(err))
          error(err, 0)
        end
        request:send_status("200 OK")
        request:send_data("hi")
        return true
      end]])
    local sock = H.connect(srv)
    local t0 = mio.timeref()
    local r = H.read_response(sock, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.matches("Idle connection timed out", r.body)
    assert.is_true(mio.timeref() - t0 >= 0.25)
    sock:close()

    sock = H.connect(srv)
    H.send(sock, "GET / HTTP/1.1\r\n")
    t0 = mio.timeref()
    r = H.read_response(sock, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.matches("Timeout while receiving headers", r.body)
    sock:close()

    sock = H.connect(srv)
    H.send(sock, "POST /body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    r = H.read_response(sock, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.matches("Timeout while waiting for request body", r.body)
    sock:close()
    assert.truthy(H.wait_for(5, function()
      return H.calls(srv)[1] and H.calls(srv)[1]:find("Timeout while waiting for request body")
    end))
    H.stop(srv)
    H.cleanup(srv)
  end)

  -- response_timeout is re-armed for each request of a long keep-alive connection, both
  -- when the timer is stopped between requests (1 s: idle + header timeouts + 5 s would
  -- outlast it) and when it keeps running (5.5 s: they cannot).
  for _, case in ipairs { { limit = 1, last = 2.5 }, { limit = 5.5, last = 6.5 } } do
    it("re-arms a response_timeout of " .. case.limit .. " s on every request", function()
      local srv = H.start(string.format([[
        options = { response_timeout = %s, idle_timeout = 0.2, request_header_timeout = 0.2 }
        handler = function(request)
          if request.path == "pause" then moonbridge_io.poll(nil, nil, 0.6) end
          request:send_status("200 OK")
          request:send_data(request.path)
          return true
        end]], case.limit))
      local sock = H.connect(srv)
      local t0 = mio.timeref()
      local n = 0
      while mio.timeref() - t0 < case.last do
        H.send(sock, H.get(n % 2 == 0 and "/pause" or "/quick"))
        local r = H.read_response(sock)
        assert.are.equal(200, r.status)
        n = n + 1
        mio.poll(nil, nil, 0.1)
      end
      sock:close()
      assert.is_true(n >= 4)
      assert.is_nil(H.log_text(srv):find("exited prematurely"))
      H.stop(srv)
      H.cleanup(srv)
    end)
  end

  -- Between requests the glue either stops the timer (1 s above), lets it run (5.5 s
  -- above, and the default), or has none: then `conn:done` awaits the next request
  -- itself. Requests one by one and pipelined (the concurrent layer of .ci/run runs this
  -- in concurrent pools too).
  it("serves keep-alive requests without a response timer", function()
    local srv = H.start([[
      options = { response_timeout = false }
      local previous -- kept: stale once the next request came
      handler = function(request)
        local stale = previous and select(2, pcall(previous.send_data, previous, "x")) or "-"
        previous = request
        request:send_status("200 OK")
        request:send_data(request.path, "|", request.query, "|", stale)
        return true
      end]])
    local sock = H.connect(srv)
    local finished = "Response has already been finished"
    for i = 1, 3 do
      H.send(sock, H.get("/one?n=" .. i))
      local r = H.read_response(sock)
      assert.are.equal(200, r.status)
      assert.are.equal("one|?n=" .. i .. "|" .. (i == 1 and "-" or finished), r.body)
    end
    H.send(sock, H.get("/a?x") .. H.get("/b", "Connection: close\r\n"))
    assert.are.equal("a|?x|" .. finished, H.read_response(sock).body)
    assert.are.equal("b||" .. finished, H.read_response(sock).body)
    assert.are.equal("", sock:read()) -- closed after the request that asked for it
    sock:close()
    assert.is_nil(H.log_text(srv):find("rror"), H.log_text(srv))
    H.stop(srv)
    H.cleanup(srv)
  end)

  -- A classic worker takes over, for a new connection, the response timer the previous one
  -- armed less than a second before (src/server/timer.rs): it must still be re-armed over
  -- many short connections, and still end a handler that runs too long.
  local adopting = [[
    options = { response_timeout = 5.5, idle_timeout = 0.2, request_header_timeout = 0.2 }
    handler = function(request)
      if request.path == "pause" then moonbridge_io.poll(nil, nil, 0.6) end
      if request.path == "slow" then moonbridge_io.poll(nil, nil, 10) end
      request:send_status("200 OK")
      request:send_data(request.path == "pid" and moonbridge_io.getpid() or request.path)
      return true
    end]]

  it("lets a parked response timer expire in an idle worker, which serves on", function()
    local srv = H.start(adopting, { workers = 1, max_workers = 1 })
    local first = H.exchange(srv, H.get("/pid", "Connection: close\r\n"))
    assert.are.equal(200, first.status)
    mio.poll(nil, nil, 6) -- past the 5.5 s the timer was armed for, waiting for a connection
    local second = H.exchange(srv, H.get("/pid", "Connection: close\r\n"))
    assert.are.equal(first.body, second.body) -- the same worker
    assert.is_nil(H.log_text(srv):find("exited prematurely"))
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("re-arms a response_timeout over one short connection after the other", function()
    local srv = H.start(adopting)
    local t0 = mio.timeref()
    local n = 0
    while mio.timeref() - t0 < 6.5 do
      local path = n % 4 == 0 and "/pause" or "/quick"
      local r = H.exchange(srv, H.get(path, "Connection: close\r\n"))
      assert.are.equal(200, r.status)
      assert.are.equal(path:sub(2), r.body)
      n = n + 1
    end
    assert.is_true(n >= 8)
    assert.is_nil(H.log_text(srv):find("exited prematurely"))
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("ends a handler past response_timeout on a connection that followed a short one",
    function()
      local srv = H.start(adopting)
      assert.are.equal("quick", H.exchange(srv, H.get("/quick", "Connection: close\r\n")).body)
      local sock = H.connect(srv)
      local t0 = mio.timeref()
      H.send(sock, H.get("/slow", "Connection: close\r\n"))
      local received, how = H.read_until_close(sock, 12)
      local took = mio.timeref() - t0
      sock:close()
      assert.are.equal("", received)
      assert.are.equal("reset", how)
      -- at most a second early (the timer was armed before), never late
      assert.is_true(took > 4.4 and took < 7, "ended after " .. took .. " s")
      local expected = H.CONCURRENCY > 1 and 'Timeout in "connect" function'
        or "exited prematurely due to timeout"
      assert.truthy(H.wait_for(5, function()
        return H.log_text(srv):find(expected, 1, true)
      end))
      H.stop(srv)
      H.cleanup(srv)
    end)

  it("ends a worker whose handler runs longer than response_timeout", function()
    local srv = H.start([[
      options = { response_timeout = 0.5 }
      handler = function(request)
        if request.path == "slow" then
          moonbridge_io.poll(nil, nil, 5)
        end
        request:send_status("200 OK")
        request:send_data("done")
        return true
      end]])
    local sock = H.connect(srv)
    local t0 = mio.timeref()
    H.send(sock, H.get("/slow"))
    local received, how = H.read_until_close(sock, 8)
    assert.are.equal("", received)
    assert.are.equal("reset", how)
    assert.is_true(mio.timeref() - t0 < 4)
    sock:close()
    -- a classic worker is killed; in a concurrent pool only the handler ends
    local expected = H.CONCURRENCY > 1 and 'Timeout in "connect" function'
      or "exited prematurely due to timeout"
    assert.truthy(H.wait_for(5, function()
      return H.log_text(srv):find(expected, 1, true)
    end))
    assert.are.equal("done", H.exchange(srv, H.get("/fast")).body)
    H.stop(srv)
    H.cleanup(srv)
  end)
end)
