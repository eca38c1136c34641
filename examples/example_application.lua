-- An example web application for moonbridge_http: a static page, a GET form, a POST form,
-- and a file upload whose contents are streamed through a callback (the file is never held
-- in memory as a whole, whatever its size).
--
--   moonbridge examples/example_application.lua      then open http://127.0.0.1:8080/
--
-- The port can be changed with the environment variable PORT.
local http = require "moonbridge_http"
local encode_html = http.encode_html

local PAGE = [[
<!DOCTYPE html>
<html>
<head><meta charset="UTF-8"><title>Moonbridge example application</title></head>
<body>
<h1>Moonbridge example application</h1>
<h2>GET form</h2>
<form action="/greet" method="GET">
  <input type="text" name="name" placeholder="your name"> <input type="submit" value="Greet me">
</form>
<h2>POST form</h2>
<form action="/guestbook" method="POST">
  <input type="text" name="message" placeholder="a message">
  <input type="checkbox" name="tag" value="urgent"> urgent
  <input type="checkbox" name="tag" value="happy"> happy
  <input type="submit" value="Post">
</form>
<h2>File upload (streamed)</h2>
<form action="/upload" method="POST" enctype="multipart/form-data">
  <input type="text" name="comment" placeholder="a comment">
  <input type="file" name="file" multiple>
  <input type="submit" value="Upload">
</form>
</body>
</html>
]]

local function html_page(request, title, body)
  request:send_status("200 OK")
  request:send_header("Content-Type", "text/html; charset=UTF-8")
  request:send_data("<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\"><title>", encode_html(title),
    "</title></head><body><h1>", encode_html(title), "</h1>\n", body,
    '\n<p><a href="/">Back</a></p></body></html>\n')
end

local function error_page(request, status)
  request:send_status(status)
  request:send_header("Content-Type", "text/plain; charset=UTF-8")
  request:send_data(status, "\n")
end

local routes = {}

routes[""] = function(request)
  request:send_status("200 OK")
  request:send_header("Content-Type", "text/html; charset=UTF-8")
  request:send_header("Cache-Control", "max-age=60")
  request:send_data(PAGE)
end

routes.greet = function(request)
  local name = request.get_params.name or ""
  if name == "" then name = "stranger" end
  -- a cookie remembers how often this browser was greeted
  local count = (tonumber(request.cookies.greetings) or 0) + 1
  request:send_status("200 OK")
  request:send_header("Set-Cookie", "greetings=" .. count .. "; Path=/; SameSite=Lax")
  request:send_header("Content-Type", "text/html; charset=UTF-8")
  request:send_data("<!DOCTYPE html>\n<html><body><p>Hello, ", encode_html(name),
    "! This browser has been greeted ", count, " time(s).</p><p><a href=\"/\">Back</a></p></body></html>\n")
end

routes.guestbook = function(request)
  if request.method ~= "POST" then return error_page(request, "405 Method Not Allowed") end
  local message = request.post_params.message or ""
  local tags = request.post_params_list.tag
  html_page(request, "Message received", string.format("<p>%s</p><p>Tags: %s</p>",
    encode_html(message), encode_html(#tags > 0 and table.concat(tags, ", ") or "none")))
end

routes.upload = function(request)
  if request.method ~= "POST" then return error_page(request, "405 Method Not Allowed") end
  -- Every file arrives in chunks: the first call brings the metadata, the last has no
  -- arguments. Here only the sizes are kept; a real application would write the chunks to
  -- a file or compute a digest.
  local files, current = {}, nil
  request:stream_post_param("file", function(chunk, meta)
    if meta then
      current = { name = meta.file_name or "", type = meta.content_type or "?", size = 0 }
    end
    if chunk then
      current.size = current.size + #chunk
    else
      files[#files + 1] = current
    end
  end)
  local comment = request.post_params.comment or "" -- reads the body, calling the callback
  local rows = {}
  for _, f in ipairs(files) do
    rows[#rows + 1] = string.format("<tr><td>%s</td><td>%s</td><td>%d</td></tr>",
      encode_html(f.name), encode_html(f.type), f.size)
  end
  html_page(request, "Upload received", string.format(
    "<p>Comment: %s</p><table border=\"1\"><tr><th>file</th><th>type</th><th>bytes</th></tr>" ..
    "%s</table>", encode_html(comment), table.concat(rows)))
end

listen{
  { proto = "tcp", host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 8080 },
  pre_fork = 1, min_fork = 2, max_fork = 16,
  connect = http.generate_handler(
    {
      static_headers = { "Server: Moonbridge example application" },
      request_body_size_limit = 256 * 1024 * 1024, -- uploads are streamed, not held
    },
    function(request)
      local route = request.path and routes[request.path]
      if not route then
        error_page(request, "404 Not Found")
      elseif request.method == "GET" or request.method == "HEAD" or request.method == "POST" then
        route(request)
      else
        error_page(request, "405 Method Not Allowed")
      end
      return true
    end
  ),
}
