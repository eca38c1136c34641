//! Moonbridge for Lua, in Rust.
//!
//! Crate map (see DESIGN.md):
//! - [`io`]: the pure I/O core: buffered handles over owned descriptors, sockets, poll,
//!   child processes, signals. No Lua types.
//! - `lua` (private): the only binding layer. It converts Lua arguments, calls the core and
//!   maps errors (I/O failure -> `nil, message`; misuse -> a plain-string Lua error).
//!
//! The two Lua entry points, `luaopen_moonbridge_io` and `luaopen_moonbridge_http`, are
//! exported from this one cdylib so that both modules share one set of userdata types.

pub mod bytes;
pub mod http;
pub mod io;
mod lua;
pub mod server;
