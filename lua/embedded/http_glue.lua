-- moonbridge_http glue: generate_handler, the request loop of a connection, the request's
-- lazily computed fields, and the body-streaming methods (http_options.lua checks the options). Everything that
-- looks at bytes is Rust (`core`); this file builds tables and calls the application's
-- callbacks, which native code never does.
local M, core, build_config = ...

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local rawget, rawset, setmetatable = rawget, rawset, setmetatable
local xpcall, traceback, error, pcall = xpcall, debug.traceback, error, pcall
local stderr = io.stderr
local lower, match, format = string.lower, string.match, string.format
local concat = table.concat

local new_connection = core.connection
local setup, begin = core.setup, core.begin
local read_chunk, read_all = core.read_chunk, core.read_all
local post_kind, post_next, form_pairs = core.post_kind, core.post_next, core.form_pairs
-- `conn:done`'s `go_on` (src/lua/http/request.rs): the timer is stopped between requests,
-- or runs on
local GO_ON_UNARMED, GO_ON_RUNNING = core.GO_ON_UNARMED, core.GO_ON_RUNNING

---------------------------------------------------------------------------------------------
-- Request objects: plain tables; methods and lazy fields come through `index`.

local methods = {}
for name, f in pairs(core.request_methods) do methods[name] = f end

local lazy = {}

local function index(self, key)
  local m = methods[key]
  if m ~= nil then return m end
  local f = lazy[key]
  if f ~= nil then return f(self, key) end
  return nil
end

-- Tables keyed by lowercase header names; other spellings are found through __index, and
-- a missing name gives `default()`.
local function case_insensitive(default)
  return {
    __index = function(t, key)
      if type(key) ~= "string" then return nil end
      local v = rawget(t, lower(key))
      if v == nil and default then return default() end
      return v
    end,
  }
end
local list_mt = case_insensitive(function() return {} end)
local string_mt = case_insensitive(function() return "" end)
local value_mt = case_insensitive(nil)
local flag_mt = case_insensitive(function() return false end)
local flags_mt = case_insensitive(function() return setmetatable({}, flag_mt) end)

-- name -> {values}: a missing name gives an empty list
local params_list_mt = { __index = function() return {} end }

function lazy.headers(self)
  local t = setmetatable(core.headers(self), list_mt)
  rawset(self, "headers", t)
  return t
end

local function csv_items(lines)
  local items = {}
  for _, line in ipairs(lines) do
    for item in string.gmatch(line, "[^,]+") do
      item = match(item, "^[ \t]*(.-)[ \t]*$")
      if item ~= "" then items[#items + 1] = item end
    end
  end
  return items
end

-- A header table derived from `headers`, built whole on first access.
local function derived(build, mt)
  return function(self, key)
    local t = {}
    for name, lines in pairs(self.headers) do t[name] = build(lines) end
    setmetatable(t, mt)
    rawset(self, key, t)
    return t
  end
end

lazy.headers_csv_table = derived(csv_items, list_mt)
lazy.headers_csv_string = derived(function(lines) return concat(lines, ", ") end, string_mt)
lazy.headers_value = derived(function(lines)
  if #lines == 1 then return lines[1] end
  return false -- the header was sent more than once
end, value_mt)
lazy.headers_flags = derived(function(lines)
  local flags = setmetatable({}, flag_mt)
  for _, item in ipairs(csv_items(lines)) do flags[lower(item)] = true end
  return flags
end, flags_mt)

function lazy.host(self)
  return self.headers_value.host
end

-- Records one parameter: `list` maps a name to all its values, `first` to the first one.
local function add(list, first, name, value)
  local values = rawget(list, name)
  if values then
    values[#values + 1] = value
  else
    rawset(list, name, { value })
    first[name] = value
  end
end

-- {name1, value1, name2, value2, ...} -> name -> {values}, name -> first value
local function params(flat)
  local list, first = setmetatable({}, params_list_mt), {}
  for i = 1, #flat, 2 do
    add(list, first, flat[i], flat[i + 1])
  end
  return list, first
end

local function get_params(self)
  local list, first = params(core.query_pairs(self))
  rawset(self, "get_params_list", list)
  rawset(self, "get_params", first)
  return list, first
end
function lazy.get_params(self) local _, first = get_params(self); return first end
function lazy.get_params_list(self) return (get_params(self)) end

function lazy.cookies(self)
  local t = core.cookies(self)
  rawset(self, "cookies", t)
  return t
end

lazy.fresh = core.fresh
lazy.faulty = core.faulty

---------------------------------------------------------------------------------------------
-- The request body: stream handlers, consume_input, body and the POST tables.

local streams = setmetatable({}, { __mode = "k" }) -- request -> registered handlers
-- Entries of `streams` the request loop has not removed yet: while there are none, it
-- skips looking its request up (a miss in a weak table costs a metatable look-up). The
-- entry of a request that failed is left to the collector and stays counted, which only
-- brings the look-up back.
local unfed = 0

local function check_function(f, n, fname)
  if type(f) ~= "function" then
    error(format("bad argument #%d to '%s' (function expected, got %s)", n, fname, type(f)), 3)
  end
end

local function stream_state(self)
  setup(self) -- raises once it is too late
  local st = streams[self]
  if not st then
    st = { fields = {}, patterns = {} }
    streams[self] = st
    unfed = unfed + 1
  end
  return st
end

function methods:stream_post_param(field_name, callback)
  check_function(callback, 2, "stream_post_param")
  stream_state(self).fields[field_name] = callback
end

function methods:stream_post_params(pattern, callback)
  if type(pattern) ~= "string" then
    error("bad argument #1 to 'stream_post_params' (string expected, got " .. type(pattern) .. ")", 2)
  end
  check_function(callback, 2, "stream_post_params")
  local patterns = stream_state(self).patterns
  patterns[#patterns + 1] = { pattern, callback }
end

function methods:stream_request_body(callback)
  check_function(callback, 1, "stream_request_body")
  stream_state(self).body = callback
end

local function streamer_for(st, name)
  if not st or name == nil then return nil end
  local callback = st.fields[name]
  if callback then return callback end
  for _, rule in ipairs(st.patterns) do
    if match(name, rule[1]) then return rule[2] end
  end
  return nil
end

-- multipart/form-data: parts are streamed to their handler (first call with the metadata
-- as 2nd and 3rd argument, an empty chunk if the part is empty, then the end without
-- arguments), collected into the POST tables, or skipped when they have no name.
local function read_multipart(self, st)
  local list, first = setmetatable({}, params_list_mt), {}
  local mlist, mfirst = setmetatable({}, params_list_mt), {}
  local mode, callback, meta, started = "skip", nil, nil, false
  while true do
    local event, a, b, c = post_next(self, mode)
    if event == nil then
      break
    elseif event == "part" then
      meta = { field_name = a, file_name = b, content_type = c }
      callback, started = streamer_for(st, a), false
      mode = callback and "stream" or (a and "collect" or "skip")
    elseif event == "data" then
      if started then
        callback(a)
      else
        started = true
        callback(a, meta, meta)
      end
    elseif event == "value" then
      add(list, first, meta.field_name, a)
      add(mlist, mfirst, meta.field_name, meta)
    elseif callback then -- "end" of a streamed part
      if not started then callback("", meta, meta) end
      callback()
      callback = nil
    end
  end
  rawset(self, "post_params_list", list)
  rawset(self, "post_params", first)
  rawset(self, "post_metadata_list", mlist)
  rawset(self, "post_metadata", mfirst)
end

local function read_post(self, st)
  local kind = post_kind(self) -- raises 415 for an unknown media type
  if kind == "multipart" then return read_multipart(self, st) end
  local flat = {}
  if kind == "urlencoded" then
    local body = read_all(self)
    rawset(self, "body", body) -- as the original: the raw form stays readable
    flat = form_pairs(body)
    if st then -- fields with a stream handler go to it, in order
      local kept = {}
      for i = 1, #flat, 2 do
        local name, value = flat[i], flat[i + 1]
        local callback = streamer_for(st, name)
        if callback then
          local meta = { field_name = name }
          callback(value, meta, meta)
          callback()
        else
          kept[#kept + 1] = name
          kept[#kept + 1] = value
        end
      end
      flat = kept
    end
  end
  local list, first = params(flat)
  rawset(self, "post_params_list", list)
  rawset(self, "post_params", first)
end

function methods:consume_input()
  if not begin(self) then return end -- already done (or monologue)
  local st = streams[self]
  local callback = st and st.body
  if callback then
    while true do
      local chunk = read_chunk(self)
      if chunk == nil then break end
      callback(chunk)
    end
    callback()
  else
    read_post(self, st)
  end
end

function methods:stream_request_body_now(callback)
  check_function(callback, 1, "stream_request_body_now")
  methods.stream_request_body(self, function(chunk)
    if chunk ~= nil then callback(chunk) end
  end)
  methods.consume_input(self)
end

function lazy.body(self)
  setup(self)
  begin(self)
  local body = read_all(self)
  rawset(self, "body", body)
  return body
end

local function post_field(self, key)
  methods.consume_input(self)
  return rawget(self, key)
end
lazy.post_params = post_field
lazy.post_params_list = post_field
lazy.post_metadata = post_field
lazy.post_metadata_list = post_field

---------------------------------------------------------------------------------------------
-- generate_handler and the request loop of a connection.


-- The message handler of the application's calls: the error value as text (through
-- `tostring`, so tables with `__tostring` read as they mean) with the traceback from where
-- it was raised, and the value itself, to tell the client's faults (see below) apart.
local function on_error(err)
  local text = err
  if type(text) ~= "string" then
    local ok, s = pcall(tostring, err)
    text = ok and type(s) == "string" and s or "(error object is a " .. type(err) .. " value)"
  end
  -- (without the frame of the loop that runs the requests, right above its `xpcall`: the
  -- server's log shows the application's frames down to that `xpcall`)
  local trace = traceback(text, 2):gsub(
    "\n%s*moonbridge_http/glue:%d+: in [^\n]*(\n%s*%[C%]: in function 'xpcall')", "%1", 1)
  return { err = err, trace = trace }
end

-- A client's fault found while the handler read the body (413, 415, 400, 408; answered,
-- the connection closed) or sent the response (the client went away or stopped reading;
-- the connection reset): when it ends the handler it is logged as one line, and the
-- worker serves on.
local function log_client_fault(request, fault)
  local path = rawget(request, "path")
  local target = path and "/" .. path .. (rawget(request, "query") or "") or "*"
  local what = match(fault, "^Error while reading request body: (.*)$")
  local doing = "reading the body of"
  if not what then
    what = match(fault, "^Could not send data to client: (.*)$") or fault
    doing = "sending the response to"
  end
  stderr:write(format('Client error while %s HTTP request "%s %s": %s\n', doing,
    tostring(rawget(request, "method")), target, what))
end

-- `timeout` of this project's server (`require "moonbridge"`), if it runs the application.
local function driver_timeout()
  local mb = package.loaded.moonbridge
  return type(mb) == "table" and mb.timeout or nil
end

-- `timeout` of the server (a global in the launcher, or the moonbridge module's)
local function server_timeout()
  local f = rawget(_G, "timeout")
  if type(f) == "function" then return f end
  return driver_timeout()
end

-- __index of requests that are not current: the socket from the connection, else the
-- methods and lazy fields
local request_socket = core.request_socket
local function stale_index(self, key)
  if key == "socket" then return request_socket(self) end
  return index(self, key)
end

-- The two methods of a connection called for every request, taken from the first
-- connection's (shared, fixed) metatable, are called as plain functions: a method call on
-- a userdata looks its name up through the metatable every time.
local conn_next_request, conn_done

-- A connection ended (after conn:release, which gave its last request the stale
-- metatable): the context forgets it.
local function retire_context(ctx)
  ctx.current = nil
  ctx.cache.socket = false
end

function M.generate_handler(a, b)
  local callback, options = a, b
  if type(callback) ~= "function" then callback, options = b, a end
  if type(callback) ~= "function" then
    error("bad argument #1 to 'generate_handler' (function expected)", 2)
  end
  if options == nil then options = {} end
  if type(options) ~= "table" then
    error("bad argument #2 to 'generate_handler' (table of options expected)", 2)
  end
  local ok, o = pcall(build_config, options)
  if not ok then error(o, 2) end
  local cfg, response_timeout = o.cfg, o.response
  -- The response timer is re-armed at most once a second (`conn` says when). It may keep
  -- running while the next request is awaited only if that wait cannot outlast it.
  local disarm_between = not (o.idle and o.header and response_timeout
    and response_timeout > o.idle + o.header + 5)
  -- `conn_done`'s `go_on` while the timer is armed: none when it must be stopped between
  -- requests (the loop does that itself)
  local go_on_armed = not disarm_between and GO_ON_RUNNING or nil

  -- The current request of a connection finds `socket` and the methods in a table of
  -- its context (methods added on first use), a plain table look-up; only lazy fields need
  -- a function, which works on `ctx.current`. A context outlives its connection: when the
  -- connection ends, its last request gets the connection's stale metatable, and the next
  -- connection of this worker takes the context over with the methods already in it.
  -- Each connection in progress has its own (a concurrent pool runs several at once).
  local idle_contexts = {}
  local function new_context()
    -- (`current` and `running`: a request or nothing; `armed`, `survive`: see `serve`)
    local ctx = { current = nil, running = false, armed = false, survive = true }
    -- The `nil` entries only size the table (a constructor reserves a slot for each), so
    -- that the methods a handler uses are added without growing it.
    local cache = setmetatable({ socket = false, _1 = nil, _2 = nil, _3 = nil, _4 = nil,
      _5 = nil, _6 = nil, _7 = nil }, { __index = function(t, key)
      local m = methods[key]
      if m ~= nil then
        rawset(t, key, m)
        return m
      end
      return index(ctx.current, key) -- a lazy field (or nothing)
    end })
    ctx.cache = cache
    -- `false` holds slot [1], which core.connection sets to the connection, so that
    -- setting it does not grow the table
    ctx.mt = { false, __index = cache, __name = "moonbridge_http request" }
    return ctx
  end

  -- The requests of a connection run in one protected call (one per request cost about
  -- 500 instructions): a failed request ends its connection anyway. What the handler needs
  -- to know after a failure is in the context (a closure per connection would cost more
  -- than the call saves): `running`, the request while its handler (or the feeding of its
  -- unfed stream handlers) runs, else false while the loop's own calls run, whose errors
  -- are passed on as they are; `armed`, whether the response timer is; `survive`, false
  -- once a handler did not return true.
  local function serve(ctx, conn, timeout)
    local request, rearm -- (the next request, when `conn_done` returned it)
    while true do
      if not request then
        if ctx.armed and disarm_between then
          timeout(0)
          ctx.armed = false
        end
        request, rearm = conn_next_request(conn, not ctx.armed)
        if not request then return nil end
      end
      ctx.current = request
      if rearm and timeout then
        timeout(response_timeout)
        ctx.armed = true
      end
      ctx.running = request
      local result = callback(request)
      -- what the original did when the handler returned: consume the input for stream
      -- handlers that were registered but not yet fed (`conn:done` finishes the response)
      if unfed > 0 and streams[request] then
        methods.consume_input(request)
        streams[request] = nil
        unfed = unfed - 1
      end
      ctx.running = false
      local armed = ctx.armed
      -- With `go_on` (none while an armed timer must be stopped between requests),
      -- `conn_done` returns the next request itself, or `true, true` when the running
      -- timer is due for re-arming first; without, `true, rearm` (or `false`).
      local again, refresh = conn_done(conn, request, not armed and GO_ON_UNARMED or go_on_armed)
      if again == nil then return request, { err = refresh, trace = refresh } end
      if result ~= true then ctx.survive = false end
      if not again then return nil end
      if again == true then
        if refresh and armed and not disarm_between then timeout(response_timeout) end
        request = nil
      else
        request, rearm = again, refresh
      end
    end
  end

  local function handler(socket)
    local ctx = idle_contexts[#idle_contexts]
    if ctx then
      idle_contexts[#idle_contexts] = nil
    else
      ctx = new_context()
    end
    ctx.cache.socket = socket
    local mt = ctx.mt
    -- Requests that are not current any more (and the last one, once the connection
    -- ended) get `stale_mt`, whose __index sees the request itself.
    local stale_mt = { false, __name = "moonbridge_http request", __index = stale_index }
    local conn = new_connection(cfg, socket, mt, stale_mt)
    if not conn_done then conn_next_request, conn_done = conn.next_request, conn.done end
    local timeout = response_timeout and server_timeout()
    local armed = false
    -- In a classic worker of this server that runs this handler itself, the timer is
    -- parked when a connection ends (cleared, but left running: src/server/timer.rs), and
    -- one armed for this response_timeout less than a second ago serves the next
    -- connection as it would serve a next request.
    local parks = timeout and not disarm_between and timeout == driver_timeout()
    if timeout then armed = conn:adopt_timer(response_timeout, parks) end
    ctx.running, ctx.armed, ctx.survive = false, armed, true
    local ok, failed, result = xpcall(serve, on_error, ctx, conn, timeout)
    armed = ctx.armed
    if not ok then
      if not ctx.running then error(failed.err, 0) end -- (not the application's)
      failed, result = ctx.running, failed
    end
    if failed then
      local fault = conn:client_fault()
      if fault ~= nil and result.err == fault then
        log_client_fault(failed, fault) -- already answered, the connection is closed
      else
        conn:abort() -- 500 if nothing was sent yet, else reset
        conn:release()
        retire_context(ctx) -- (not reused: left to the collector)
        if armed then timeout(0) end
        error(result.trace, 0)
      end
    end
    local survive = ctx.survive
    if armed and not (parks and conn:park_timer()) then timeout(0) end
    conn:release() -- kept requests now behave as finished ones
    retire_context(ctx)
    idle_contexts[#idle_contexts + 1] = ctx
    return survive
  end
  return core.timer_handler(handler)
end

return M
