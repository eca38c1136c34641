# Sourced by scripts: module paths of the rocks installed in .trees/5.3 and .trees/5.4, set
# through the versioned LUA_PATH_5_x variables so each interpreter loads its own build.
# `;;` keeps Debian's default paths (busted, luasocket).
_mb_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for _v in 5.3 5.4; do
  _t="$_mb_root/.trees/$_v"
  _u=${_v/./_}
  export "LUA_PATH_$_u=$_t/share/lua/$_v/?.lua;$_t/share/lua/$_v/?/init.lua;;"
  export "LUA_CPATH_$_u=$_t/lib/lua/$_v/?.so;;"
done
unset _v _t _u
