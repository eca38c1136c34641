-- listen{...} validation: turns the tables an application passes to listen{} into checked
-- pool descriptions with every default of listen.md §2 filled in. Pure Lua, no I/O, so the
-- launcher's -t mode and the specs can use it without starting anything.
local M = {}

local PROTOS = { tcp = true, ["local"] = true, interval = true, main = true }
local MAX_LISTENERS = 100
local MAX_TIME = 1e8
local MAX_COUNT = 1e6
local MAX_MEMORY = 2^53

local function fail(fmt, ...)
  error(string.format(fmt, ...), 0)
end

-- nil, false (= 0) or a number 0 <= n <= 1e8
local function time_option(opts, name, default)
  local v = opts[name]
  if v == nil then return default end
  if v == false then return 0 end
  if type(v) ~= "number" or v ~= v or v < 0 or v > MAX_TIME then
    fail('Option "%s" is expected to be a non-negative number (at most %g seconds)', name, MAX_TIME)
  end
  return v
end

local function count_option(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  if math.type(v) == nil or v ~= math.floor(v) or v < 0 then
    fail('Option "%s" is expected to be a non-negative integer', name)
  end
  if v > MAX_COUNT then fail('Option "%s" is too large (at most %d)', name, MAX_COUNT) end
  return math.tointeger(v)
end

local function function_option(opts, name, required)
  local v = opts[name]
  if v == nil and not required then return nil end
  if type(v) ~= "function" then fail('Option "%s" must be a function', name) end
  return v
end

local function check_listener(i, l)
  if type(l) ~= "table" then
    fail("Listener #%d must be a table, got %s", i, type(l))
  end
  local proto = l.proto
  if proto == nil then
    fail('Listener #%d has no "proto"; use listen{{proto="tcp", host=..., port=...}, ...}', i)
  end
  if type(proto) ~= "string" or not PROTOS[proto] then
    fail('Unknown protocol "%s" (listener #%d)', tostring(proto), i)
  end
  local out = { proto = proto }
  if proto == "tcp" then
    local host, port = l.host, l.port
    if host == nil then host = "::" end
    if type(host) ~= "string" or host == "" then
      fail('Listener #%d: "host" must be a non-empty string', i)
    end
    if port == nil then
      fail('No port specified; use listen{{proto="tcp", host=..., port=...}, ...} (listener #%d)', i)
    end
    if math.type(port) == "float" and port == math.floor(port) then port = math.tointeger(port) end
    if math.type(port) == "integer" then
      if port < 0 or port > 65535 then fail("Listener #%d: port %d out of range", i, port) end
    elseif type(port) ~= "string" or port == "" then
      fail('Listener #%d: "port" must be a number or a service name', i)
    end
    out.host, out.port = host, port
  elseif proto == "local" then
    local path = l.path
    if type(path) ~= "string" or path == "" then
      fail('No path specified; use listen{{proto="local", path=...}, ...} (listener #%d)', i)
    end
    if #path > 107 then fail("Listener #%d: path longer than 107 bytes", i) end
    out.path = path
  elseif proto == "interval" then
    local delay = l.delay
    if type(delay) ~= "number" or not (delay > 0) or delay > MAX_TIME then
      fail('Listener #%d: interval needs a "delay" in seconds greater than 0', i)
    end
    if l.name ~= nil and type(l.name) ~= "string" then
      fail('Listener #%d: "name" must be a string', i)
    end
    if l.strict ~= nil and type(l.strict) ~= "boolean" then
      fail('Listener #%d: "strict" must be a boolean', i)
    end
    out.delay, out.name, out.strict = delay, l.name or "", l.strict or false
  else -- main
    if l.name ~= nil and type(l.name) ~= "string" then
      fail('Listener #%d: "name" must be a string', i)
    end
    out.name = l.name or ""
  end
  return out
end

-- Validates one listen{} argument; returns the pool description or raises a string error.
function M.pool(args)
  if type(args) ~= "table" then
    fail("listen{...} expects a table, got %s", type(args))
  end
  local listeners = {}
  for i, l in ipairs(args) do
    if i > MAX_LISTENERS then fail("At most %d listeners per listen{} call", MAX_LISTENERS) end
    listeners[i] = check_listener(i, l)
  end
  if #listeners == 0 then
    fail('No listener given; use listen{{proto="tcp", host=..., port=...}, ..., connect=function(socket) ... end}')
  end
  local pool = {
    listeners = listeners,
    prepare = function_option(args, "prepare", false),
    connect = function_option(args, "connect", true),
    finish = function_option(args, "finish", false),
  }
  local pre = count_option(args, "pre_fork")
  local min = count_option(args, "min_fork")
  local max = count_option(args, "max_fork")
  if max and max < 1 then fail('Option "max_fork" must be at least 1') end
  pre = pre or 1
  -- defaults never contradict what was given: an explicit max_fork caps them
  min = min or math.min(math.max(pre, 2), max or math.huge)
  max = max or math.max(min, 16)
  if pre > max then fail('Option "pre_fork" (%d) must not exceed "max_fork" (%d)', pre, max) end
  if min > max then fail('Option "min_fork" (%d) must not exceed "max_fork" (%d)', min, max) end
  pool.pre_fork, pool.min_fork, pool.max_fork = pre, min, max
  pool.fork_delay = time_option(args, "fork_delay", 0.25)
  pool.fork_error_delay = math.max(time_option(args, "fork_error_delay", 2), pool.fork_delay)
  pool.exit_delay = time_option(args, "exit_delay", 60)
  pool.idle_timeout = time_option(args, "idle_timeout", 0)
  local mem = args.memory_limit
  if mem == nil or mem == false then
    mem = 0
  elseif math.type(mem) == nil or mem < 0 or mem ~= math.floor(mem) or mem > MAX_MEMORY then
    fail('Option "memory_limit" is expected to be a non-negative integer (bytes)')
  end
  pool.memory_limit = math.tointeger(mem)
  return pool
end

return M
