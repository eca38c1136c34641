-- moonbridge_http options (listen.md §7): checks the table given to generate_handler and
-- returns the settings, with the connection options already built by `core.config`.
local core = ...

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local match, find, format, concat = string.match, string.find, string.format, table.concat
local new_config = core.config

local MAX_SIZE = 2 ^ 53

local function fail(fmt, ...)
  error(format(fmt, ...), 0)
end

local config = require("moonbridge_config")

-- the first of `names` given, at most 2^53
local function size_option(options, names, default)
  for _, name in ipairs(names) do
    local v = config.integer_option(options, name)
    if v ~= nil then return v < MAX_SIZE and v or MAX_SIZE end
  end
  return default
end

-- nil: the default; false: disabled (nil); else seconds >= 0
local function time_option(options, name, default)
  return config.time_option(options, name, default, nil)
end

local TOKEN = "^[%w!#$%%&'*+%-%.%^_`|~]+$"

local function header_line(lines, name, value)
  name, value = tostring(name), tostring(value)
  if not match(name, TOKEN) then
    fail('Option "static_headers": invalid header name "%s"', name)
  end
  if find(value, "[\0-\8\10-\31\127]") then
    fail('Option "static_headers": invalid value of header "%s"', name)
  end
  lines[#lines + 1] = name .. ": " .. match(value, "^[ \t]*(.-)[ \t]*$") .. "\r\n"
end

local function header_text(lines, text)
  local name, value = match(text, "^([^:]*):(.*)$")
  if not name then fail('Option "static_headers": header line without a colon: "%s"', text) end
  header_line(lines, name, value)
end

-- A string ("Server: x", several lines allowed), a list of such strings or of {key, value}
-- pairs, or a map {["X-Key"] = "value"}; rendered as CRLF-terminated lines.
local function static_headers(s)
  local lines = {}
  if s == nil or s == false then return "" end
  if type(s) == "string" then
    for line in string.gmatch(s, "[^\r\n]+") do header_text(lines, line) end
  elseif type(s) == "table" then
    local n = #s
    for i = 1, n do
      local item = s[i]
      if type(item) == "string" then
        header_text(lines, item)
      elseif type(item) == "table" and item[1] ~= nil and item[2] ~= nil then
        header_line(lines, item[1], item[2])
      else
        fail('Option "static_headers": entry %d is neither a string nor a {key, value} pair', i)
      end
    end
    for k, v in pairs(s) do
      if type(k) == "string" then
        if type(v) ~= "string" and type(v) ~= "number" then
          fail('Option "static_headers": the value of "%s" must be a string', k)
        end
        header_line(lines, k, v)
      elseif not (math.type(k) == "integer" and k >= 1 and k <= n) then
        fail('Option "static_headers": unexpected key %s', tostring(k))
      end
    end
  else
    fail('Option "static_headers" must be a string or a table')
  end
  return concat(lines)
end

-- Every option generate_handler knows (both spellings of the size limits).
local KNOWN = {
  "request_body_size_limit", "body_size_limit", "request_header_size_limit",
  "header_size_limit", "chunk_size", "maximum_input_chunk_size", "minimum_output_chunk_size",
  "static_headers", "idle_timeout", "stall_timeout", "request_header_timeout",
  "response_timeout", "drain_timeout", "busy_header_timeout",
  -- the original's hook for waiting on the socket: accepted so that applications written
  -- for it start, and not called (this module waits by itself, in the same way)
  "poll_function",
}
local is_known = {}
for _, name in ipairs(KNOWN) do is_known[name] = true end

-- The known option a misspelt key resembles (the same rule as listen{}'s).
local closest = config.closest

local function check_keys(options)
  for key in pairs(options) do
    if not is_known[key] then
      local text = tostring(key)
      local near = type(key) == "string" and closest(key, KNOWN)
      if near then fail('Unknown option "%s" (did you mean "%s"?)', text, near) end
      fail('Unknown option "%s"', text)
    end
  end
end

local function build_config(options)
  check_keys(options)
  if options.poll_function ~= nil and type(options.poll_function) ~= "function" then
    fail('Option "poll_function" must be a function')
  end
  local chunk = size_option(options, { "chunk_size" }, nil)
  local o = {
    body_limit = size_option(options, { "request_body_size_limit", "body_size_limit" }, 64 * 1024 * 1024),
    header_limit = size_option(options, { "request_header_size_limit", "header_size_limit" }, 1024 * 1024),
    input_chunk = size_option(options, { "maximum_input_chunk_size" }, chunk or 16384),
    output_chunk = size_option(options, { "minimum_output_chunk_size" }, chunk or 1024),
    idle = time_option(options, "idle_timeout", 65),
    stall = time_option(options, "stall_timeout", 60),
    header = time_option(options, "request_header_timeout", 120),
    busy_header = time_option(options, "busy_header_timeout", 2),
    response = time_option(options, "response_timeout", 3600),
    drain = time_option(options, "drain_timeout", 2),
    static = static_headers(options.static_headers),
  }
  if o.response == 0 then o.response = nil end
  o.cfg = new_config(o)
  return o
end

return build_config
