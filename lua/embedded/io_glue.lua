-- moonbridge_io glue: the waiting forms of every operation, written once over the
-- non-blocking Rust steps. Native code never yields (a C function cannot), so the
-- `_call` loops live here and `_yield` is `_call(coroutine.yield, ...)`.
local M, types = ...
local yield = coroutine.yield

local handle = types.handle
local read_try, drain_nb = handle._read_try, handle.drain_nb
local write_nb, flush_nb = handle.write_nb, handle.flush_nb
handle._read_try = nil

function handle:read_call(waitfunc, maxlen, terminator)
  local first = true
  while true do
    local data, status = read_try(self, maxlen, terminator)
    if data ~= false then return data, status end
    waitfunc(self, "r", first, M)
    first = false
  end
end

function handle:drain_call(waitfunc, maxlen, terminator)
  local total, first = 0, true
  while true do
    local count, status = drain_nb(self, maxlen, terminator)
    if count == nil then return nil, status end
    total = total + count
    if status ~= "block" then return total, status end
    if maxlen and maxlen >= 0 then maxlen = maxlen - count end
    waitfunc(self, "r", first, M)
    first = false
  end
end

-- write_nb/flush_nb return the bytes still pending (0 when done); keep sending until then.
local function write_loop(step, self, waitfunc, ...)
  local pending, err = step(self, ...)
  local first = true
  while pending ~= 0 do
    if pending == nil then return nil, err end
    waitfunc(self, "w", first, M)
    first = false
    pending, err = step(self)
  end
  return self
end

function handle:write_call(waitfunc, ...) return write_loop(write_nb, self, waitfunc, ...) end
function handle:flush_call(waitfunc, ...) return write_loop(flush_nb, self, waitfunc, ...) end

function handle:read_yield(...) return self:read_call(yield, ...) end
function handle:drain_yield(...) return self:drain_call(yield, ...) end
function handle:write_yield(...) return self:write_call(yield, ...) end
function handle:flush_yield(...) return self:flush_call(yield, ...) end

local child = types.child
if child then
  local wait_nb = child.wait_nb
  function child:wait_call(waitfunc)
    local first = true
    while true do
      local status, err = wait_nb(self)
      if status then return status end
      if status == nil then return nil, err end
      waitfunc(self, "r", first, M)
      first = false
    end
  end
  function child:wait_yield() return self:wait_call(yield) end
end

return M
