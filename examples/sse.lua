-- Server-Sent Events from one process: a single worker holds up to 10000 open event
-- streams, each handler a coroutine that waits in the worker's event loop between two
-- events. Every event says which process sent it and how many streams that process is
-- serving right now, a counter all the handlers share: every client sees the same numbers.
--   moonbridge examples/sse.lua        then: curl -N http://127.0.0.1:8083/events
--   (or open http://127.0.0.1:8083/ in a browser)
-- A stream ends after 60 events; a browser reconnects by itself and continues the
-- numbering (it sends the Last-Event-ID header; curl -N -H 'Last-Event-ID: 41' ... too).
-- The environment variables PORT (default 8083) and INTERVAL (seconds between two events,
-- default 1) change the port and the pace. Thousands of clients need as many descriptors:
-- raise `ulimit -n` first.
local http = require "moonbridge_http"

local PORT = tonumber(os.getenv("PORT")) or 8083
local INTERVAL = tonumber(os.getenv("INTERVAL")) or 1
local EVENTS = 60 -- per stream

local PAGE = [[
<!DOCTYPE html>
<meta charset="utf-8">
<title>Moonbridge Server-Sent Events</title>
<h1>Events</h1>
<ul id="events"></ul>
<script>
  const list = document.getElementById("events");
  const source = new EventSource("/events");
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    const item = document.createElement("li");
    item.textContent = `#${event.lastEventId}: worker ${data.pid}, ${data.clients} client(s)`;
    list.prepend(item);
  };
</script>
]]

-- Shared by every handler of the worker (they all run in its one Lua state). This file
-- is loaded in the master process: the worker learns its PID in `prepare`.
local pid
local clients = 0

-- The id the client saw last, sent by EventSource when it reconnects; 0 if none (or if it
-- is not one of ours).
local function last_event_id(request)
  local id = tonumber(string.match(request.headers_value["Last-Event-ID"] or "", "^%d+$") or "")
  return math.type(id) == "integer" and id or 0
end

local function stream(request, id)
  -- An event stream's client sends nothing after its request: input (or its end) on the
  -- socket means it has gone away.
  local input = { [request.socket] = true }
  for n = 1, EVENTS do
    id = id + 1
    request:send_data("id: ", id, "\n",
      'data: {"pid": ', pid, ', "clients": ', clients, "}\n\n")
    request:flush() -- out now, not when more data has gathered
    if n == EVENTS then break end
    -- wait for the next event (other handlers run meanwhile); SIGTERM ends the stream, so
    -- that the server can stop
    local gone, _, stopping = moonbridge_io.poll(input, nil, INTERVAL, true)
    if gone or stopping then break end
  end
  request:finish()
end

local function events(request)
  request:send_status("200 OK")
  request:send_header("Content-Type", "text/event-stream")
  request:send_header("Cache-Control", "no-cache")
  if request.method == "HEAD" then
    request:flush() -- the head a GET gets (chunked), without the stream
    return
  end
  clients = clients + 1
  local ok, err = pcall(stream, request, last_event_id(request))
  clients = clients - 1
  -- A client that has gone away makes a write fail: moonbridge_http resets the connection,
  -- marks the request faulty and raises "Could not send data to client: ...". That is how
  -- streams end, not an error of this application; anything else is.
  if not ok and not request.faulty then error(err, 0) end
end

listen{
  { proto = "tcp", host = "127.0.0.1", port = PORT },
  pre_fork = 1, min_fork = 1, max_fork = 1, concurrency = 10000,
  prepare = function() pid = moonbridge_io.getpid() end,
  connect = http.generate_handler(function(request)
    if request.method ~= "GET" and request.method ~= "HEAD" then
      request:send_status("405 Method Not Allowed")
      request:send_header("Allow", "GET, HEAD")
    elseif request.path == "" then
      request:send_status("200 OK")
      request:send_header("Content-Type", "text/html; charset=UTF-8")
      request:send_data(PAGE)
    elseif request.path == "events" then
      events(request)
    else
      request:send_status("404 Not Found")
      request:send_header("Content-Type", "text/plain; charset=UTF-8")
      request:send_data("Not found: /", request.path, "\n")
    end
    return true -- keep the worker for further connections
  end),
}
