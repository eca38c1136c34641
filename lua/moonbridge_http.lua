-- moonbridge_http: the HTTP module. It lives in the same shared object as moonbridge_io
-- (one set of userdata types, so request.socket is a moonbridge_io handle); this file
-- only finds that object and calls its second entry point.
require "moonbridge_io"
local path = assert(package.searchpath("moonbridge_io", package.cpath))
return assert(package.loadlib(path, "luaopen_moonbridge_http"))()
