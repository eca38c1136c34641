-- generate_handler's arguments and options, and the exported helpers. The handler runs in
-- this process on an accepted socket: the client's request is sent (and its side closed)
-- first, then the handler serves it and returns once the client's EOF is seen.
local mio = require "moonbridge_io"
local http = require "moonbridge_http"

-- Runs `connect_handler` on one connection carrying `request`; returns what the client
-- received and the handler's results (ok, value or error).
local function serve_inline(connect_handler, request)
  local l = assert(mio.tcplisten("127.0.0.1", 0))
  local c = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
  local s = assert(l:accept())
  l:close()
  assert(c:flush(request))
  assert(c:finish())
  local ok, result = pcall(connect_handler, s)
  pcall(s.close, s) -- usually closed by the handler already
  local received = assert(c:read())
  c:close()
  return received, ok, result
end

local function hello(request)
  request:send_status("200 OK")
  request:send_data("hello")
  return true
end

local GET = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"

describe("moonbridge_http.generate_handler", function()
  it("accepts (callback, options) and (options, callback)", function()
    for _, h in ipairs({ http.generate_handler(hello), http.generate_handler(hello, {}),
      http.generate_handler({}, hello) }) do
      local out, ok, survive = serve_inline(h, GET)
      assert.is_true(ok)
      assert.is_true(survive)
      assert.matches("^HTTP/1%.1 200 OK\r\n", out)
      assert.matches("\r\n\r\nhello$", out)
    end
    assert.has_error(function() http.generate_handler({}) end,
      "bad argument #1 to 'generate_handler' (function expected)")
  end)

  it("returns false from the connect handler when the callback does not return true", function()
    local h = http.generate_handler(function(request)
      request:send_status("204 No Content")
    end)
    local out, ok, survive = serve_inline(h, GET .. GET)
    assert.is_true(ok)
    assert.is_false(survive)
    local _, n = out:gsub("HTTP/1%.1 204 No Content", "")
    assert.are.equal(2, n) -- the connection was still served to its end
  end)

  it("rejects invalid options with messages naming them", function()
    local cases = {
      { { request_body_size_limit = -1 }, 'Option "request_body_size_limit" is expected to be a non-negative integer' },
      { { body_size_limit = 1.5 }, 'Option "body_size_limit" is expected to be a non-negative integer' },
      { { chunk_size = "big" }, 'Option "chunk_size" is expected to be a non-negative integer' },
      { { idle_timeout = "x" }, 'Option "idle_timeout" is expected to be a non-negative number or false' },
      { { stall_timeout = -2 }, 'Option "stall_timeout" is expected to be a non-negative number or false' },
      { { static_headers = 5 }, 'Option "static_headers" must be a string or a table' },
      { { static_headers = { "No colon" } }, 'Option "static_headers": header line without a colon: "No colon"' },
      { { static_headers = { { "Bad Name", "x" } } }, 'Option "static_headers": invalid header name "Bad Name"' },
      { { static_headers = { ["X-A"] = "a\nb" } }, 'Option "static_headers": invalid value of header "X-A"' },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(http.generate_handler, case[1], hello)
      assert.is_false(ok)
      assert.are.equal(case[2], err:gsub("^[^:]*:%d+: ", ""))
    end
  end)

  it("sends static headers given in every accepted form", function()
    local forms = {
      "Server: static\r\nX-Two: 2",
      { "Server: static", "X-Two: 2" },
      { { "Server", "static" }, { "X-Two", 2 } },
      { Server = "static", ["X-Two"] = "2" },
    }
    for _, form in ipairs(forms) do
      local out = serve_inline(http.generate_handler({ static_headers = form }, hello), GET)
      assert.matches("\r\nServer: static\r\n", out)
      assert.matches("\r\nX%-Two: 2\r\n", out)
      assert.matches("^HTTP/1%.1 200 OK\r\nDate: [^\r]+ GMT\r\n", out)
    end
  end)

  it("accepts both spellings of the size limits", function()
    for _, name in ipairs({ "request_body_size_limit", "body_size_limit" }) do
      local h = http.generate_handler({ [name] = 10 }, hello)
      local out = serve_inline(h, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n01234567890")
      assert.matches("^HTTP/1%.1 413 ", out)
      out = serve_inline(h, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
      assert.matches("^HTTP/1%.1 200 ", out)
    end
    for _, name in ipairs({ "request_header_size_limit", "header_size_limit" }) do
      local h = http.generate_handler({ [name] = 200 }, hello)
      local out = serve_inline(h, "GET / HTTP/1.1\r\nHost: a\r\nX: " .. string.rep("x", 200) .. "\r\n\r\n")
      assert.matches("^HTTP/1%.1 431 ", out)
      assert.matches("^HTTP/1%.1 200 ", (serve_inline(h, GET)))
    end
  end)

  it("cuts input chunks at maximum_input_chunk_size and gathers output up to minimum_output_chunk_size", function()
    local sizes = {}
    local h = http.generate_handler({ chunk_size = 3 }, function(request)
      request:stream_request_body_now(function(chunk) sizes[#sizes + 1] = #chunk end)
      request:send_status("200 OK")
      request:flush() -- chunked from here on
      request:send_data("a")
      request:send_data("b")
      request:send_data("cd")
      request:send_data("e")
      return true
    end)
    local out = serve_inline(h, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n12345678")
    assert.are.same({ 3, 3, 2 }, sizes)
    assert.matches("\r\n\r\n4\r\nabcd\r\n1\r\ne\r\n0\r\n\r\n$", out)
  end)

  it("exports encode_html, encode_uri and decode_uri", function()
    assert.are.equal("&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;", http.encode_html("<a href=\"x\">&'</a>"))
    assert.are.equal("a%20b%2Bc%2F%C3%A4-._~", http.encode_uri("a b+c/ä-._~"))
    assert.are.equal("a b+c/ä", http.decode_uri("a+b%2Bc%2f%C3%A4"))
    assert.are.equal("100%", http.decode_uri("100%"))
  end)
end)
