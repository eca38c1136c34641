rockspec_format = "3.0"
package = "moonbridge"
version = "scm-1"
source = {
   url = "git+file://./",
}
description = {
   summary = "Moonbridge network server for Lua applications, reimplemented in Rust",
   detailed = [[
      A pre-forking network server for Lua: TCP, Unix and interval listeners served by
      pools of forked workers, an I/O library with blocking, non-blocking and
      coroutine-yielding variants of every call (moonbridge_io), and an HTTP/1.1 module.
   ]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.3, < 5.5",
}
build = {
   type = "command",
   -- LuaRocks substitutes $(LUA) with the interpreter it targets; its _VERSION picks the
   -- cargo feature (lua53 / lua54). The .so is copied out at once so that builds for both
   -- versions can share one cargo target directory.
   build_command = [[FEATURE=lua$("$(LUA)" -e 'io.write((_VERSION:gsub("%D","")))') && ${CARGO:-cargo} build --release --locked --features "$FEATURE" && mkdir -p target/rock && cp target/release/libmoonbridge.so target/rock/moonbridge_io.so]],
   install = {
      lib = { moonbridge_io = "target/rock/moonbridge_io.so" },
      lua = {
         moonbridge = "lua/moonbridge.lua",
         moonbridge_config = "lua/moonbridge_config.lua",
         moonbridge_http = "lua/moonbridge_http.lua",
      },
      bin = { moonbridge = "bin/moonbridge" },
   },
}
test = {
   type = "command",
   script = "spec/run.lua",
}
