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
   -- LuaRocks substitutes $(LUA) with the interpreter it targets (/usr/bin/lua5.4 for
   -- --lua-version 5.4); its _VERSION gives V ("5.4") and the cargo feature (lua54).
   -- Each version builds in its own cargo target directory (target/lua5.3, target/lua5.4):
   -- with one directory, switching the feature recompiles the crate (about 20 s) on every
   -- build; with two, a build with nothing changed takes a fraction of a second.
   -- The outputs are copied to target/rock/:
   --   moonbridge_io.so   the module (overwritten by the next build; installed right away)
   --   moonbridge$V       bin/moonbridge with the interpreter's path as its #! line
   --   moonbridge         a sh script running moonbridge5.4 if it is installed next to it,
   --                      else moonbridge5.3 (the same file for both versions)
   -- LuaRocks wraps the Lua launcher moonbridge$V in a sh script that runs $(LUA) with the
   -- tree's module paths; the sh script moonbridge is not Lua, so it is copied as it is.
   build_command = [[
set -e
V=$("$(LUA)" -e 'io.write(_VERSION:sub(5))')
${CARGO:-cargo} build --release --locked --features "lua${V%.*}${V#*.}" --target-dir "target/lua$V"
mkdir -p target/rock
cp "target/lua$V/release/libmoonbridge.so" target/rock/moonbridge_io.so
sed '1s|^#!.*|#!$(LUA)|' bin/moonbridge >"target/rock/moonbridge$V"
chmod 755 "target/rock/moonbridge$V"
cat >target/rock/moonbridge <<'EOF'
#!/bin/sh
# moonbridge: runs moonbridge5.4 if it is installed in this directory, else moonbridge5.3.
d=$(dirname "$(readlink -f "$0")")
for v in 5.4 5.3; do
  if [ -x "$d/moonbridge$v" ]; then exec "$d/moonbridge$v" "$@"; fi
done
echo "moonbridge: neither moonbridge5.4 nor moonbridge5.3 is installed in $d" >&2
exit 127
EOF
chmod 755 target/rock/moonbridge
]],
   -- The versioned launcher's name depends on the Lua version, which the static install
   -- table cannot express: copy it into the rock's bin directory, which LuaRocks then
   -- deploys (and removes with the rock) like the files of install.bin.
   install_command = [[V=$("$(LUA)" -e 'io.write(_VERSION:sub(5))') && cp "target/rock/moonbridge$V" "$(BINDIR)/moonbridge$V"]],
   install = {
      lib = { moonbridge_io = "target/rock/moonbridge_io.so" },
      lua = {
         moonbridge = "lua/moonbridge.lua",
         moonbridge_config = "lua/moonbridge_config.lua",
         moonbridge_http = "lua/moonbridge_http.lua",
      },
      bin = { moonbridge = "target/rock/moonbridge" },
   },
}
-- Installing the other Lua version into the same tree finds bin/moonbridge "not tracked"
-- (LuaRocks keeps one manifest per Lua version) and moves it to bin/moonbridge~ before
-- deploying the same file again: remove that copy when it is identical.
hooks = {
   post_install = [[B="$(PREFIX)/../../../../../bin" && if cmp -s "$B/moonbridge~" "$B/moonbridge"; then rm -f "$B/moonbridge~"; fi]],
}
test = {
   type = "command",
   script = "spec/run.lua",
}
