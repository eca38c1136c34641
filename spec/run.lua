-- Runs busted inside the interpreter LuaRocks (or the test script) targets.
require "busted.runner"({ standalone = false })
