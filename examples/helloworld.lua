-- Minimal HTTP application: answers every request with "Hello World!".
--   moonbridge examples/helloworld.lua        then: curl http://127.0.0.1:8080/
-- The port can be changed with the environment variable PORT.
local http = require "moonbridge_http"

listen{
  -- defer_accept: a worker gets a connection once its request has arrived (HTTP clients
  -- speak first)
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 8080,
    defer_accept = true },
  pre_fork = 1, min_fork = 2, max_fork = 16,
  connect = http.generate_handler(function(request)
    request:send_status("200 OK")
    request:send_header("Content-Type", "text/plain; charset=UTF-8")
    request:send_data("Hello World!\n")
    request:finish()
    return true -- keep the worker for further connections
  end),
}
