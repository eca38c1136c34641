-- The request object of moonbridge_http, field by field and method by method, through a
-- real server (the launcher) and raw TCP.
local H = require "spec.http_helper"

-- a spec that fails half-way leaves its server running: stop it when the file ends
teardown(H.cleanup_all)

local APP = H.serializer_source() .. [[
local routes = {}
local stale -- a request kept from an earlier call

function routes.fields(request)
  local r = {
    fresh = request.fresh, faulty = request.faulty,
    method = request.method, path = request.path, query = request.query,
    host = request.host, socket_ip = request.socket.remote_ip,
    headers = {}, get_params = {}, get_params_list = {}, cookies = {},
    accept_mixed_case = request.headers["ACCEPT"],
    missing = request.headers["X-Missing"],
    csv_table = request.headers_csv_table["X-List"],
    csv_table_missing = request.headers_csv_table["X-Missing"],
    csv_string = request.headers_csv_string["x-list"],
    csv_string_missing = request.headers_csv_string["X-Missing"],
    value_single = request.headers_value["X-Single"],
    value_repeated = request.headers_value["X-List"],
    value_comma = request.headers_value["X-Comma"],
    value_missing = request.headers_value["X-Missing"] == nil,
    flag_set = request.headers_flags["Connection"]["KEEP-ALIVE"],
    flag_unset = request.headers_flags["Connection"]["close"],
    flag_missing_header = request.headers_flags["X-Missing"]["x"],
    first_param = request.get_params.a,
    missing_param_list = request.get_params_list.zzz,
  }
  for k, v in pairs(request.headers) do r.headers[k] = v end
  for k, v in pairs(request.get_params) do r.get_params[k] = v end
  for k, v in pairs(request.get_params_list) do r.get_params_list[k] = v end
  for k, v in pairs(request.cookies) do r.cookies[k] = v end
  r.headers_keys_lowercase = true
  for k in pairs(request.headers) do
    if k ~= k:lower() then r.headers_keys_lowercase = false end
  end
  r.fresh_after_reading_fields = request.fresh
  request:send_status("200 OK")
  r.fresh_after_status = request.fresh
  request:send_data(ser(r))
end

function routes.target(request)
  request:send_status("200 OK")
  request:send_data(ser({ path = request.path, query = request.query == nil and "nil" or request.query,
    get_params = request.get_params }))
end

function routes.data(request)
  request:send_status("200 OK")
  request:send_header("X-Multi", "1")
  request:send_header("X-Multi", "2")
  local t = setmetatable({}, { __tostring = function() return "<obj>" end })
  request:send_data("a", 1, 2.5, true, nil, t)
  request:send_data()
  request:send_data("")
  request:finish()
  request:finish() -- no operation on a finished request
end

function routes.stream(request)
  request:send_status("200 OK")
  request:send_data("one,")
  request:flush()
  request:send_data("two,")
  request:send_data("three")
end

function routes.length(request)
  request:send_status("200 OK")
  request:send_header("Content-Length", "5")
  request:send_data("12")
  request:send_data("345")
end

function routes.headers_first(request)
  request:send_status("200 OK")
  request:finish_headers()
  request:finish_headers() -- may be called again
  request:send_data("after headers")
end

function routes.nocontent(request)
  request:send_status("204 No Content")
  request:send_header("X-A", "b")
end

function routes.close(request)
  request:close_after_finish()
  request:send_status("200 OK")
  request:send_data("bye")
end

function routes.monologue(request)
  request:monologue()
  request:send_status("200 OK")
  request:send_data("talking")
end

function routes.misuse(request)
  local errors = {}
  local function try(name, f, ...)
    local ok, err = pcall(f, request, ...)
    errors[name] = ok and "ok" or tostring(err)
  end
  try("header_before_status", request.send_header, "X", "y")
  try("data_before_status", request.send_data, "x")
  try("finish_before_status", request.finish)
  try("bad_status", request.send_status, "OK")
  request:send_status("200 OK")
  try("status_twice", request.send_status, "200 OK")
  try("bad_header_name", request.send_header, "Bad Name", "x")
  try("header_injection", request.send_header, "X", "a\r\nInjected: 1")
  try("body_after_status", function(r) return r.body end)
  try("stream_after_status", request.stream_request_body, function() end)
  try("stream_param_after_status", request.stream_post_param, "f", function() end)
  request:send_data("x")
  try("header_after_data", request.send_header, "X", "y")
  try("close_after_data", request.close_after_finish)
  try("monologue_after_data", request.monologue)
  request:finish()
  try("data_after_finish", request.send_data, "x")
  try("finish_again", request.finish)
  errors.stale_before = stale and "kept" or "none"
  if stale then
    try("stale_send", function() stale:send_data("x") end)
    try("stale_finish", function() stale:finish() end)
    try("stale_headers", function() return stale.headers end)
    errors.stale_method = stale.method
    errors.stale_socket = rawequal(stale.socket, request.socket) and "same" or "differs"
    errors.stale_is_finish = stale.finish == request.finish and "same" or "differs"
  end
  stale = request
  -- the response is finished; the body of this response is sent as a second request's
  -- answer by the spec, so here only remember the errors
  routes.last_errors = errors
end

function routes.errors(request)
  request:send_status("200 OK")
  request:send_data(ser(routes.last_errors or {}))
end

function routes.head(request)
  request:send_status("200 OK")
  request:send_header("Content-Type", "text/plain")
  request:send_data("a body of 21 bytes...")
end

function routes.early_hints(request)
  request:send_status("103 Early Hints")
  request:send_header("Link", "</style.css>; rel=preload")
  request:finish_headers()
  request:send_status("200 OK")
  request:send_data("final")
end

-- 101, then the socket speaks another protocol: bytes the client sent right after the
-- request head are read through request.socket (the same read buffer, nothing lost)
function routes.upgrade(request)
  request:send_status("101 Switching Protocols")
  request:send_header("Connection", "Upgrade")
  request:send_header("Upgrade", "echo")
  request:finish_headers()
  local socket = request.socket
  while true do
    local line = socket:read(100, "\n")
    if not line or line == "" then break end
    socket:write("echo: ", line):flush()
    if line == "bye\n" then break end
  end
end

function routes.stream10(request)
  request:send_status("200 OK")
  request:send_data("part one, ")
  request:flush()
  request:send_data("part two")
end

handler = function(request)
  mark(tostring(request.path))
  local route = routes[request.path or "asterisk"] or routes.target
  route(request)
  return true
end
routes.asterisk = routes.target
]]

describe("moonbridge_http request object", function()
  local srv
  setup(function() srv = H.start(APP) end)
  teardown(function()
    if srv then H.stop_clean(srv) end
  end)

  it("has the request line, header tables, GET params and cookies", function()
    local r = H.exchange(srv, "GET /fields?a=1&b=x+y&a=2&c=%41%42&flag HTTP/1.1\r\n" ..
      "Host: example.org:8080\r\nAccept: text/html\r\nX-List: a, b\r\nX-List: c\r\n" ..
      "X-Single: only one\r\nX-Comma: p, q\r\nConnection: Keep-Alive, Upgrade\r\n" ..
      "Cookie: s=1; t=a%20b\r\nCookie: s=2; u=\"quoted\"\r\n\r\n")
    assert.are.equal(200, r.status)
    local f = H.decode(r.body)
    assert.is_true(f.fresh)
    assert.is_false(f.faulty)
    assert.are.equal("GET", f.method)
    assert.are.equal("fields", f.path)
    assert.are.equal("?a=1&b=x+y&a=2&c=%41%42&flag", f.query)
    assert.are.equal("example.org:8080", f.host)
    assert.are.equal("127.0.0.1", f.socket_ip)
    assert.are.same({ "a, b", "c" }, f.headers["x-list"])
    assert.are.same({ "example.org:8080" }, f.headers.host)
    assert.is_true(f.headers_keys_lowercase)
    assert.are.same({ "text/html" }, f.accept_mixed_case)
    assert.are.same({}, f.missing)
    assert.are.same({ "a", "b", "c" }, f.csv_table)
    assert.are.same({}, f.csv_table_missing)
    assert.are.equal("a, b, c", f.csv_string)
    assert.are.equal("", f.csv_string_missing)
    assert.are.equal("only one", f.value_single)
    assert.is_false(f.value_repeated)
    assert.are.equal("p, q", f.value_comma)
    assert.is_true(f.value_missing)
    assert.is_true(f.flag_set)
    assert.is_false(f.flag_unset)
    assert.is_false(f.flag_missing_header)
    assert.are.same({ a = "1", b = "x y", c = "AB" }, f.get_params)
    assert.are.same({ a = { "1", "2" }, b = { "x y" }, c = { "AB" } }, f.get_params_list)
    assert.are.equal("1", f.first_param)
    assert.are.same({}, f.missing_param_list)
    assert.are.same({ s = "1", t = "a b", u = "quoted" }, f.cookies)
    assert.is_true(f.fresh_after_reading_fields)
    assert.is_false(f.fresh_after_status)
  end)

  it("gives path and query undecoded, without the leading slash", function()
    local cases = {
      { "/a%20b/c%2Fd?x=%20", "a%20b/c%2Fd", "?x=%20" },
      { "/", "", "" },
      { "/plain", "plain", "" },
      { "/q?", "q", "?" },
      { "http://localhost/abs/x?y=1", "abs/x", "?y=1" },
    }
    for _, c in ipairs(cases) do
      local r = H.exchange(srv, H.get(c[1]))
      local f = H.decode(r.body)
      assert.are.equal(c[2], f.path, c[1])
      assert.are.equal(c[3], f.query, c[1])
    end
    local r = H.exchange(srv, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    local f = H.decode(r.body)
    assert.is_nil(f.path)
    assert.are.equal("nil", f.query)
    assert.are.same({}, f.get_params)
  end)

  it("sends headers, converts send_data arguments with tostring, and uses Content-Length", function()
    local r = H.exchange(srv, H.get("/data"))
    assert.are.equal(200, r.status)
    assert.are.equal("OK", r.reason)
    assert.are.same({ "1", "2" }, r.headers["x-multi"])
    local expected = "a12.5truenil<obj>"
    assert.are.equal(expected, r.body)
    assert.are.equal(tostring(#expected), r.header("content-length"))
    assert.is_nil(r.header("transfer-encoding"))
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", r.header("date"))
  end)

  it("chunks the body after a flush, and honours the application's Content-Length", function()
    local r, sock = H.exchange(srv, H.get("/stream"), { keep = true })
    assert.are.equal("chunked", r.header("transfer-encoding"))
    assert.are.equal("one,two,three", r.body)
    H.send(sock, H.get("/length"))
    r = H.read_response(sock)
    assert.are.equal("5", r.header("content-length"))
    assert.are.equal("12345", r.body)
    H.send(sock, H.get("/headers_first"))
    r = H.read_response(sock)
    assert.are.equal("chunked", r.header("transfer-encoding"))
    assert.are.equal("after headers", r.body)
    H.send(sock, H.get("/nocontent"))
    r = H.read_response(sock)
    assert.are.equal(204, r.status)
    assert.is_nil(r.header("content-length"))
    assert.is_nil(r.header("transfer-encoding"))
    assert.are.equal("b", r.header("x-a"))
    sock:close()
  end)

  it("answers HEAD with the GET headers and no body", function()
    local get, sock = H.exchange(srv, H.get("/head"), { keep = true })
    H.send(sock, H.get("/head", nil, "HEAD") .. H.get("/data"))
    local head = H.read_response(sock, { head = true })
    assert.are.equal(200, head.status)
    assert.are.equal(get.header("content-length"), head.header("content-length"))
    assert.are.equal("text/plain", head.header("content-type"))
    -- the next response follows at once: the HEAD response had no body
    local after = H.read_response(sock)
    assert.are.equal("a12.5truenil<obj>", after.body)
    sock:close()
  end)

  it("sends interim 1xx responses before the final one", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/early_hints"))
    local hints = H.read_response(sock)
    assert.are.equal(103, hints.status)
    assert.are.equal("</style.css>; rel=preload", hints.header("link"))
    local final = H.read_response(sock)
    assert.are.equal(200, final.status)
    assert.are.equal("final", final.body)
    sock:close()
  end)

  it("closes after close_after_finish and monologue", function()
    for _, route in ipairs({ "/close", "/monologue" }) do
      local sock = H.connect(srv)
      local extra = route == "/monologue" and "Content-Length: 10\r\n" or ""
      H.send(sock, H.get(route, extra) .. (route == "/monologue" and "0123456789" or ""))
      local r = H.read_response(sock)
      assert.are.equal("close", r.header("connection"), route)
      assert.are.equal(route == "/close" and "bye" or "talking", r.body)
      local rest, how = H.read_until_close(sock, 5)
      assert.are.equal("", rest)
      assert.are.equal("eof", how)
      sock:close()
    end
  end)

  it("raises plain-string errors on misuse and treats stale requests as finished", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/misuse"))
    assert.are.equal(200, H.read_response(sock).status)
    H.send(sock, H.get("/misuse")) -- a second time: the first request is stale now
    assert.are.equal(200, H.read_response(sock).status)
    H.send(sock, H.get("/errors"))
    local e = H.decode(H.read_response(sock).body)
    sock:close()
    assert.are.equal("HTTP status has not been sent yet", e.header_before_status)
    assert.are.equal("HTTP status has not been sent yet", e.data_before_status)
    assert.are.equal("HTTP status has not been sent yet", e.finish_before_status)
    assert.matches("^Invalid HTTP status", e.bad_status)
    assert.are.equal("HTTP status has already been sent", e.status_twice)
    assert.are.equal("Invalid HTTP header name", e.bad_header_name)
    assert.matches("^Invalid HTTP header value", e.header_injection)
    assert.are.equal("Cannot setup request body streamer at this stage anymore", e.body_after_status)
    assert.are.equal("Cannot setup request body streamer at this stage anymore", e.stream_after_status)
    assert.are.equal("Cannot setup request body streamer at this stage anymore",
      e.stream_param_after_status)
    assert.are.equal("All HTTP headers have already been sent", e.header_after_data)
    assert.are.equal("All HTTP headers have already been sent", e.close_after_data)
    assert.are.equal("All HTTP headers have already been sent", e.monologue_after_data)
    assert.are.equal("Response has already been finished", e.data_after_finish)
    assert.are.equal("ok", e.finish_again)
    assert.are.equal("kept", e.stale_before)
    assert.are.equal("Response has already been finished", e.stale_send)
    assert.are.equal("ok", e.stale_finish)
    assert.are.equal("Attempt to read a field of a finished request", e.stale_headers)
    assert.are.equal("GET", e.stale_method)
    assert.are.equal("same", e.stale_socket)
    assert.are.equal("same", e.stale_is_finish)
  end)

  it("hands the socket over after 101 without losing buffered bytes", function()
    local sock = H.connect(srv)
    H.send(sock, H.get("/upgrade", "Connection: Upgrade\r\nUpgrade: echo\r\n") .. "first\n")
    local r = H.read_response(sock)
    assert.are.equal(101, r.status)
    assert.are.equal("Upgrade", r.header("connection"))
    assert.are.equal("echo", r.header("upgrade"))
    local deadline = require("moonbridge_io").timeref() + 5
    assert.are.equal("echo: first\n", sock:read_call(H.waiter(deadline), 100, "\n"))
    H.send(sock, "bye\n")
    assert.are.equal("echo: bye\n", sock:read_call(H.waiter(deadline), 100, "\n"))
    assert.are.equal("", (H.read_until_close(sock, 5)))
    sock:close()
  end)

  it("delimits an HTTP/1.0 body of unknown length by closing", function()
    local sock = H.connect(srv)
    H.send(sock, "GET /stream10 HTTP/1.0\r\n\r\n")
    local r = H.read_response(sock)
    assert.are.equal("close", r.header("connection"))
    assert.is_nil(r.header("content-length"))
    assert.is_nil(r.header("transfer-encoding"))
    assert.are.equal("part one, part two", r.body)
    sock:close()
  end)
end)
