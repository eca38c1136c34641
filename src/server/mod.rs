//! The pre-forking server core: pool policy, master loop, worker primitives. No Lua types;
//! `src/lua/server.rs` exposes what `lua/moonbridge.lua` needs.

pub mod board;
pub mod control;
pub mod lines;
pub mod log;
pub mod master;
pub mod memory;
pub mod pool;
pub mod pressure;
pub mod process;
pub mod record;
pub mod signals;
pub mod small_blocks;
pub mod spawn;
pub mod timed;
pub mod timer;
pub mod title;
pub mod worker;
