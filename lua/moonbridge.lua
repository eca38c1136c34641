-- The Moonbridge driver: listen{}, timeout() and run().
--
--   local moonbridge = require "moonbridge"
--   moonbridge.listen{ {proto = "tcp", host = "127.0.0.1", port = 8080}, connect = handler }
--   moonbridge.run()
--
-- The launcher (`moonbridge app.lua`) installs `listen` and `timeout` as globals and calls
-- run() after loading the application. The process model lives in Rust (moonbridge_core,
-- from the same shared object as moonbridge_io): run() returns in the master when the
-- server stops, and each forked worker continues here in `worker_main`, which never returns.
local mio = require "moonbridge_io"
local config = require "moonbridge_config"

local core
do
  local path = assert(package.searchpath("moonbridge_io", package.cpath))
  core = assert(package.loadlib(path, "luaopen_moonbridge_core"))()
end

local M = {}
M.core = core -- process primitives, for the launcher

-- The scheduler of a concurrent worker while it runs (nil elsewhere): the handler being
-- resumed and each handler's deadline (timeout() is per handler there; see concurrent_jobs).
local sched, sched_timer, set_deadline
local pools = {}
local running = false -- true once run() started (listen is then refused)

M.EXIT_OK, M.EXIT_USAGE, M.EXIT_LOCKED, M.EXIT_STARTUP, M.EXIT_INTERNAL = 0, 1, 2, 3, 4

--- Registers a pool of workers for the given listeners. Errors name the option or listener
--- and point at the caller's line; unknown options that resemble no known one are logged
--- and ignored (frameworks keep their own settings in the same table).
function M.listen(args)
  if running then
    error("listen{...} must not be called after the server started (from a handler)", 2)
  end
  local ok, pool = pcall(config.pool, args)
  if not ok then error(pool, 2) end
  pools[#pools + 1] = pool
  for _, key in ipairs(pool.ignored) do
    core.log(string.format("listen{} #%d: ignoring unknown option %s", #pools, key))
  end
end

--- timeout(), timeout(seconds), timeout(seconds, func, ...): see docs/server.md.
function M.timeout(seconds, func, ...)
  -- the common call (the HTTP module's, twice per connection) in a classic worker: set the
  -- process timer at once (a NaN or negative interval takes the checks below)
  if func == nil and sched == nil and type(seconds) == "number" and seconds >= 0 then
    return core.timer_set(seconds)
  end
  -- in a handler of a concurrent pool the timer is the handler's own (see concurrent_jobs)
  local own = sched and sched.current
  if seconds == nil and func == nil then
    if own then return sched_timer(own) end
    return core.timer_remaining()
  end
  if seconds == false then seconds = 0 end
  if type(seconds) ~= "number" or seconds < 0 or seconds ~= seconds then
    error("bad argument #1 to 'timeout' (interval in seconds expected)", 2)
  end
  if func == nil then
    if own then return sched_timer(own, seconds) end
    return core.timer_set(seconds)
  end
  if type(func) ~= "function" then
    error("bad argument #2 to 'timeout' (function expected, got " .. type(func) .. ")", 2)
  end
  local restore
  if own then
    local outer = sched.deadline[own]
    sched_timer(own, seconds, outer)
    restore = function() set_deadline(own, outer) end
  else
    local outer, started = core.timer_sub(seconds)
    restore = function() core.timer_restore(outer, started) end
  end
  local results = table.pack(pcall(func, ...))
  restore()
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

--- Pools registered so far (validated; for the launcher's -t mode).
function M.pools()
  return pools
end

local function listener_error(p, i, err)
  return string.format("Could not initialize listener #%d of pool #%d: %s", i, p, err)
end

--- What opening the listeners needs, checked without opening anything (the launcher's -t):
--- hosts and ports resolve, a local socket's directory exists. Returns true or nil, message.
function M.check()
  for p, pool in ipairs(pools) do
    for i, l in ipairs(pool.listeners) do
      local ok, err = true, nil
      if l.proto == "tcp" then
        ok, err = core.resolve(l.host, l.port)
      elseif l.proto == "local" then
        local dir = l.path:match("^(.*)/") or "."
        if dir == "" then dir = "/" end
        -- "dir/." opens only if dir is a directory we may search
        local f = io.open(dir .. "/.", "r")
        if f then f:close() else ok, err = nil, string.format('No directory "%s"', dir) end
      end
      if not ok then return nil, listener_error(p, i, err) end
    end
  end
  return true
end

-- The handler's traceback, without the frames of this driver and the launcher below it.
local function traceback(err)
  local tb = debug.traceback(tostring(err), 2)
  return (tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end

local function report_error(what, err)
  io.stderr:write(string.format('Error in "%s" function: %s\n', what, tostring(err)))
end

-- What a handler gets for a job.
local function job_arg(kind, arg)
  if kind == "interval" then return { interval = arg } end
  if kind == "main" then return { main = arg } end
  return arg
end

-- Instructions between deadline checks of a handler that has a timeout and runs without
-- waiting (a count hook: only such handlers pay for it).
local HOOK_COUNT = 10000

-- Sets a handler's deadline (nil: none): the loop ends the handler at it while it waits,
-- a count hook while it runs.
set_deadline = function(co, d)
  sched.deadline[co] = d
  if d then
    debug.sethook(co, function()
      if mio.timeref() >= d and sched and sched.deadline[co] == d then
        sched.expired[co] = true
        error("timeout", 0)
      end
    end, "", HOOK_COUNT)
  else
    debug.sethook(co)
  end
end

-- A handler's timer: returns the seconds it had left; with `seconds` (0: none) it is set
-- anew, to the sooner of that and `outer` when given (a sub-timer).
sched_timer = function(co, seconds, outer)
  local now = mio.timeref()
  local deadline = sched.deadline[co]
  local remaining = deadline and math.max(deadline - now, 0) or 0
  if seconds then
    local mine = seconds > 0 and now + seconds or nil
    set_deadline(co, mine and outer and math.min(mine, outer) or mine or outer)
  end
  return remaining
end

-- A concurrent worker's jobs (listen{ concurrency = N }): each handler runs in a coroutine
-- of its own; its blocking moonbridge_io and moonbridge_http calls yield
-- (WAIT, fd, "r"|"w"|"rw", seconds or nil) here and are resumed when the descriptor is
-- ready or the time has passed. An error or a timeout ends its handler only (its
-- connection is reset and the error logged); a handler not returning true makes the worker
-- take no more jobs and end once the others are done.
local ACCEPT_BATCH = 8
local function concurrent_jobs(pool, worker)
  local handlers, WAIT = core.coop_handlers()
  local job_of = {}               -- coroutine -> { conn, timed }
  local readers, writers = {}, {} -- fd -> the coroutine waiting for it
  -- A waiting coroutine's wait, without a table per wait for the common single
  -- descriptor: wait_fd[co] is the descriptor (wait_mode[co] "r", "w" or "rw") or the
  -- list {fd1, mode1, ...}; wait_until[co] the wait's own wake-up time or false.
  local wait_fd, wait_mode, wait_until = {}, {}, {}
  -- No wait's wake-up time or handler deadline comes before this: expire() looks at the
  -- waits only then, not on every turn of the loop (thousands of idle connections).
  local next_due = math.huge
  local later = {}                -- coroutines that yielded something else: resumed next turn
  local running, stop, leaving = 0, false, false
  local ready = {}
  local idle_since = mio.timeref()
  sched = { deadline = {}, expired = {} }

  local function ended(co, ok, err_or_result)
    local job = job_of[co]
    local timed_out = sched.expired[co]
    job_of[co], handlers[co] = nil, nil
    sched.deadline[co], sched.expired[co] = nil, nil
    running = running - 1
    if running == 0 then idle_since = mio.timeref() end
    if ok then
      worker:done(true, job.conn) -- closes the connection if still open
      if err_or_result ~= true then stop = true end
    else
      worker:done(false, job.conn) -- resets it
      if timed_out then
        io.stderr:write('Timeout in "connect" function: its connection was reset\n')
      else
        report_error("connect", err_or_result)
      end
    end
    worker:handler_done(job.timed)
  end

  local function watch(co, fd, mode)
    worker:watch(fd)
    if mode ~= "w" then readers[fd] = co end
    if mode ~= "r" then writers[fd] = co end
  end

  local function resume(co)
    sched.current = co
    local ok, a, b, c, d = coroutine.resume(co)
    sched.current = nil
    if coroutine.status(co) == "dead" then
      if ok then ended(co, a, b) else ended(co, false, a) end
      return
    end
    local fd, mode, left
    if a == WAIT then
      fd, mode, left = b, c, d
    else
      -- a `_yield` method called in the handler's own coroutine: (handle, "r"|"w", ...)
      fd, mode = core.fd_of(a), b
    end
    if mode == "list" and type(fd) == "table" then
      for i = 1, #fd, 2 do
        local f, m = fd[i], fd[i + 1]
        if math.type(f) ~= "integer" or (m ~= "r" and m ~= "w" and m ~= "rw") then
          later[#later + 1] = co -- not a wait we can serve: go on at the next turn
          return
        end
      end
      for i = 1, #fd, 2 do watch(co, fd[i], fd[i + 1]) end
    elseif math.type(fd) == "integer" and (mode == "r" or mode == "w" or mode == "rw") then
      watch(co, fd, mode)
    else
      later[#later + 1] = co
      return
    end
    wait_fd[co], wait_mode[co] = fd, mode
    local due = sched.deadline[co]
    if left then
      local t = mio.timeref() + left
      wait_until[co] = t
      if not due or t < due then due = t end
    else
      wait_until[co] = false
    end
    if due and due < next_due then next_due = due end
  end

  -- Takes a waiting handler off its descriptors.
  local function unwait(co)
    local fd = wait_fd[co]
    if wait_mode[co] == "list" then
      for i = 1, #fd, 2 do
        local f = fd[i]
        if readers[f] == co then readers[f] = nil end
        if writers[f] == co then writers[f] = nil end
      end
    else
      if readers[fd] == co then readers[fd] = nil end
      if writers[fd] == co then writers[fd] = nil end
    end
    wait_fd[co], wait_mode[co], wait_until[co] = nil, nil, nil
  end

  -- Ends the waiting handlers whose timeout() passed and wakes those whose wait's own time
  -- is up; returns the time to the next such moment (nil: none).
  local function expire()
    local now = mio.timeref()
    if now < next_due then
      return next_due < math.huge and next_due - now or nil
    end
    local due, ends = {}, {}
    next_due = math.huge
    for co, t in pairs(wait_until) do
      local d = sched.deadline[co]
      if d and d <= now then
        ends[#ends + 1] = co
      elseif t and t <= now then
        due[#due + 1] = co
      else
        if d and d < next_due then next_due = d end
        if t and t < next_due then next_due = t end
      end
    end
    for _, co in ipairs(ends) do
      unwait(co)
      sched.expired[co] = true
      if coroutine.close then coroutine.close(co) end
      ended(co, false, "timeout")
    end
    for _, co in ipairs(due) do
      unwait(co)
      resume(co)
    end
    if #due > 0 then return 0 end
    now = mio.timeref()
    return next_due < math.huge and math.max(next_due - now, 0) or nil
  end

  -- Resumes every waiting handler once (after a SIGTERM, which some waits end on).
  local function wake_all()
    local all = {}
    for co in pairs(wait_fd) do all[#all + 1] = co end
    for _, co in ipairs(all) do
      unwait(co)
      resume(co)
    end
  end

  local function start(kind, arg)
    local conn = job_arg(kind, arg)
    local co = coroutine.create(function()
      local ok, result = xpcall(pool.connect, traceback, conn)
      -- a connection left open is closed here, in the handler's coroutine, so that what is
      -- still buffered goes out while the loop serves the others
      if ok and kind == "connection" then core.close_handle(conn) end
      return ok, result
    end)
    handlers[co] = true
    job_of[co] = { conn = conn, timed = kind ~= "connection" }
    running = running + 1
    resume(co)
  end

  while true do
    -- At most ACCEPT_BATCH new jobs a turn, then the ready descriptors: under a steady
    -- stream of new connections a handler that waits (for its request, say) would
    -- otherwise wait for as long as the stream lasts (p99 of 150-200 ms with wrk -c32 and
    -- Connection: close). The listeners stay in the poll set, so the next turn comes at once.
    for _ = 1, ACCEPT_BATCH do
      if stop then break end
      local kind, arg = worker:try_next()
      if not kind then
        if arg ~= "block" then
          stop = true
          if arg == "terminated" then wake_all() end
        end
        break
      end
      start(kind, arg)
    end
    if stop and not leaving then
      leaving = true
      worker:leaving()
    end
    local timeout = expire()
    if stop and running == 0 then break end
    if #later > 0 then
      timeout = 0
    elseif running == 0 and pool.idle_timeout > 0 then
      local idle_left = math.max(0, idle_since + pool.idle_timeout - mio.timeref())
      timeout = math.min(timeout or math.huge, idle_left)
    end
    local n = worker:wait_ready(timeout, not stop, ready)
    for i = 1, n do
      local fd = ready[i]
      local r, w = readers[fd], writers[fd]
      if r and wait_fd[r] then unwait(r); resume(r) end
      if w and w ~= r and wait_fd[w] then unwait(w); resume(w) end
    end
    local again = later
    later = {}
    for _, co in ipairs(again) do resume(co) end
    if running == 0 and not stop and pool.idle_timeout > 0
      and mio.timeref() - idle_since >= pool.idle_timeout then
      stop = true
    end
  end
  sched = nil
end

-- A classic worker's jobs, one at a time. Returns the exit code when a handler failed
-- (the worker ends at once), else nil once it takes no more jobs.
local function classic_jobs(pool, worker)
  -- a handler of moonbridge_http may leave the timer parked between connections
  core.timer_parking(pool.connect)
  -- (plain calls: a method call on the worker looks its name up every time)
  local next_job, job_done = worker.next, worker.done
  while true do
    local kind, arg = next_job(worker)
    if not kind then break end
    local conn = arg
    if kind ~= "connection" then conn = job_arg(kind, arg) end
    local ok, result = xpcall(pool.connect, traceback, conn)
    core.timer_set(0)
    if not ok then
      core.set_memory_limit(0)
      job_done(worker, false, conn) -- resets the connection if still open
      report_error("connect", result)
      return 1
    end
    job_done(worker, true, conn) -- closes the connection if still open
    if result ~= true then break end
  end
  core.timer_parking(nil) -- (disarms a parked timer before `finish`)
  worker:leaving()
end

-- The life of a worker: prepare, jobs until told to stop, finish. Returns the exit code.
local function worker_loop(pool, worker)
  -- Small Lua objects from a cache instead of malloc (about a seventh of a short
  -- connection's CPU time was malloc's); MOONBRIDGE_SMALL_BLOCKS=0 leaves malloc alone.
  if os.getenv("MOONBRIDGE_SMALL_BLOCKS") ~= "0" then core.use_small_blocks() end
  -- Lua 5.4's interpreter collects in generational mode, but a major collection that frees
  -- little (loading an application is one) leaves it in a stand-in incremental mode that it
  -- may never leave in a request loop: the heap of a worker then grew to several times its
  -- live size. A new start in the mode in force (an application's own choice stays).
  if _VERSION == "Lua 5.4" and collectgarbage("generational") == "incremental" then
    collectgarbage("incremental")
  end
  -- Lua 5.3 has only the incremental collector. Every connection leaves objects with
  -- finalizers (its socket and HTTP connection), which outlive a cycle once unreachable,
  -- so the default pause (a cycle when the heap has doubled) let a worker serving short
  -- connections grow to 17 MiB (9 MiB with a cycle after 100 % growth, at the same
  -- throughput). A pause the application set itself stays.
  if _VERSION == "Lua 5.3" then
    local pause = collectgarbage("setpause", 100)
    if pause ~= 200 then collectgarbage("setpause", pause) end
  end
  if pool.memory_limit > 0 then core.set_memory_limit(pool.memory_limit) end
  if pool.prepare then
    local ok, err = xpcall(pool.prepare, traceback)
    core.timer_set(0)
    if not ok then
      core.set_memory_limit(0) -- room to report the error
      report_error("prepare", err)
      return 1
    end
  end
  mio.catch_sigterm()
  worker:ready()
  if pool.concurrency > 1 then
    concurrent_jobs(pool, worker)
  else
    local code = classic_jobs(pool, worker)
    if code then return code end
  end
  if pool.finish then
    local ok, err = xpcall(pool.finish, traceback)
    core.timer_set(0)
    if not ok then
      core.set_memory_limit(0)
      report_error("finish", err)
      return 1
    end
  end
  return 0
end

-- Runs in a forked worker; never returns.
local function worker_main(pool, worker, title)
  core.set_title(title)
  local ok, code = xpcall(worker_loop, traceback, pool, worker)
  if not ok then
    core.set_memory_limit(0)
    io.stderr:write("Worker failure: ", tostring(code), "\n")
    code = 1
  end
  io.stdout:flush()
  io.stderr:flush()
  core.exit(code)
end

-- Opens the listeners of one pool; returns the spec for core.serve and the opened ones.
local function open_pool(p, pool, opened)
  local spec = {
    pre_fork = pool.pre_fork, min_fork = pool.min_fork, max_fork = pool.max_fork,
    fork_delay = pool.fork_delay, fork_error_delay = pool.fork_error_delay,
    exit_delay = pool.exit_delay, idle_timeout = pool.idle_timeout,
    concurrency = pool.concurrency, listeners = {}, timed = {},
  }
  for i, l in ipairs(pool.listeners) do
    local listener, err
    if l.proto == "tcp" then
      core.log(string.format('Adding TCP listener on interface "%s", port %s', l.host, l.port))
      listener, err = mio.tcplisten(l.host, l.port)
      if listener and l.defer_accept > 0 then
        local ok, derr = core.defer_accept(listener, l.defer_accept)
        if not ok then listener:close(); listener, err = nil, derr end
      end
      if listener and l.port == 0 then
        core.log(string.format("Listening on port %d", listener.local_tcpport))
      end
    elseif l.proto == "local" then
      core.log(string.format('Adding local socket listener for path "%s"', l.path))
      listener, err = mio.locallisten(l.path, l.mode)
    elseif l.proto == "interval" then
      core.log(string.format('Adding interval listener "%s" (every %g s%s)', l.name, l.delay,
        l.strict and ", strict" or ""))
      spec.timed[#spec.timed + 1] = { kind = "interval", delay = l.delay, strict = l.strict,
        name = l.name }
    else
      core.log(string.format('Adding main listener "%s"', l.name))
      spec.timed[#spec.timed + 1] = { kind = "main", name = l.name }
    end
    if l.proto == "tcp" or l.proto == "local" then
      if not listener then
        error(listener_error(p, i, err), 0)
      end
      opened[#opened + 1] = { listener = listener, path = l.path }
      spec.listeners[#spec.listeners + 1] = listener
    end
  end
  return spec
end

-- Closes what start-up opened (nothing stays half-started) and raises `err`.
local function abandon(opened, err)
  for _, o in ipairs(opened) do
    pcall(o.listener.close, o.listener)
    if o.path then os.remove(o.path) end
  end
  error(err, 0)
end

--- Opens every listener and serves until the server stops; returns the master's exit code
--- (0 after a shutdown, 4 after an internal error). Never returns in workers. Errors before
--- anything was forked are raised as strings (the launcher exits with code 3).
--- Options: `name`, the application's name in the process titles (`moonbridge: master
--- NAME`, `moonbridge: worker pool #N NAME`; default: the script, arg[0]); `ready`, a
--- function called once the listeners are open and before the first fork, returning true or
--- nil and a message (the launcher goes to the background there).
function M.run(opts)
  opts = opts or {}
  if running then error("moonbridge.run() called twice", 2) end
  if #pools == 0 then
    error("No listener registered; call listen{...} first", 2)
  end
  running = true
  local specs, opened = {}, {}
  for p, pool in ipairs(pools) do
    local ok, spec = pcall(open_pool, p, pool, opened)
    if not ok then abandon(opened, spec) end
    specs[p] = spec
  end
  if opts.ready then
    local ok, err = opts.ready()
    if not ok then abandon(opened, err) end
  end
  local name = opts.name or (arg and arg[0]) or "lua"
  core.set_title("moonbridge: master " .. name)
  core.timer_clear() -- a timeout() armed while loading would kill the master
  collectgarbage("collect")
  io.stdout:flush()
  io.stderr:flush()
  local role, index, worker = core.serve(specs)
  if role == "worker" then
    worker_main(pools[index], worker, string.format("moonbridge: worker pool #%d %s", index, name))
  elseif role == nil then
    core.log(index)
    return M.EXIT_INTERNAL
  end
  return index -- the master's exit code
end

return M
