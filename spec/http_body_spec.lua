-- Request bodies in moonbridge_http through a real server: urlencoded and multipart POST
-- parameters, streamed uploads (a 5 MiB file arrives in chunks of at most
-- maximum_input_chunk_size while it is still being sent), raw body streaming, and errors.
local H = require "spec.http_helper"

-- a spec that fails half-way leaves its server running: stop it when the file ends
teardown(H.cleanup_all)

-- Deterministic upload content: numbered 1000-byte records full of CR, LF and dashes, so a
-- boundary look-alike appears everywhere and misordered chunks would show.
local CONTENT_SOURCE = [[
local function content(records)
  local filler = string.rep("\r\n--\r-\n-", 124) .. "\r\n"
  local parts = {}
  for i = 1, records do parts[i] = string.format("%07d:", i) .. filler end
  return table.concat(parts)
end
]]
local content = assert(load(CONTENT_SOURCE .. "return content"))()
local BIG_RECORDS = 5243 -- 5 243 000 bytes, a little over 5 MiB

local APP = H.serializer_source() .. CONTENT_SOURCE .. [[
options = { request_body_size_limit = 16 * 1024 * 1024, maximum_input_chunk_size = 4096 }
local expected = content(]] .. BIG_RECORDS .. [[)
local routes = {}

local function reply(request, value)
  request:send_status("200 OK")
  request:send_data(ser(value))
end

-- copies of the POST tables (pairs must work on them)
local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

function routes.params(request)
  reply(request, {
    post_params = copy(request.post_params),
    post_params_list = copy(request.post_params_list),
    post_metadata = copy(request.post_metadata),
    post_metadata_list = copy(request.post_metadata_list),
    missing_list = copy(request.post_params_list.zzz),
    body = rawget(request, "body"),
  })
end

-- The 5 MiB file is compared chunk by chunk with what the client sends.
function routes.upload(request)
  local info = { chunks = 0, max = 0, bytes = 0, same = true, calls = {} }
  local pos = 1
  request:stream_post_param("file", function(chunk, meta, meta3)
    if meta then
      info.meta, info.meta_third_is_same = copy(meta), meta == meta3
    end
    if chunk == nil then info.calls[#info.calls + 1] = "end" return end
    info.chunks = info.chunks + 1
    if info.chunks == 1 then mark("first chunk") end
    info.max = math.max(info.max, #chunk)
    info.bytes = info.bytes + #chunk
    if chunk ~= expected:sub(pos, pos + #chunk - 1) then info.same = false end
    pos = pos + #chunk
  end)
  request:consume_input()
  info.calls = #info.calls == 1 and info.calls[1] or info.calls
  info.other = copy(request.post_params)
  info.file_in_params = request.post_params.file ~= nil
  reply(request, info)
end

function routes.patterns(request)
  local log = {}
  request:stream_post_params("^file_%d+$", function(chunk, meta, meta3)
    if chunk == nil then
      log[#log + 1] = "end"
    elseif meta then
      log[#log + 1] = string.format("start %s %s %s %q", meta.field_name, tostring(meta.file_name),
        tostring(meta.content_type), chunk)
      assert(meta == meta3)
    else
      log[#log + 1] = string.format("data %q", chunk)
    end
  end)
  -- not consumed here: the module does it after the handler returns, so log the result
  -- in a second request
  routes.last_log = log
  request:send_status("200 OK")
  request:send_data("registered")
end

function routes.urlencoded_stream(request)
  local calls = {}
  request:stream_post_param("big", function(chunk, meta, meta3)
    calls[#calls + 1] = chunk == nil and "end" or
      string.format("%q %s %s", chunk, meta and meta.field_name or "-", tostring(meta == meta3))
  end)
  reply(request, { calls = calls, params = copy(request.post_params) })
end

function routes.log(request)
  reply(request, routes.last_log)
end

function routes.raw(request)
  local sizes, parts = {}, {}
  local ended = false
  request:stream_request_body(function(chunk)
    if chunk == nil then ended = true return end
    sizes[#sizes + 1] = #chunk
    parts[#parts + 1] = chunk
  end)
  assert(request.fresh == false)
  request:consume_input()
  local max = 0
  for _, n in ipairs(sizes) do max = math.max(max, n) end
  reply(request, { body = table.concat(parts), max = max, ended = ended,
    post_params = request.post_params == nil and "nil" or "set" })
end

function routes.now(request)
  local parts, calls = {}, 0
  request:stream_request_body_now(function(chunk)
    calls = calls + 1
    parts[#parts + 1] = assert(chunk)
  end)
  local ok, err = pcall(function() return request.body end)
  reply(request, { body = table.concat(parts), body_after = ok and "ok" or err })
end

function routes.body(request)
  local body = request.body
  local ok, err = pcall(request.stream_request_body, request, function() end)
  reply(request, { body = body, again = request.body, stream_after = ok and "ok" or err,
    post_params = request.post_params == nil and "nil" or "set" })
end

function routes.unknown_type(request)
  local ok, err = pcall(function() return request.post_params end)
  mark("unknown type: " .. tostring(err))
  error(err, 0)
end

handler = function(request)
  local route = routes[request.path]
  route(request)
  return true
end
]]

local function multipart(boundary, parts)
  local out = {}
  for _, p in ipairs(parts) do
    out[#out + 1] = "--" .. boundary .. "\r\n"
    local disposition = 'form-data; name="' .. p.name .. '"'
    if p.file_name then disposition = disposition .. '; filename="' .. p.file_name .. '"' end
    out[#out + 1] = "Content-Disposition: " .. disposition .. "\r\n"
    if p.content_type then out[#out + 1] = "Content-Type: " .. p.content_type .. "\r\n" end
    out[#out + 1] = "\r\n" .. p.value .. "\r\n"
  end
  out[#out + 1] = "--" .. boundary .. "--\r\n"
  return table.concat(out)
end

local function post(target, content_type, body, extra)
  return string.format("POST %s HTTP/1.1\r\nHost: a\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s",
    target, content_type, #body, extra or "", body)
end

describe("moonbridge_http request bodies", function()
  local srv
  setup(function() srv = H.start(APP) end)
  teardown(function()
    if srv then H.stop_clean(srv) end
  end)

  it("parses urlencoded POST parameters", function()
    local body = "a=1&b=x+y%21&a=2&empty=&flag"
    local r = H.exchange(srv, post("/params", "application/x-www-form-urlencoded; charset=UTF-8", body))
    local f = H.decode(r.body)
    assert.are.same({ a = "1", b = "x y!", empty = "" }, f.post_params)
    assert.are.same({ a = { "1", "2" }, b = { "x y!" }, empty = { "" } }, f.post_params_list)
    assert.are.same({}, f.missing_list)
    assert.is_nil(f.post_metadata)
    assert.are.equal(body, f.body)
  end)

  it("gives empty POST tables for a request without a body", function()
    local f = H.decode(H.exchange(srv, H.get("/params")).body)
    assert.are.same({}, f.post_params)
    assert.are.same({}, f.post_params_list)
  end)

  it("parses multipart POST parameters with file metadata", function()
    local body = multipart("XyZ", {
      { name = "title", value = "Hello" },
      { name = "upload", file_name = "a.txt", content_type = "text/plain", value = "file\r\ncontent" },
      { name = "upload", file_name = "", content_type = "application/octet-stream", value = "" },
      { name = "title", value = "second" },
    })
    local r = H.exchange(srv, post("/params", 'multipart/form-data; boundary="XyZ"', body))
    local f = H.decode(r.body)
    assert.are.same({ title = "Hello", upload = "file\r\ncontent" }, f.post_params)
    assert.are.same({ title = { "Hello", "second" }, upload = { "file\r\ncontent", "" } }, f.post_params_list)
    assert.are.same({ field_name = "upload", file_name = "a.txt", content_type = "text/plain" },
      f.post_metadata.upload)
    assert.are.same({ field_name = "title" }, f.post_metadata.title)
    assert.are.equal(2, #f.post_metadata_list.upload)
    assert.are.equal("", f.post_metadata_list.upload[2].file_name)
  end)

  it("streams a 5 MiB upload in chunks while it is still arriving", function()
    local big = content(BIG_RECORDS)
    local boundary = "----moonbridge-boundary-7MA4YWxkTrZu0gW"
    local body = multipart(boundary, {
      { name = "before", value = "b" },
      { name = "file", file_name = "big.bin", content_type = "application/octet-stream", value = big },
      { name = "after", value = "a" },
    })
    local head = string.format("POST /upload HTTP/1.1\r\nHost: a\r\n" ..
      "Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n", boundary, #body)
    H.clear_calls(srv)
    local sock = H.connect(srv)
    local half = 1024 * 1024
    H.send(sock, head, body:sub(1, half))
    -- the handler sees the first chunk before the rest has been sent
    assert.truthy(H.wait_for(10, function() return H.calls(srv)[1] == "first chunk" end))
    H.send(sock, body:sub(half + 1))
    local r = H.read_response(sock, { timeout = 60 })
    sock:close()
    local f = H.decode(r.body)
    assert.are.equal(#big, f.bytes)
    assert.is_true(f.same)
    assert.is_true(f.max <= 4096)
    assert.is_true(f.chunks >= #big / 4096)
    assert.are.same({ field_name = "file", file_name = "big.bin", content_type = "application/octet-stream" },
      f.meta)
    assert.is_true(f.meta_third_is_same)
    assert.are.equal("end", f.calls)
    assert.are.same({ before = "b", after = "a" }, f.other)
    assert.is_false(f.file_in_params)
  end)

  it("streams a chunked multipart upload too", function()
    local big = content(300)
    local boundary = "b0undary"
    local body = multipart(boundary, { { name = "file", file_name = "x", value = big } })
    local chunks, pos = {}, 1
    while pos <= #body do
      local n = math.min(7777, #body - pos + 1)
      chunks[#chunks + 1] = string.format("%x\r\n%s\r\n", n, body:sub(pos, pos + n - 1))
      pos = pos + n
    end
    local r = H.exchange(srv, "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" ..
      "Content-Type: multipart/form-data; boundary=" .. boundary .. "\r\n\r\n" ..
      table.concat(chunks) .. "0\r\n\r\n", { timeout = 30 })
    local f = H.decode(r.body)
    assert.are.equal(#big, f.bytes)
    assert.is_true(f.same)
  end)

  it("calls pattern stream handlers after the handler returned, empty files included", function()
    local body = multipart("B", {
      { name = "file_1", file_name = "one.txt", content_type = "text/plain", value = "first file" },
      { name = "plain", value = "p" },
      { name = "file_2", file_name = "empty.txt", value = "" },
    })
    local sock = H.connect(srv)
    H.send(sock, post("/patterns", "multipart/form-data; boundary=B", body))
    assert.are.equal("registered", H.read_response(sock).body)
    H.send(sock, H.get("/log"))
    local log = H.decode(H.read_response(sock).body)
    sock:close()
    assert.are.same({
      'start file_1 one.txt text/plain "first file"', "end",
      'start file_2 empty.txt nil ""', "end",
    }, log)
  end)

  it("feeds stream handlers left unfed on every request of a keep-alive connection", function()
    local function upload(name, value)
      return post("/patterns", "multipart/form-data; boundary=B",
        multipart("B", { { name = name, file_name = "f.txt", value = value } }))
    end
    local sock = H.connect(srv)
    local function log_after(request)
      H.send(sock, request)
      H.read_response(sock)
      H.send(sock, H.get("/log"))
      return H.decode(H.read_response(sock).body)
    end
    assert.are.same({ 'start file_1 f.txt nil "one"', "end" }, log_after(upload("file_1", "one")))
    -- a request without stream handlers in between, then one that consumed its own
    local same = { 'start file_1 f.txt nil "one"', "end" }
    assert.are.same(same, log_after(H.get("/log")))
    assert.are.same(same, log_after(post("/urlencoded_stream",
      "application/x-www-form-urlencoded", "big=x")))
    assert.are.same({ 'start file_2 f.txt nil "two"', "end" }, log_after(upload("file_2", "two")))
    assert.are.same({}, log_after(upload("other", "three"))) -- no handler matches
    sock:close()
  end)

  it("hands urlencoded fields with a stream handler to it", function()
    local body = "small=1&big=a+b&big=&other=2"
    local f = H.decode(H.exchange(srv, post("/urlencoded_stream", "application/x-www-form-urlencoded", body)).body)
    assert.are.same({ small = "1", other = "2" }, f.params)
    assert.are.same({ '"a b" big true', "end", '"" big true', "end" }, f.calls)
  end)

  it("streams the raw body with stream_request_body and stream_request_body_now", function()
    local data = content(40) -- 40 000 bytes
    local f = H.decode(H.exchange(srv, post("/raw", "text/plain", data)).body)
    assert.are.equal(data, f.body)
    assert.is_true(f.max <= 4096)
    assert.is_true(f.ended)
    assert.are.equal("nil", f.post_params)

    f = H.decode(H.exchange(srv, "POST /now HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n").body)
    assert.are.equal("abcdefg", f.body)
    assert.are.equal("Cannot setup request body streamer at this stage anymore", f.body_after)
  end)

  it("reads the whole body once with request.body", function()
    local f = H.decode(H.exchange(srv, post("/body", "application/json", '{"a": 1}')).body)
    assert.are.equal('{"a": 1}', f.body)
    assert.are.equal('{"a": 1}', f.again)
    assert.are.equal("Cannot setup request body streamer at this stage anymore", f.stream_after)
    assert.are.equal("nil", f.post_params)
  end)

  it("answers POST parameters of an unknown media type with 415", function()
    H.clear_calls(srv)
    local r = H.exchange(srv, post("/unknown_type", "application/json", "{}"))
    assert.are.equal(415, r.status)
    assert.are.equal("close", r.header("connection"))
    assert.truthy(H.wait_for(5, function()
      local calls = H.calls(srv)
      return calls[1] and calls[1]:find("415 Unsupported Media Type", 1, true)
    end))
  end)

  it("answers a malformed multipart body with 400", function()
    local r = H.exchange(srv, post("/params", "multipart/form-data; boundary=B",
      "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end"))
    assert.are.equal(400, r.status)
    r = H.exchange(srv, post("/params", "multipart/form-data", "--B--"))
    assert.are.equal(400, r.status)
  end)
end)
