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

-- Runs `fn` and fails the spec if it takes longer than `seconds` (checked after the fact;
-- blocking calls inside specs carry their own poll timeouts).
function helper.within(seconds, fn)
  local start = os.clock()
  local t0 = os.time()
  local r = table.pack(fn())
  assert(os.time() - t0 <= seconds + 1, "took longer than " .. seconds .. " s")
  local _ = start
  return table.unpack(r, 1, r.n)
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

return helper
