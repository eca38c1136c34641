-- A classic pool at max_fork with connections waiting to be accepted (issue 13, item 1):
-- moonbridge_http gives up what holds a worker for nothing. An idle keep-alive connection
-- is closed at once (one per waiting connection), a new connection that sent nothing is
-- closed and an incomplete head answered 408 once `busy_header_timeout` has passed; none of
-- this happens while no connection waits, or (the bound) with the option off.
-- Classic pools only (concurrency = 1 whatever MOONBRIDGE_SPEC_CONCURRENCY says).
local mio = require "moonbridge_io"
local H = require "spec.http_helper"

local HELLO = [[
  handler = function(request)
    request:send_status("200 OK")
    request:send_data("hello ", request.path)
    return true
  end]]

local function start(options, max)
  return H.start("options = " .. options .. "\n" .. HELLO,
    { workers = max, max_workers = max, concurrency = 1 })
end

local function get(sock, path)
  H.send(sock, "GET /" .. path .. " HTTP/1.1\r\nHost: a\r\n\r\n")
  return H.read_response(sock, { timeout = 5 })
end

-- Nothing arrives on `sock` within `seconds` (and it is not closed).
local function quiet(sock, seconds)
  local data, status = H.read_until_close(sock, seconds)
  return data == "" and status == "timeout"
end

describe("an overloaded classic pool", function()
  teardown(H.cleanup_all)

  it("gives up one idle keep-alive connection for each waiting one", function()
    local srv = start("{}", 2)
    local a, b = H.connect(srv), H.connect(srv)
    assert.are.equal(200, get(a, "a").status)
    assert.are.equal(200, get(b, "b").status)
    -- both workers hold an idle keep-alive connection; a third client waits in the backlog
    local c = H.connect(srv)
    local t0 = mio.timeref()
    local r = get(c, "c")
    assert.are.equal(200, r.status)
    assert.are.equal("hello c", r.body)
    assert.is_true(mio.timeref() - t0 < 2, "served without waiting for idle_timeout")
    -- exactly one of them was closed, without a byte; the other one still serves
    local da, sa = H.read_until_close(a, 0.5)
    local db, sb = H.read_until_close(b, 0.5)
    assert.are.equal("", da .. db)
    local closed = (sa == "eof" and 1 or 0) + (sb == "eof" and 1 or 0)
    assert.are.equal(1, closed, sa .. " " .. sb)
    local kept = sa == "eof" and b or a
    assert.are.equal("hello again", get(kept, "again").body)
    a:close(); b:close(); c:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("answers an incomplete head with 408 after busy_header_timeout while a connection waits", function()
    local srv = start("{ busy_header_timeout = 0.5, request_header_timeout = 30 }", 1)
    local slow = H.connect(srv)
    H.send(slow, "GET / HTTP/1.1\r\nHost: a\r\n")
    -- nobody waits: the head may take its time (request_header_timeout)
    assert.is_true(quiet(slow, 1))
    local normal = H.connect(srv)
    H.send(normal, "GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    local r = H.read_response(slow, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.matches("Server busy, timeout while receiving headers", r.body)
    assert.are.equal("eof", select(2, H.read_until_close(slow, 5)))
    r = H.read_response(normal, { timeout = 5 })
    assert.are.equal("hello n", r.body)
    slow:close(); normal:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("counts the bound from the head's start: a byte now and then does not extend it", function()
    local srv = start("{ busy_header_timeout = 0.6, request_header_timeout = 30, stall_timeout = 30 }", 1)
    local slow = H.connect(srv)
    H.send(slow, "GET / HTTP/1.1\r\n")
    local normal = H.connect(srv)
    H.send(normal, "GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    local t0 = mio.timeref()
    local answer
    for _ = 1, 20 do -- one header line every 0.2 s (each sooner than the bound)
      H.sleep(0.2)
      local ok = slow:write("X-Drip: 1\r\n") and slow:flush()
      local data = slow:read_nb()
      if not ok or data == nil or data ~= "" then answer = data or "" break end
    end
    assert.is_true(mio.timeref() - t0 < 3, "given up within a few times the bound")
    answer = (answer or "") .. H.read_until_close(slow, 5)
    assert.matches("^HTTP/1.1 408 Request Timeout", answer)
    assert.are.equal("hello n", H.read_response(normal, { timeout = 5 }).body)
    slow:close(); normal:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("closes a silent new connection after busy_header_timeout while a connection waits", function()
    local srv = start("{ busy_header_timeout = 0.5 }", 1)
    local silent = H.connect(srv)
    assert.is_true(quiet(silent, 0.8), "not while nobody waits")
    local normal = H.connect(srv)
    H.send(normal, "GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.are.equal("hello n", H.read_response(normal, { timeout = 5 }).body)
    local data, status = H.read_until_close(silent, 5)
    assert.are.equal("", data)
    assert.are.equal("eof", status)
    silent:close(); normal:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("with defer_accept, serves others while a silent connection waits in the kernel", function()
    -- (without it, the worker would hold the silent one until busy_header_timeout)
    local srv = H.start("options = { request_header_timeout = 30, busy_header_timeout = 5 }\n" .. HELLO,
      { workers = 1, max_workers = 1, concurrency = 1, defer_accept = true })
    -- the only worker never took the silent connection, so no timeout had to free it
    local silent = H.connect(srv)
    H.sleep(0.2)
    local t0 = mio.timeref()
    local normal = H.connect(srv)
    H.send(normal, "GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.are.equal("hello n", H.read_response(normal, { timeout = 5 }).body)
    assert.is_true(mio.timeref() - t0 < 1, "served at once")
    normal:close()
    -- once it speaks, it is served like any other
    H.send(silent, "GET /s HTTP/1.1\r\nHost: a\r\n\r\n")
    assert.are.equal("hello s", H.read_response(silent, { timeout = 5 }).body)
    silent:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("keeps incomplete heads to request_header_timeout with busy_header_timeout = false", function()
    local srv = start("{ busy_header_timeout = false, request_header_timeout = 1.5, stall_timeout = 30 }", 1)
    local slow = H.connect(srv)
    H.send(slow, "GET / HTTP/1.1\r\nHost: a\r\n")
    local normal = H.connect(srv)
    H.send(normal, "GET /n HTTP/1.1\r\nHost: a\r\n\r\n")
    local t0 = mio.timeref()
    local r = H.read_response(slow, { timeout = 5 })
    assert.are.equal(408, r.status)
    assert.matches("\nTimeout while receiving headers", r.body)
    assert.is_nil(r.body:find("Server busy", 1, true))
    assert.is_true(mio.timeref() - t0 > 1, "only the head's own timeout ended it")
    assert.are.equal("hello n", H.read_response(normal, { timeout = 5 }).body)
    slow:close(); normal:close()
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("takes busy_header_timeout as an option of generate_handler and checks it", function()
    local http = require "moonbridge_http"
    local hello = function() end
    assert.is_function(http.generate_handler({ busy_header_timeout = 3 }, hello))
    assert.is_function(http.generate_handler({ busy_header_timeout = false }, hello))
    local ok, err = pcall(http.generate_handler, { busy_header_timeout = "x" }, hello)
    assert.is_false(ok)
    assert.matches('Option "busy_header_timeout" is expected to be a non%-negative number or false', err)
    ok, err = pcall(http.generate_handler, { busy_headr_timeout = 1 }, hello)
    assert.is_false(ok)
    assert.matches('did you mean "busy_header_timeout"', err)
  end)
end)
