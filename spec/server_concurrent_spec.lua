-- Concurrent pools (listen{ concurrency = N }): one worker runs many connect handlers at
-- once, each in its own coroutine; their blocking moonbridge_io calls wait by yielding to
-- the worker's loop. Real sockets; every pool here has a single worker (max_fork = 1), so
-- anything served concurrently was served by the same process.
local mio = require "moonbridge_io"
local H = require "spec.server_helper"

after_each(H.cleanup_all)

local function send(h, data)
  assert(h:write(data))
  assert(h:flush())
end

-- A single worker running up to `n` handlers; `body` is the connect function's body
-- (`s` is the socket).
local function start(n, body, extra)
  return H.start(string.format([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1, concurrency=%d, %s
  connect = function(s)
%s
  end }
]], n, extra or "", body))
end

-- A connect body that answers a line with the worker's pid and the line.
local ECHO_PID = [[
    local line = s:read(100, "\n")
    s:write(moonbridge_io.getpid(), " ", line)
    return true]]

-- A listen{} of one concurrent worker that answers HTTP with its pid; `before` runs first
-- in the request handler.
local function http_pid_app(n, before)
  return string.format([[
local http = require "moonbridge_http"
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1, concurrency=%d,
  connect = http.generate_handler(function(request)
    %s
    request:send_status("200 OK")
    request:send_data("pid ", moonbridge_io.getpid())
    return true
  end) }
]], n, before or "")
end

-- the number of keys of a table
local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("a concurrent pool", function()
  it("validates concurrency", function()
    for _, bad in ipairs { "0", "1.5", "'x'", "100001" } do
      local code, out = H.launch(
        "listen{ {proto='tcp', port=1}, concurrency=" .. bad .. ", connect=function() end }",
        { "-t" })
      assert.are_not.equal(0, code, bad)
      assert.matches('Option "concurrency"', out, 1, true)
    end
  end)

  it("interleaves handlers: reads complete in the opposite order of their start", function()
    local srv = start(8, ECHO_PID)
    local a = assert(H.connect(srv))
    local b = assert(H.connect(srv))
    send(a, "first")   -- incomplete: a's handler waits for the rest of its line
    send(b, "second\n")
    local rb = H.read_all(b, 5)
    send(a, " line\n")
    local ra = H.read_all(a, 5)
    a:close()
    b:close()
    local pb, lb = rb:match("^(%d+) (.*)$")
    local pa, la = ra:match("^(%d+) (.*)$")
    assert.are.equal("second\n", lb)
    assert.are.equal("first line\n", la)
    assert.are.equal(pa, pb, "one worker served both")
    H.stop_clean(srv)
  end)

  it("serves 200 clients while one handler waits for a slow backend", function()
    -- the backend is a second (classic) pool of the same server that answers once the
    -- spec creates the file `release` (so the wait does not depend on timing)
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1, concurrency=16,
  connect = function(s)
    local what = s:read(100, "\n")
    if what == "slow\n" then
      local backend = assert(moonbridge_io.tcpconnect("127.0.0.1", $PORT2))
      backend:write("go\n")
      backend:flush()
      local answer = backend:read(100, "\n")
      s:write("backend said ", answer)
      backend:close()
    else
      s:write("fast ", what)
    end
    return true
  end }
listen{ {proto="tcp", host="127.0.0.1", port=$PORT2},
  pre_fork=1, min_fork=1, max_fork=1,
  connect = function(s)
    s:read(100, "\n")
    for _ = 1, 1000 do
      local f = io.open("$DIR/release")
      if f then f:close() break end
      moonbridge_io.poll(nil, nil, 0.01)
    end
    s:write("late\n")
    return true
  end }
]])
    local slow = assert(H.connect(srv))
    send(slow, "slow\n")
    for i = 1, 200 do
      local reply = H.request(srv, i .. "\n", 5)
      assert.are.equal("fast " .. i .. "\n", reply)
    end
    local early = slow:read_nb()
    assert.are.equal("", early, "the slow handler answered before its backend did")
    H.write_file(srv.dir .. "/release", "")
    local reply = H.read_all(slow, 10)
    slow:close()
    assert.are.equal("backend said late\n", reply)
    H.stop_clean(srv)
  end)

  it("isolates a handler's error: its connection is reset, the others go on", function()
    local srv = start(8, [[
    local line = s:read(100, "\n")
    if line == "fail\n" then error("handler failed on purpose") end
    s:write(moonbridge_io.getpid(), " ", line)
    return true]])
    local a = assert(H.connect(srv))
    send(a, "waiting") -- a's handler stays in the middle of its read
    local pid = H.request(srv, "one\n"):match("^(%d+)")
    local failed, status = H.request(srv, "fail\n")
    assert.are.equal("", failed)
    assert.is_not_nil(H.wait_log(srv, "handler failed on purpose"))
    send(a, " still\n")
    local ra = H.read_all(a, 5)
    a:close()
    assert.are.equal(pid .. " waiting still\n", ra)
    assert.are.equal(pid .. " two\n", H.request(srv, "two\n"))
    assert.are.same({ tonumber(pid) }, H.workers(srv))
    local log = H.stop_clean(srv)
    assert.is_nil(log:find("exited with code", 1, true), log)
    assert.is_not_nil(status)
  end)

  it("ends a worker whose handler does not return true once its other handlers are done",
    function()
      local srv = start(8, [[
    local line = s:read(100, "\n")
    s:write(moonbridge_io.getpid(), " ", line)
    return line ~= "last\n"]])
      local a = assert(H.connect(srv))
      send(a, "waiting")
      local first = tonumber(H.request(srv, "last\n"):match("^(%d+)"))
      -- the worker takes no new connection: a new worker answers the next one
      local second = tonumber(H.request(srv, "next\n", 10):match("^(%d+)"))
      assert.are_not.equal(first, second)
      -- and the old one still finishes the connection it had
      send(a, " done\n")
      assert.are.equal(first .. " waiting done\n", H.read_all(a, 5))
      a:close()
      assert.is_not_nil(H.wait_for(5, function() return not H.alive(first) end))
      H.stop_clean(srv)
    end)

  it("lets a nested coroutine of the application use _yield as documented, and plain calls block there",
    function()
      local srv = start(8, [[
    -- plain read in the application's own coroutine: blocks (the result is the same)
    local co = coroutine.wrap(function() return s:read(100, "\n") end)
    local line = co()
    -- read_yield in the application's own coroutine yields to the application
    local yields = 0
    local reader = coroutine.create(function() return s:read_yield(100, "\n") end)
    local ok, a, b = coroutine.resume(reader)
    while coroutine.status(reader) ~= "dead" do
      yields = yields + 1
      assert(a == s and b == "r", "read_yield yielded something else")
      moonbridge_io.poll({ [s] = true }, nil, 5)
      ok, a, b = coroutine.resume(reader)
    end
    s:write(line, a, yields > 0 and "yielded\n" or "did not yield\n")
    return true]])
      local h = assert(H.connect(srv))
      send(h, "one\n")
      H.sleep(0.2) -- the second line comes later, so read_yield has to wait
      send(h, "two\n")
      assert.are.equal("one\ntwo\nyielded\n", H.read_all(h, 5))
      h:close()
      H.stop_clean(srv)
    end)

  it("waits for a _yield call made in the handler's own coroutine", function()
    local srv = start(8, [[
    local line = s:read_yield(100, "\n")
    s:write("got ", line)
    return true]])
    local a = assert(H.connect(srv))
    send(a, "slow")
    assert.are.equal("got fast\n", H.request(srv, "fast\n"))
    send(a, "ly\n")
    assert.are.equal("got slowly\n", H.read_all(a, 5))
    a:close()
    H.stop_clean(srv)
  end)

  it("finishes the connections it holds on SIGTERM, then exits", function()
    local srv = start(8, [[
    s:write("ready\n")
    s:flush()
    local line = s:read(100, "\n")
    s:write("bye ", line)
    return true]])
    local a = assert(H.connect(srv))
    local b = assert(H.connect(srv))
    -- both handlers run (and then wait in their reads)
    assert.are.equal("ready\n", H.read_line(a, 5))
    assert.are.equal("ready\n", H.read_line(b, 5))
    os.execute("kill -TERM " .. srv.pid)
    assert.is_not_nil(H.wait_log(srv, "SIGTERM"))
    send(a, "a\n")
    send(b, "b\n")
    assert.are.equal("bye a\n", H.read_all(a, 5))
    assert.are.equal("bye b\n", H.read_all(b, 5))
    a:close()
    b:close()
    assert.are.equal(0, H.stop(srv, "0", 10))
    assert.are.same({}, srv.leftover)
  end)

  it("leaks no descriptor over 10000 connections", function()
    local srv = start(16, [[
    s:write(s:read(100, "\n") or "")
    return true]])
    local worker = assert(H.wait_workers(srv, 1))[1]
    local function fds()
      return tonumber(select(2, H.run("ls /proc/" .. worker .. "/fd | wc -l", 5)):match("%d+"))
    end
    assert.are.equal("x\n", H.request(srv, "x\n"))
    local before = fds()
    for i = 1, 10000 do
      local h = assert(H.connect(srv))
      if i % 3 == 0 then
        h:close() -- some clients go away without a word
      else
        send(h, i .. "\n")
        assert.are.equal(i .. "\n", H.read_all(h, 5))
        h:close()
      end
    end
    assert.are.equal("y\n", H.request(srv, "y\n"))
    assert.are.equal(before, fds())
    H.stop_clean(srv)
  end)

  it("ends only the handler whose timeout expires (waiting or computing)", function()
    local srv = start(8, [[
    local line = s:read(100, "\n")
    if line == "wait\n" then
      timeout(0.3)
      s:read(100, "\n") -- never comes
    elseif line == "spin\n" then
      timeout(0.3)
      while true do end
    elseif line == "left\n" then
      timeout(10)
      -- a sub-timer is the sooner of its own and the handler's; afterwards the outer runs on
      local inner = timeout(1, function() return timeout() end)
      local outer = timeout()
      local ok = pcall(timeout, nil, function() end)
      s:write(string.format("%.0f %.0f %s\n", inner, outer, tostring(ok)))
      return true
    end
    s:write(moonbridge_io.getpid(), " ", line)
    return true]])
    local a = assert(H.connect(srv))
    send(a, "slow") -- in the middle of its read, without a timeout
    local pid = H.request(srv, "one\n"):match("^(%d+)")
    for _, what in ipairs { "wait", "spin" } do
      local h = assert(H.connect(srv))
      send(h, what .. "\n")
      local data, status = H.read_all(h, 5)
      h:close()
      assert.are.equal("", data)
      assert.are_not.equal("timeout", status, what .. ": the handler was not ended")
    end
    assert.is_not_nil(H.wait_for(5, function()
      return H.log_count(srv, 'Timeout in "connect" function') == 2
    end), H.log_text(srv))
    assert.are.equal("1 10 false\n", H.request(srv, "left\n"))
    send(a, "ly\n")
    assert.are.equal(pid .. " slowly\n", H.read_all(a, 5))
    a:close()
    assert.are.same({ tonumber(pid) }, H.workers(srv))
    H.stop_clean(srv)
  end)

  it("serves HTTP to a normal client while 300 slow-header and 200 idle clients are connected",
    function()
      local srv = H.start(http_pid_app(1000))
      local held = {}
      for i = 1, 500 do
        local h = assert(H.connect(srv))
        if i <= 300 then send(h, "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ") end
        held[i] = h
      end
      local answered, pids = 0, {}
      for _ = 1, 20 do
        local reply = H.request(srv, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5)
        local pid = reply and reply:match("\r\n\r\npid (%d+)$")
        if pid then
          answered = answered + 1
          pids[pid] = true
        end
      end
      for _, h in ipairs(held) do h:close() end
      assert.are.equal(20, answered)
      assert.are.equal(1, count(pids), "one worker answered them")
      H.stop_clean(srv)
    end)

  it("serves others while it answers a malformed multipart body to a client that sends on",
    function()
      local srv = H.start(http_pid_app(16,
        'if request.path == "post" then local _ = request.post_params end'))
      -- 1 MiB announced, a malformed start sent: the 400 goes out and the worker then reads
      -- away what the client still sends (a lingering close) before it closes
      local a = assert(H.connect(srv))
      send(a, "POST /post HTTP/1.1\r\nHost: a\r\n" ..
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1048576\r\n\r\n" ..
        "--b\r\nno colon here\r\n\r\n")
      local status = H.read_line(a, 5)
      assert.are.equal("HTTP/1.1 400 Bad Request\r\n", status)
      local pids = {}
      for _ = 1, 20 do
        send(a, string.rep("x", 1000)) -- the rest of the body, read away by the worker
        local reply = H.request(srv, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5)
        pids[assert(reply and reply:match("\r\n\r\npid (%d+)$"), reply)] = true
      end
      assert.are.equal(1, count(pids), "one worker answered them")
      a:close() -- the lingering close ends, and the handler's error is logged
      assert(H.wait_log(srv, "400 Bad Request %(Invalid header in multipart/form%-data part%)", 5))
      H.stop_clean(srv)
    end)

  it("raises its soft limit of open descriptors to the hard limit", function()
    local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1, concurrency=8,
  connect = function(s) s:write("x") return true end }
listen{ {proto="tcp", host="127.0.0.1", port=$PORT2},
  pre_fork=1, min_fork=1, max_fork=1,
  connect = function(s) s:write("x") return true end }
]], { command = "ulimit -S -n 100; exec " .. H.quote(H.launcher) .. " $APP" })
    local workers = assert(H.wait_workers(srv, 2))
    local hard = tonumber((select(2, H.run("ulimit -H -n", 5)):match("%d+")))
      or tonumber(H.read_file("/proc/sys/fs/nr_open")) -- "unlimited"
    local soft = {}
    for _, pid in ipairs(workers) do
      local limits = H.read_file("/proc/" .. pid .. "/limits")
      soft[#soft + 1] = tonumber(limits:match("Max open files%s+(%d+)"))
    end
    table.sort(soft)
    -- the classic worker keeps what it inherited; the concurrent one has the hard limit
    assert.are.same({ 100, hard }, soft)
    H.stop_clean(srv)
  end)

  it("fills a worker's free slots before it forks another, and forks when they are taken",
    function()
      local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=4, concurrency=100,
  connect = function(s)
]] .. ECHO_PID .. [[

  end }
]])
      assert(H.wait_workers(srv, 1))
      -- each held connection occupies a slot until its line comes
      local function hold(n)
        local held = {}
        for i = 1, n do held[i] = assert(H.connect(srv)) end
        return held
      end
      local function answer(held)
        local pids = {}
        for i, h in ipairs(held) do
          send(h, i .. "\n")
          local pid, line = H.read_all(h, 5):match("^(%d+) (.*)$")
          assert.are.equal(i .. "\n", line)
          pids[pid] = (pids[pid] or 0) + 1
          h:close()
        end
        return pids
      end
      local held = hold(90)
      H.sleep(0.3) -- time for the master to fork, if it (wrongly) would
      assert.are.equal(1, #H.workers(srv), "90 of 100 slots taken: no second worker")
      local pids = answer(held)
      assert.are.same({ [next(pids)] = 90 }, pids, "one worker answered all 90")
      -- 150 held: the first worker is full at 100, a second one takes the rest
      local function sockets(pid)
        local _, out = H.run("ls -l /proc/" .. pid .. "/fd | grep -c socket:", 5)
        return tonumber(out:match("%d+"))
      end
      local base = sockets(H.workers(srv)[1]) -- listener and control sockets
      held = hold(150)
      local taken
      assert(H.wait_for(5, function()
        local w = H.workers(srv)
        if #w ~= 2 then return false end
        taken = { sockets(w[1]) - base, sockets(w[2]) - base }
        return taken[1] + taken[2] == 150
      end), "150 connections are not held by two workers")
      table.sort(taken)
      assert.are.same({ 50, 100 }, taken)
      pids = answer(held)
      assert.are.equal(2, count(pids), "two workers answered")
      H.stop_clean(srv)
    end)

  it("keeps serving when it runs out of descriptors; the connections it cannot take wait",
    function()
      -- 40 descriptors for 60 clients: the worker takes what it can, and the rest once
      -- handlers end (it logs the first failed accept and tries again; before, the worker
      -- died with all its connections)
      local srv = H.start([[
listen{ {proto="tcp", host="127.0.0.1", port=$PORT},
  pre_fork=1, min_fork=1, max_fork=1, concurrency=1000,
  connect = function(s)
]] .. ECHO_PID .. [[

  end }
]], { command = "ulimit -n 40; exec " .. H.quote(H.launcher) .. " $APP" })
      assert(H.wait_workers(srv, 1))
      local clients = {}
      for i = 1, 60 do clients[i] = assert(H.connect(srv)) end
      assert(H.wait_log(srv, "Cannot accept a connection: Too many open files", 5))
      local pids = {}
      for i, h in ipairs(clients) do
        send(h, i .. "\n")
        local reply = H.read_all(h, 5)
        local pid, line = reply:match("^(%d+) (.*)$")
        assert.are.equal(i .. "\n", line)
        pids[pid] = true
        h:close()
      end
      assert.are.equal(1, count(pids), "one worker answered them all")
      assert.are.equal(1, H.log_count(srv, "Cannot accept a connection"), "logged once")
      H.stop_clean(srv)
    end)

  it("serves a waiting handler between new connections: accepts do not starve it", function()
    -- `served` counts answers in the worker. A waits for the rest of its line; B keeps the
    -- worker busy (no yield) while A's rest and 100 complete new connections arrive. Then
    -- A is answered after at most a batch of the new ones (before, the worker took every
    -- queued connection first: under a steady stream of them, a waiting handler waited
    -- for as long as the stream lasted).
    local srv = start(1000, [[
    local line = s:read(100, "\n")
    if line == "spin\n" then
      local t = moonbridge_io.timeref()
      while moonbridge_io.timeref() - t < 0.5 do end
    end
    served = (served or 0) + 1
    s:write(served, " ", line)
    return true]])
    local a = assert(H.connect(srv))
    send(a, "wait")
    assert.are.equal("1 x\n", H.request(srv, "x\n")) -- A's handler has started by now
    local b = assert(H.connect(srv))
    send(b, "spin\n")
    H.sleep(0.1) -- B's handler is spinning
    send(a, "ing\n")
    local new = {}
    for i = 1, 100 do
      new[i] = assert(H.connect(srv))
      send(new[i], "n\n")
    end
    assert.are.equal("2 spin\n", H.read_all(b, 5))
    local n, line = H.read_all(a, 5):match("^(%d+) (.*)$")
    assert.are.equal("waiting\n", line)
    assert.is_true(tonumber(n) <= 20, "A answered as number " .. n .. " of 103")
    for _, h in ipairs(new) do
      assert.matches("^%d+ n\n$", H.read_all(h, 5))
      h:close()
    end
    a:close()
    b:close()
    H.stop_clean(srv)
  end)

  it("sends what a handler left buffered while it serves others, at close or at its end",
    function()
      local srv = start(8, [[
    local what = s:read(100, "\n")
    if what == "fast\n" then
      s:write("fast\n")
      return true
    end
    -- buffered without waiting: more than the socket takes while the client does not read
    s:write_nb(string.rep("x", 4 * 1024 * 1024))
    s:write_nb(string.rep("y", 1000))
    if what == "close\n" then assert(s:close()) end
    return true]])
      local a = assert(H.connect(srv))
      send(a, "close\n")
      local b = assert(H.connect(srv))
      send(b, "end\n")
      -- neither client reads yet: both closes wait for them in the loop
      for i = 1, 20 do
        assert.are.equal("fast\n", H.request(srv, "fast\n", 5), i)
      end
      for _, h in ipairs { a, b } do
        local data, status = H.read_all(h, 10)
        assert.are.equal("eof", status)
        assert.are.equal(4 * 1024 * 1024 + 1000, #data)
        assert.are.equal(string.rep("y", 1000), data:sub(-1000))
        h:close()
      end
      H.stop_clean(srv)
    end)

  it("waits in the loop for a child process and for a connection on the handler's own listener",
    function()
      local srv = start(8, [[
    local what = s:read(100, "\n")
    if what == "child\n" then
      -- the child ends once the spec creates the file `release`
      local child = assert(moonbridge_io.exec("sh", "-c",
        "while [ ! -e $DIR/release ]; do sleep 0.01; done; exit 3"))
      s:write("child exited with ", child:wait(), "\n")
    elseif what == "listen\n" then
      local l = assert(moonbridge_io.tcplisten("127.0.0.1", $PORT2))
      s:write("listening\n")
      s:flush()
      local c = assert(l:accept())
      c:write("accepted\n")
      c:close()
      l:close()
      s:write("done\n")
    else
      s:write("fast ", what)
    end
    return true]])
      local a = assert(H.connect(srv))
      send(a, "child\n")
      local b = assert(H.connect(srv))
      send(b, "listen\n")
      assert.are.equal("listening\n", H.read_line(b, 5))
      -- both handlers wait; the worker still serves others
      for i = 1, 20 do
        assert.are.equal("fast " .. i .. "\n", H.request(srv, i .. "\n", 5))
      end
      local c = assert(H.connect(srv, 5, "127.0.0.1", srv.port2))
      assert.are.equal("accepted\n", H.read_line(c, 5))
      c:close()
      assert.are.equal("done\n", H.read_line(b, 5))
      b:close()
      assert.are.equal("", a:read_nb(), "the child's wait ended early")
      H.write_file(srv.dir .. "/release", "")
      assert.are.equal("child exited with 3\n", H.read_line(a, 5))
      a:close()
      H.stop_clean(srv)
    end)
  it("waits in the loop for a TCP or Unix connect whose listener's backlog is full", function()
    -- The spec's own listeners are filled to their backlog (somaxconn + 1 connections, never
    -- accepted): a new TCP connect then waits for a SYN retransmit (1 s), a Unix connect
    -- is refused with EAGAIN and tried again. Meanwhile the worker serves others.
    local cap = math.min(4096, tonumber(H.read_file("/proc/sys/net/core/somaxconn")))
    local limit = tonumber((select(2, H.run("ulimit -n", 5)):match("%d+")))
    if limit < 2 * cap + 200 then
      pending("needs a descriptor limit of " .. (2 * cap + 200) .. " (have " .. limit .. ")")
      return
    end
    local dir = H.tmpdir()
    local tl = assert(mio.tcplisten("127.0.0.1", 0))
    local ul = assert(mio.locallisten(dir .. "/sock"))
    local fill = {}
    for _ = 1, cap + 1 do
      fill[#fill + 1] = assert(mio.tcpconnect("127.0.0.1", tl.local_tcpport))
      fill[#fill + 1] = assert(mio.localconnect(dir .. "/sock"))
    end
    local srv = start(8, string.format([[
    local what = s:read(100, "\n")
    local c, err
    if what == "tcp\n" then
      c, err = moonbridge_io.tcpconnect("127.0.0.1", %d)
    elseif what == "unix\n" then
      c, err = moonbridge_io.localconnect(%q)
    elseif what == "refused\n" then
      c, err = moonbridge_io.tcpconnect("127.0.0.1", %d)
      s:write(tostring(c), " ", tostring(err), "\n")
      return true
    else
      s:write("fast ", what)
      return true
    end
    assert(c, err)
    c:write("hello from ", what)
    c:flush()
    s:write("connected ", what)
    c:close()
    return true]], tl.local_tcpport, dir .. "/sock", H.free_port()))
    local a = assert(H.connect(srv))
    send(a, "tcp\n")
    local b = assert(H.connect(srv))
    send(b, "unix\n")
    for i = 1, 20 do
      assert.are.equal("fast " .. i .. "\n", H.request(srv, i .. "\n", 5))
    end
    assert.matches("^nil .+\n$", H.request(srv, "refused\n", 5))
    assert.are.equal("", a:read_nb(), "the TCP connect ended while the backlog was full")
    assert.are.equal("", b:read_nb(), "the Unix connect ended while the backlog was full")
    -- make room: accept (and close) what the spec queued, and no more (the queue is in
    -- order of arrival; the handlers' connections come after)
    local function drain(l)
      for _ = 1, cap + 1 do assert(l:accept_nb()):close() end
    end
    drain(tl)
    drain(ul)
    assert.are.equal("connected tcp\n", H.read_line(a, 10))
    assert.are.equal("connected unix\n", H.read_line(b, 10))
    -- the handlers' connections reached the spec's listeners
    local got = {}
    for _, l in ipairs { tl, ul } do
      local c = H.wait_for(5, function() return l:accept_nb() end)
      got[#got + 1] = H.read_all(c, 5)
      c:close()
    end
    table.sort(got)
    assert.are.same({ "hello from tcp\n", "hello from unix\n" }, got)
    a:close()
    b:close()
    for _, h in ipairs(fill) do h:close() end
    tl:close()
    ul:close()
    os.execute("rm -rf " .. H.quote(dir))
    H.stop_clean(srv)
  end)
end)
