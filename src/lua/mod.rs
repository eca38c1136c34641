//! The binding layer: builds the `moonbridge_io`, `moonbridge_core` and `moonbridge_http`
//! module tables from the Rust core.
//!
//! Three files touch the Lua C API: `stack.rs` (the stack of a C function, with the one
//! error mapping), `object.rs` (userdata objects) and `memory.rs` (the allocator hook for
//! memory limits). Every other file here is a binding written against them, so misuse errors
//! are plain strings and hot paths (`read`, `write`) cost one C call.

mod coop;
mod exec;
mod fields;
mod handle;
mod http;
mod memory;
mod net;
mod object;
mod poll;
mod server;
mod stack;

use std::os::fd::{FromRawFd, OwnedFd};

use crate::io::exec::Child;
use crate::io::{Handle, Kind, Listener};
use object::register_type;
use stack::{Functions, Stack};

const GLUE: &str = include_str!("../../lua/embedded/io_glue.lua");

const FUNCTION_SETS: &[Functions] = &[net::FUNCTIONS, poll::FUNCTIONS, exec::FUNCTIONS];

/// Builds the module table on the stack.
fn open_io(s: Stack<'_>) {
    s.reserve(8);
    // A peer that goes away must not kill the process: EPIPE is reported instead.
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory arguments.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let module = s.push_functions(FUNCTION_SETS);

    // Method tables by type, for the glue.
    s.new_table(0, 4);
    let types = s.top();
    register_type::<Handle>(s);
    s.set_field(types, c"handle");
    register_type::<Listener>(s);
    s.set_field(types, c"listener");
    register_type::<Child>(s);
    s.set_field(types, c"child");

    for (name, fd) in [(c"stdin", 0), (c"stdout", 1), (c"stderr", 2)] {
        // SAFETY: fds 0-2 belong to the process; the handle is their only owner on the Lua
        // side and closes them only if the program asks to.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        handle::push_handle(s, Handle::new(fd, Kind::Stdio));
        s.set_field(module, name);
    }

    s.push_value(module);
    s.push_value(types);
    s.run_chunk(GLUE, c"=moonbridge_io/glue", 2, 0);
    s.set_top(module);
}

#[mlua::lua_module(name = "moonbridge_io")]
fn moonbridge_io(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    // SAFETY: exec_raw runs the closure in protected mode with a valid state; `open_io`
    // leaves exactly the module table on the stack.
    unsafe {
        lua.exec_raw((), |l| {
            let s = Stack::new(l);
            open_io(s);
        })
    }
}

/// Builds the `moonbridge_core` table (process primitives for lua/moonbridge.lua).
fn open_core(s: Stack<'_>) {
    s.reserve(4);
    let module = s.push_functions(&[server::FUNCTIONS]);
    server::register(s);
    s.set_top(module);
}

#[mlua::lua_module(name = "moonbridge_core")]
fn moonbridge_core(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    // SAFETY: as for moonbridge_io; `open_core` leaves only the table on the stack.
    unsafe {
        lua.exec_raw((), |l| {
            let s = Stack::new(l);
            open_core(s);
        })
    }
}

#[mlua::lua_module(name = "moonbridge_http")]
fn moonbridge_http(lua: &mlua::Lua) -> mlua::Result<mlua::Table> {
    // SAFETY: as for moonbridge_io; `http::open` leaves only the module table on the stack.
    unsafe {
        lua.exec_raw((), |l| {
            let s = Stack::new(l);
            http::open(s);
        })
    }
}
