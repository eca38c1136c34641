-- Installing the rock: both Lua versions into one tree (as a user's project would), the
-- launchers moonbridge5.3, moonbridge5.4 and moonbridge, removal of one version, and the
-- Rust toolchain check of scripts/setup.sh. Runs from the repository root; the rock builds
-- from the cargo caches that scripts/setup.sh filled (target/lua5.3, target/lua5.4), so each
-- `luarocks make` takes about a second (bounded at 300 s for a cold build).
local H = require "spec.server_helper"

local ROOT = os.getenv("PWD") or "."
local RUST_MIN = assert(H.read_file(ROOT .. "/Cargo.toml"):match('\nrust%-version = "([%d.]+)"'))

-- Commands run without the module paths of scripts/env.sh: the launchers must find their
-- own tree's modules by themselves.
local CLEAN_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_3 -u LUA_PATH_5_4"
  .. " -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_3 -u LUA_INIT_5_4 "

local function sh(cmd, seconds)
  return H.run("cd " .. H.quote(ROOT) .. " && " .. CLEAN_ENV .. "sh -c " .. H.quote(cmd), seconds)
end

describe("installing the rock", function()
  local tree, app

  setup(function()
    tree = H.tmpdir()
    app = tree .. "-app.lua"
    -- A main listener runs its handler once; the server then shuts down with exit code 0.
    H.write_file(app, [[
listen{ { proto = "main" }, connect = function()
  print(_VERSION .. " " .. package.searchpath("moonbridge_io", package.cpath))
  io.stdout:flush()
end }
]])
  end)

  teardown(function()
    os.execute("rm -rf " .. H.quote(tree) .. " " .. H.quote(app))
  end)

  local function make(v)
    local code, out = sh(string.format("luarocks --lua-version %s make --tree %s moonbridge-scm-1.rockspec",
      v, H.quote(tree)), 300)
    assert.equal(0, code, out)
    return out
  end

  -- Runs an installed launcher on the app; returns the line the handler printed.
  local function run(launcher)
    local code, out = sh(H.quote(tree .. "/bin/" .. launcher) .. " " .. H.quote(app) .. " 2>/dev/null", 20)
    assert.equal(0, code, out)
    return (out:gsub("\n$", ""))
  end

  local function so(v) return tree .. "/lib/lua/" .. v .. "/moonbridge_io.so" end

  it("for Lua 5.3 installs moonbridge5.3 and moonbridge, both running lua5.3", function()
    make("5.3")
    assert.equal("Lua 5.3 " .. so("5.3"), run("moonbridge5.3"))
    assert.equal("Lua 5.3 " .. so("5.3"), run("moonbridge"))
    assert.is_false(H.exists(tree .. "/bin/moonbridge5.4"))
    local code, out = sh(H.quote(tree .. "/bin/moonbridge5.3") .. " --help")
    assert.equal(0, code)
    assert.matches("^Usage: moonbridge %[options%]", out)
  end)

  it("for Lua 5.4 in the same tree adds moonbridge5.4; moonbridge becomes 5.4", function()
    make("5.4")
    assert.equal("Lua 5.4 " .. so("5.4"), run("moonbridge5.4"))
    assert.equal("Lua 5.3 " .. so("5.3"), run("moonbridge5.3"))
    assert.equal("Lua 5.4 " .. so("5.4"), run("moonbridge"))
    -- no backup copy of the shared moonbridge script is left behind
    assert.is_false(H.exists(tree .. "/bin/moonbridge~"))
  end)

  it("installing 5.3 again keeps moonbridge at 5.4", function()
    make("5.3")
    assert.equal("Lua 5.4 " .. so("5.4"), run("moonbridge"))
    assert.equal("Lua 5.3 " .. so("5.3"), run("moonbridge5.3"))
    assert.is_false(H.exists(tree .. "/bin/moonbridge~"))
  end)

  it("removing the 5.3 rock leaves moonbridge5.4 working", function()
    local code, out = sh(string.format("luarocks --lua-version 5.3 remove --tree %s moonbridge",
      H.quote(tree)), 60)
    assert.equal(0, code, out)
    assert.is_false(H.exists(tree .. "/bin/moonbridge5.3"))
    assert.is_false(H.exists(so("5.3")))
    assert.equal("Lua 5.4 " .. so("5.4"), run("moonbridge5.4"))
    -- LuaRocks removes the shared `moonbridge` with either version; installing the
    -- remaining version again brings it back
    make("5.4")
    assert.equal("Lua 5.4 " .. so("5.4"), run("moonbridge"))
  end)
end)

describe("scripts/setup.sh", function()
  local dir

  before_each(function() dir = H.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. H.quote(dir)) end)

  -- A fake `tool` printing `version` first on PATH; `--check-rust` runs only the check (a
  -- failed check stops setup.sh before it installs or builds anything).
  local function with_fake(tool, version)
    H.write_file(dir .. "/" .. tool, "#!/bin/sh\necho '" .. tool .. " " .. version .. " (fake)'\n")
    assert(os.execute("chmod +x " .. H.quote(dir .. "/" .. tool)))
    return sh("PATH=" .. H.quote(dir) .. ":\"$PATH\" bash scripts/setup.sh --check-rust", 60)
  end

  for _, tool in ipairs { "rustc", "cargo" } do
    it("refuses an old " .. tool .. " and says how to install a new one", function()
      local code, out = with_fake(tool, "1.63.0")
      assert.equal(1, code, out)
      assert.matches("setup: moonbridge needs " .. tool .. " >= " .. RUST_MIN:gsub("%.", "%%.")
        .. " %(found 1%.63%.0 at " .. dir:gsub("%p", "%%%0") .. "/" .. tool .. "%)", out)
      assert.matches("https://sh.rustup.rs", out, 1, true)
      assert.not_matches("setup: installing", out)
      assert.not_matches("setup: building", out)
    end)
  end

  it("accepts the version Cargo.toml names", function()
    H.write_file(dir .. "/cargo", "#!/bin/sh\necho 'cargo " .. RUST_MIN .. ".0 (fake)'\n")
    assert(os.execute("chmod +x " .. H.quote(dir .. "/cargo")))
    local code, out = with_fake("rustc", RUST_MIN .. ".0")
    assert.equal(0, code, out)
    assert.equal("", out)
  end)

  it("says so when there is no Rust toolchain on PATH", function()
    local code, out = sh("PATH=/usr/bin:/bin bash scripts/setup.sh --check-rust", 60)
    assert.equal(1, code, out)
    assert.matches("setup: moonbridge needs rustc >= " .. RUST_MIN:gsub("%.", "%%."), out)
    assert.matches("https://sh.rustup.rs", out, 1, true)
  end)
end)
