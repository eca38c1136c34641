-- listen{...} validation: turns the tables an application passes to listen{} into checked
-- pool descriptions with every default filled in (docs/server.md lists them). Pure Lua, no I/O, so the
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

-- Edit distance with transpositions ("froks" -> "forks" is one step), case-insensitive.
local function distance(a, b)
  a, b = a:lower(), b:lower()
  local prev2, prev, cur = {}, {}, {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        cur[j] = math.min(cur[j], prev2[j - 2] + 1)
      end
    end
    prev2, prev = prev, cur
  end
  return prev[#b]
end

--- The known name closest to `name` (at most two edits away, and not a mere rewrite of a
--- short name), or nil.
function M.closest(name, known)
  local best, best_d
  for _, k in ipairs(known) do
    local d = distance(name, k)
    if d <= 2 and d < #k and (not best_d or d < best_d) then best, best_d = k, d end
  end
  return best
end

--- Checks the keys of `t` against `known` (a list of names); indexes of t's sequence
--- (1..seq_len) are allowed too. A key close to a known name is a mistake and raises
--- `Unknown option "x"[ where] (did you mean "y"?)`; so does a key that is not a string. Any
--- other unknown key is appended to `ignored` as `"x"[ where]`: applications and frameworks
--- keep their own settings in the tables they pass to listen{} (WebMCP passes its
--- `http_options` and `max_requests_per_fork` that way), and the original ignored them.
--- `home(key)` names the table where a key given in the wrong one belongs: such a key raises
--- `Option "x"[ where] belongs in <that table>`.
--- Keys are taken in sorted order, so the outcome is the same on every run.
function M.check_keys(t, known, where, seq_len, ignored, home)
  local allowed, unknown = {}, {}
  for _, k in ipairs(known) do allowed[k] = true end
  for k in pairs(t) do
    local index = math.type(k) == "integer" and k >= 1 and k <= (seq_len or 0)
    if not index and not allowed[k] then unknown[#unknown + 1] = k end
  end
  table.sort(unknown, function(x, y) return tostring(x) < tostring(y) end)
  where = where and " " .. where or ""
  for _, k in ipairs(unknown) do
    if type(k) ~= "string" then
      fail("Unexpected key %s%s (listeners go in the array part, options are named)",
        tostring(k), where)
    end
    local belongs = home and home(k)
    if belongs then fail('Option "%s"%s belongs in %s', k, where, belongs) end
    local near = M.closest(k, known)
    if near then fail('Unknown option "%s"%s (did you mean "%s"?)', k, where, near) end
    ignored[#ignored + 1] = string.format('"%s"%s', k, where)
  end
end

local POOL_OPTIONS = { "pre_fork", "min_fork", "max_fork", "fork_delay", "fork_error_delay",
  "exit_delay", "idle_timeout", "idle_time", "memory_limit", "concurrency", "prepare",
  "connect", "finish" }
local MAX_CONCURRENCY = 100000
local LISTENER_FIELDS = {
  tcp = { "proto", "host", "port", "defer_accept" },
  ["local"] = { "proto", "path", "mode" },
  interval = { "proto", "delay", "name", "strict" },
  main = { "proto", "name" },
}
local PROTO_ORDER = { "tcp", "local", "interval", "main" }

-- Where a key given in the wrong table belongs (for check_keys): a pool option inside a
-- listener, a listener field at the pool level, another kind's field in a listener.
local function home_of(k, proto)
  for _, o in ipairs(POOL_OPTIONS) do
    if o == k then return proto and "the listen{} table, not in a listener" end
  end
  local kinds = {}
  for _, other in ipairs(PROTO_ORDER) do
    for _, f in ipairs(LISTENER_FIELDS[other]) do
      if f == k and other ~= proto then kinds[#kinds + 1] = '"' .. other .. '"' end
    end
  end
  if #kinds == 0 then return nil end
  if not proto then return 'a listener table such as {proto="tcp", port=...}' end
  return "a listener with proto " .. table.concat(kinds, " or ")
end

--- Option readers shared with moonbridge_http's options (one rule, one message each).
--- `opts[name]` in seconds: nil gives `default`, false gives `off`, else a number >= 0 (and
--- at most `max` when given).
function M.time_option(opts, name, default, off, max)
  local v = opts[name]
  if v == nil then return default end
  if v == false then return off end
  if type(v) ~= "number" or v ~= v or v < 0 or (max and v > max) then
    if max then
      fail('Option "%s" is expected to be a non-negative number (at most %g seconds)', name, max)
    end
    fail('Option "%s" is expected to be a non-negative number or false', name)
  end
  return v
end

--- `opts[name]` as a non-negative integral number (nil when not given; infinity passes, for
--- the caller's bound).
function M.integer_option(opts, name)
  local v = opts[name]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v < 0 or v ~= math.floor(v) then
    fail('Option "%s" is expected to be a non-negative integer', name)
  end
  return v
end

-- listen{}'s times: false means 0, at most 1e8 seconds
local function time_option(opts, name, default)
  return M.time_option(opts, name, default, 0, MAX_TIME)
end

local function count_option(opts, name)
  local v = M.integer_option(opts, name)
  if v == nil then return nil end
  if v > MAX_COUNT then fail('Option "%s" is too large (at most %d)', name, MAX_COUNT) end
  return math.tointeger(v)
end

local function function_option(opts, name, required)
  local v = opts[name]
  if v == nil and not required then return nil end
  if type(v) ~= "function" then fail('Option "%s" must be a function', name) end
  return v
end

local function check_listener(i, l, ignored)
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
  M.check_keys(l, LISTENER_FIELDS[proto], string.format("in %s listener #%d", proto, i), 0,
    ignored, function(k) return home_of(k, proto) end)
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
    -- NEW: connections reach a worker only once their first bytes arrived (client speaks
    -- first, as in HTTP); true = after at most about a second without any, a number = that
    -- many seconds
    local defer = l.defer_accept
    if defer == true then defer = 1 end
    if defer == nil or defer == false then defer = 0 end
    if type(defer) ~= "number" or not (defer >= 0) or defer > 3600 then
      fail('Listener #%d: "defer_accept" must be a boolean or a number of seconds (0 to 3600)', i)
    end
    out.defer_accept = math.ceil(defer)
  elseif proto == "local" then
    local path = l.path
    if type(path) ~= "string" or path == "" then
      fail('No path specified; use listen{{proto="local", path=...}, ...} (listener #%d)', i)
    end
    if #path > 107 then fail("Listener #%d: path longer than 107 bytes", i) end
    out.path = path
    local mode = l.mode
    if mode ~= nil then
      -- octal text only: a number such as 660 would silently mean other bits
      if type(mode) ~= "string" or not mode:match("^0?[0-7][0-7][0-7]$") then
        fail('Listener #%d: "mode" must be a string of three octal digits, such as "660"', i)
      end
      out.mode = tonumber(mode, 8)
    end
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
  local listeners, ignored = {}, {}
  for i, l in ipairs(args) do
    if i > MAX_LISTENERS then fail("At most %d listeners per listen{} call", MAX_LISTENERS) end
    listeners[i] = check_listener(i, l, ignored)
  end
  M.check_keys(args, POOL_OPTIONS, nil, #listeners, ignored, home_of)
  if #listeners == 0 then
    fail('No listener given; use listen{{proto="tcp", host=..., port=...}, ..., connect=function(socket) ... end}')
  end
  local pool = {
    listeners = listeners,
    ignored = ignored, -- unknown option names, for the log
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
  -- `idle_time` is the manual's name, `idle_timeout` the one the original read
  if args.idle_time ~= nil and args.idle_timeout ~= nil then
    fail('Options "idle_timeout" and "idle_time" are the same; give one of them')
  end
  pool.idle_timeout = time_option(args, args.idle_time ~= nil and "idle_time" or "idle_timeout", 0)
  local mem = args.memory_limit
  if mem == nil or mem == false then
    mem = 0
  elseif math.type(mem) == nil or mem < 0 or mem ~= math.floor(mem) or mem > MAX_MEMORY then
    fail('Option "memory_limit" is expected to be a non-negative integer (bytes)')
  end
  pool.memory_limit = math.tointeger(mem)
  -- NEW: handlers one worker runs at once, each in its own coroutine (1: the classic pool)
  local conc = count_option(args, "concurrency")
  if conc and (conc < 1 or conc > MAX_CONCURRENCY) then
    fail('Option "concurrency" must be between 1 and %d', MAX_CONCURRENCY)
  end
  pool.concurrency = conc or 1
  return pool
end

return M
