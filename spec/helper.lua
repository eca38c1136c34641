-- Shared helpers for the busted specs. Every spec bounds its own time; processes a spec
-- starts are stopped by PID.
local helper = {}

helper.lua = arg and arg[-1] or "lua"  -- the interpreter busted runs on
helper.version = _VERSION:gsub("%D", "")

-- A fresh temporary path (not created).
function helper.tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. (suffix or "")
end

-- Number of open descriptors of this process (LuaFileSystem, which busted depends on, lists
-- the directory without starting a process whose pipe would be counted too).
function helper.fd_count()
  local lfs = require "lfs"
  local n = 0
  for name in lfs.dir("/proc/self/fd") do
    if name:match("^%d+$") then n = n + 1 end
  end
  return n - 1 -- the directory stream itself
end

-- Deterministic pseudo-random bytes (xorshift), so both ends of a transfer can check it.
function helper.pattern(len, seed)
  local parts = {}
  local x = seed or 0x2545F491
  local chunk = {}
  for i = 1, len do
    x = x ~ (x << 13) & 0xffffffff
    x = x ~ (x >> 17)
    x = x ~ (x << 5) & 0xffffffff
    chunk[#chunk + 1] = string.char(x & 0xff)
    if #chunk == 4096 then parts[#parts + 1] = table.concat(chunk); chunk = {} end
  end
  parts[#parts + 1] = table.concat(chunk)
  return table.concat(parts)
end

-- Runs Lua `code` in a child interpreter with `...` as its arguments; returns the pipe of its
-- standard output (closing it waits for the child) and the script file to remove.
function helper.spawn(code, ...)
  local file = helper.tmpname(".lua")
  local f = assert(io.open(file, "w"))
  f:write(code)
  f:close()
  local args = {}
  for i, a in ipairs { ... } do args[i] = "'" .. tostring(a) .. "'" end
  return assert(io.popen(helper.lua .. " " .. file .. " " .. table.concat(args, " "))), file
end

return helper
