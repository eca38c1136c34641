# Sourced (`. scripts/env.sh`) by the scripts and by users: makes the rocks installed in
# .trees/5.3 and .trees/5.4 usable from this shell.
# * Module paths through the versioned LUA_PATH_5_x / LUA_CPATH_5_x variables, so each
#   interpreter loads its own build (`;;` keeps Debian's default paths: busted, luasocket).
# * PATH: .trees/5.4/bin, then .trees/5.3/bin, before the rest. `moonbridge` is therefore
#   the Lua 5.4 launcher; `moonbridge5.4` and `moonbridge5.3` choose the version.
#   Sourcing again does not add the directories twice.
_mb_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
for _v in 5.3 5.4; do
  _t="$_mb_root/.trees/$_v"
  _u=${_v/./_}
  export "LUA_PATH_$_u=$_t/share/lua/$_v/?.lua;$_t/share/lua/$_v/?/init.lua;;"
  export "LUA_CPATH_$_u=$_t/lib/lua/$_v/?.so;;"
done
for _v in 5.3 5.4; do # 5.4 last, so it ends up first
  _t="$_mb_root/.trees/$_v/bin"
  case ":$PATH:" in
    *":$_t:"*) ;;
    *) PATH="$_t:$PATH" ;;
  esac
done
export PATH
unset _v _t _u _mb_root
