-- Helpers for the moonbridge_http specs: start an HTTP application with the launcher, send
-- raw bytes over TCP, and read responses with deadlines (every wait is bounded).
local mio = require "moonbridge_io"
local S = require "spec.server_helper"

local H = {}

H.TIMEOUT = 10 -- seconds any single exchange may take

-- The application: `body` is Lua source that defines `handler(request)` and may set
-- `options`; $DIR is the server's temporary directory, $PORT its port. `mark(name)`
-- appends a line to $DIR/calls, so specs can tell whether (and how often) the handler ran.
local TEMPLATE = [[
local http = require "moonbridge_http"
local DIR = "$DIR"
local function mark(name)
  local f = assert(io.open(DIR .. "/calls", "a"))
  f:write(name, "\n")
  f:close()
end
local options = {}
local handler
%s
listen{
  { proto = "tcp", host = "127.0.0.1", port = $PORT, defer_accept = %s },
  pre_fork = 1, min_fork = %d, max_fork = %d, concurrency = %d,
  connect = http.generate_handler(options, handler),
}
]]

-- MOONBRIDGE_SPEC_CONCURRENCY=n runs every HTTP spec in concurrent pools of n handlers
-- per worker (scripts/test.sh does, as a layer of its own).
H.CONCURRENCY = tonumber(os.getenv("MOONBRIDGE_SPEC_CONCURRENCY")) or 1

-- start(body, {workers = n, max_workers = m, defer_accept = v}) -> server (see
-- spec/server_helper.lua)
function H.start(body, opts)
  opts = opts or {}
  local srv = S.start(string.format(TEMPLATE, body, tostring(opts.defer_accept or false),
    opts.workers or 2, opts.max_workers or 8, opts.concurrency or H.CONCURRENCY), opts)
  local probe = S.connect(srv, 10)
  assert(probe, "server did not accept connections:\n" .. S.log_text(srv))
  probe:close()
  return srv
end

-- (A SIGTERM that reached a just-forked worker before it reset the master's signal handlers
-- used to be lost; the master now blocks its signals across fork, so no pause is needed.)
H.stop = S.stop
H.stop_clean = S.stop_clean
H.log_text = S.log_text
H.cleanup = S.cleanup
H.cleanup_all = S.cleanup_all -- for a file-level teardown: stops what a failed spec left
H.children = S.children
H.wait_for = S.wait_for
H.sleep = S.sleep

-- Lines the handler marked so far.
function H.calls(srv)
  local text = S.read_file(srv.dir .. "/calls") or ""
  local list = {}
  for line in text:gmatch("[^\n]+") do list[#list + 1] = line end
  return list
end

function H.clear_calls(srv)
  os.remove(srv.dir .. "/calls")
end

-- A waitfunc for the _call methods that raises once `deadline` has passed.
local function waiter(deadline)
  return function(h, mode)
    local left = deadline - mio.timeref()
    local set = { [h] = true }
    if left <= 0 or not mio.poll(mode == "r" and set or nil, mode == "w" and set or nil, left) then
      error("timeout while waiting for the server", 0)
    end
  end
end
H.waiter = waiter

function H.connect(srv)
  return assert(mio.tcpconnect("127.0.0.1", srv.port))
end

function H.send(sock, ...)
  local deadline = mio.timeref() + H.TIMEOUT
  assert(sock:flush_call(waiter(deadline), ...))
end

local function read(sock, deadline, maxlen, term)
  local data, status = sock:read_call(waiter(deadline), maxlen, term)
  if data == nil then error("read error: " .. tostring(status), 0) end
  return data, status
end

-- Reads one response. Returns {status = 200, reason = "OK", headers = {lowercase name =
-- {values}}, body = "...", raw_head = "..."} or nil at EOF before any byte.
function H.read_response(sock, opts)
  opts = opts or {}
  local deadline = mio.timeref() + (opts.timeout or H.TIMEOUT)
  local line, status = read(sock, deadline, 65536, "\n")
  if line == "" and status == "eof" then return nil end
  local code, reason = line:match("^HTTP/1%.1 (%d%d%d) ?(.-)\r\n$")
  assert(code, "bad status line: " .. string.format("%q", line))
  local r = { status = tonumber(code), reason = reason, headers = {}, raw_head = line }
  while true do
    line = read(sock, deadline, 65536, "\n")
    r.raw_head = r.raw_head .. line
    if line == "\r\n" then break end
    local name, value = line:match("^([^:]+): (.-)\r\n$")
    assert(name, "bad header line: " .. string.format("%q", line))
    name = name:lower()
    r.headers[name] = r.headers[name] or {}
    table.insert(r.headers[name], value)
  end
  local function header(name) return r.headers[name] and r.headers[name][1] end
  r.header = header
  if opts.head or r.status < 200 or r.status == 204 or r.status == 304 then
    r.body = ""
  elseif header("transfer-encoding") == "chunked" then
    local parts = {}
    while true do
      local size = read(sock, deadline, 1024, "\n")
      local n = tonumber(size:match("^(%x+)\r\n$"), 16)
      assert(n, "bad chunk size line: " .. string.format("%q", size))
      if n == 0 then
        assert(read(sock, deadline, 2) == "\r\n", "bad end of chunked body")
        break
      end
      parts[#parts + 1] = read(sock, deadline, n)
      assert(read(sock, deadline, 2) == "\r\n", "bad chunk end")
    end
    r.body = table.concat(parts)
  elseif header("content-length") then
    local n = tonumber(header("content-length"))
    r.body = n > 0 and read(sock, deadline, n) or ""
  else
    r.body = read(sock, deadline) -- until the connection closes
  end
  return r
end

-- Reads until the server closes (or `timeout` passes): everything received, and whether
-- the connection ended with EOF ("eof") or a reset ("reset").
function H.read_until_close(sock, timeout)
  local deadline = mio.timeref() + (timeout or H.TIMEOUT)
  local parts = {}
  while true do
    local data, status = sock:read_nb()
    if data == nil then return table.concat(parts), "reset" end
    parts[#parts + 1] = data
    if status == "eof" then return table.concat(parts), "eof" end
    local left = deadline - mio.timeref()
    if left <= 0 then return table.concat(parts), "timeout" end
    mio.poll({ [sock] = true }, nil, left)
  end
end

-- Sends raw bytes on a new connection and reads one response. With `opts.keep` the socket
-- is returned too; otherwise it is closed (an open keep-alive connection holds a worker).
function H.exchange(srv, bytes, opts)
  local sock = H.connect(srv)
  H.send(sock, bytes)
  local r = H.read_response(sock, opts)
  if opts and opts.keep then return r, sock end
  sock:close()
  return r
end

-- A GET request for `target` with extra header lines (a string of "Name: value\r\n").
function H.get(target, extra, method)
  return string.format("%s %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", method or "GET", target,
    extra or "")
end

-- Serialises a Lua value as Lua source (tables sorted by key), for handlers to send back.
function H.serializer_source()
  return [[
local function ser(v, seen)
  local t = type(v)
  if t == "string" then return string.format("%q", v) end
  if t ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    if type(a) == type(b) then return a < b end
    return type(a) == "number"
  end)
  local out = {}
  for _, k in ipairs(keys) do
    out[#out + 1] = "[" .. ser(k) .. "]=" .. ser(v[k])
  end
  return "{" .. table.concat(out, ",") .. "}"
end
]]
end

-- Evaluates a body produced with `ser`.
function H.decode(text)
  return assert(load("return " .. text, "response", "t", {}))()
end

return H
