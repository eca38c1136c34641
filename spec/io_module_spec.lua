-- The module loads on this interpreter and exposes what the manual lists.
local mio = require "moonbridge_io"
local helper = require "spec.helper"

describe("moonbridge_io module", function()
  it("loads as a table", function()
    assert.is_table(mio)
  end)

  it("has stdin, stdout and stderr handles for fds 0, 1, 2", function()
    for _, name in ipairs { "stdin", "stdout", "stderr" } do
      assert.is_userdata(mio[name])
      assert.matches("moonbridge_io handle", tostring(mio[name]))
    end
    assert.matches("fd 0", tostring(mio.stdin))
    assert.matches("fd 2", tostring(mio.stderr))
  end)

  it("gives handles every method of the manual, including _call and _yield forms", function()
    for _, op in ipairs { "read", "drain", "write", "flush" } do
      for _, suffix in ipairs { "", "_nb", "_call", "_yield" } do
        assert.is_function(mio.stdout[op .. suffix], op .. suffix)
      end
    end
    for _, m in ipairs { "finish", "close", "reset" } do
      assert.is_function(mio.stdout[m], m)
    end
  end)

  it("raises plain-string errors naming the function and argument on misuse", function()
    local ok, err = pcall(mio.stdout.write, mio.stdout, {})
    assert.is_false(ok)
    assert.is_string(err)
    assert.equals("bad argument #1 to 'write' (string expected, got table)", err)
    ok, err = pcall(mio.stdin.read, mio.stdin, nil, "ab")
    assert.equals("bad argument #2 to 'read' (single byte expected)", err)
    ok, err = pcall(mio.stdin.read, mio.stdin, "x")
    assert.equals("bad argument #1 to 'read' (number expected, got string)", err)
    ok, err = pcall(mio.stdin.read, 42)
    assert.is_string(err)
    assert.matches("bad self to 'read'", err)
  end)

  it("recognises its objects by their contents, not by a metatable a script can copy", function()
    -- In a child interpreter: io.stdout's metatable gets every entry of a handle's
    -- metatable, and __gc of a handle is called on a foreign userdata; both must be refused
    -- or ignored, never taken as a handle.
    local pipe, file = helper.spawn([[
      local mio = require "moonbridge_io"
      local l = assert(mio.tcplisten("127.0.0.1", 0))
      local h = assert(mio.tcpconnect("127.0.0.1", l.local_tcpport))
      local mt = getmetatable(h)
      mt.__gc(io.stderr)
      mt.__gc(42)
      local fmt = getmetatable(io.stdout)
      for k, v in pairs(mt) do if k ~= "__index" then rawset(fmt, k, v) end end
      local ok, err = pcall(h.read, io.stdout, 1)
      print(ok, err)
      io.stderr:write("") -- still a working file
      print(h:write("x") == h, tostring(h):match("^moonbridge_io handle") ~= nil)
    ]])
    local out = pipe:read("a")
    pipe:close()
    os.remove(file)
    assert.matches("^false\tbad self to 'read'", out)
    assert.matches("\ntrue\ttrue\n$", out)
  end)

  it("fails cleanly when loaded by the other Lua version", function()
    local other = helper.version == "54" and "5.3" or "5.4"
    local mine = helper.version == "54" and "5.4" or "5.3"
    local so = package.searchpath("moonbridge_io", package.cpath)
    assert.is_string(so)
    local cmd = string.format(
      "lua%s -e 'local ok, err = pcall(package.loadlib(%q, \"luaopen_moonbridge_io\") or error(\"x\")); print(ok)' 2>&1; "
        .. "lua%s -e 'local f, err = package.loadlib(%q, \"luaopen_moonbridge_io\"); print(f == nil, err)' 2>&1",
      mine, so, other, so)
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    -- loading in the right interpreter works; in the other one loadlib reports the
    -- missing symbol instead of crashing
    assert.matches("^true\n", out)
    assert.matches("true\t.*undefined symbol", out)
  end)
end)
