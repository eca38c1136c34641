-- The example applications run and answer as documented.
local S = require "spec.server_helper"
local H = require "spec.http_helper"

-- a spec that fails half-way leaves its server running: stop it when the file ends
teardown(H.cleanup_all)

-- Starts an example with its port replaced by a free one.
local function start_example(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  local n
  text, n = text:gsub('tonumber%(os%.getenv%("PORT"%)%) or 8080', "$PORT")
  assert(n == 1, "the example's port setting was not found")
  local srv = S.start(text)
  assert(S.connect(srv, 10), "example did not start:\n" .. S.log_text(srv)):close()
  return srv
end

describe("examples", function()
  it("helloworld.lua answers Hello World!", function()
    local srv = start_example("examples/helloworld.lua")
    local r = H.exchange(srv, H.get("/"))
    assert.are.equal(200, r.status)
    assert.are.equal("Hello World!\n", r.body)
    H.stop(srv)
    H.cleanup(srv)
  end)

  it("example_application.lua serves its page, forms and streamed uploads", function()
    local srv = start_example("examples/example_application.lua")
    local page = H.exchange(srv, H.get("/"))
    assert.are.equal(200, page.status)
    assert.are.equal("Moonbridge example application", page.header("server"))
    assert.matches('enctype="multipart/form%-data"', page.body)

    local greet = H.exchange(srv, H.get("/greet?name=%3Cme%3E", "Cookie: greetings=4\r\n"))
    assert.matches("Hello, &lt;me&gt;! This browser has been greeted 5 time", greet.body)
    assert.are.equal("greetings=5; Path=/; SameSite=Lax", greet.header("set-cookie"))

    local form = "message=hi%21&tag=urgent&tag=happy"
    local posted = H.exchange(srv, "POST /guestbook HTTP/1.1\r\nHost: a\r\n" ..
      "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #form .. "\r\n\r\n" .. form)
    assert.matches("<p>hi!</p><p>Tags: urgent, happy</p>", posted.body)

    local file = string.rep("0123456789", 100000)
    local body = "--BOUNDARY\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nnice\r\n" ..
      "--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"digits.txt\"\r\n" ..
      "Content-Type: text/plain\r\n\r\n" .. file .. "\r\n--BOUNDARY--\r\n"
    local upload = H.exchange(srv, "POST /upload HTTP/1.1\r\nHost: a\r\n" ..
      "Content-Type: multipart/form-data; boundary=BOUNDARY\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    assert.matches("<p>Comment: nice</p>", upload.body)
    assert.matches("<td>digits.txt</td><td>text/plain</td><td>1000000</td>", upload.body)

    assert.are.equal(404, H.exchange(srv, H.get("/missing")).status)
    assert.are.equal(405, H.exchange(srv, H.get("/", nil, "DELETE")).status)
    H.stop(srv)
    H.cleanup(srv)
  end)
end)
