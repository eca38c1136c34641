//! The binding layer: builds the `moonbridge_io` module table from the Rust core.
//!
//! Everything here goes through the raw C API wrapped in `state.rs`, so that misuse errors
//! are plain strings and hot paths (`read`, `write`) cost one C call.

mod exec;
mod handle;
mod http;
mod memory;
mod net;
mod poll;
mod server;
mod state;

use std::ffi::CStr;
use std::os::fd::{FromRawFd, OwnedFd};

use mlua::ffi;

use crate::io::exec::Child;
use crate::io::{Handle, Kind, Listener};
use state::{register_type, Stack};

const GLUE: &str = include_str!("../../lua/embedded/io_glue.lua");

/// Module-level functions, as (name, function) pairs.
type Functions = &'static [(&'static CStr, ffi::lua_CFunction)];

const FUNCTION_SETS: &[Functions] = &[net::FUNCTIONS, poll::FUNCTIONS, exec::FUNCTIONS];

/// Builds the module table on the stack.
fn open_io(s: Stack<'_>) {
    s.reserve(8);
    // SAFETY: `s` is a valid state in protected mode (mlua's exec_raw), with space reserved.
    unsafe {
        let l = s.raw();
        // A peer that goes away must not kill the process: EPIPE is reported instead.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);

        ffi::lua_createtable(l, 0, 32);
        let module = ffi::lua_gettop(l);
        for set in FUNCTION_SETS {
            for (name, f) in set.iter() {
                s.set_function(module, name, *f);
            }
        }

        // Method tables by type, for the glue.
        ffi::lua_createtable(l, 0, 4);
        let types = ffi::lua_gettop(l);
        register_type::<Handle>(s);
        ffi::lua_setfield(l, types, c"handle".as_ptr());
        register_type::<Listener>(s);
        ffi::lua_setfield(l, types, c"listener".as_ptr());
        register_type::<Child>(s);
        ffi::lua_setfield(l, types, c"child".as_ptr());

        for (name, fd) in [(c"stdin", 0), (c"stdout", 1), (c"stderr", 2)] {
            // SAFETY (of from_raw_fd): fds 0-2 belong to the process; the handle is their
            // only owner on the Lua side and closes them only if the program asks to.
            handle::push_handle(s, Handle::new(OwnedFd::from_raw_fd(fd), Kind::Stdio));
            ffi::lua_setfield(l, module, name.as_ptr());
        }

        if ffi::luaL_loadbufferx(
            l,
            GLUE.as_ptr().cast(),
            GLUE.len(),
            c"=moonbridge_io/glue".as_ptr(),
            c"t".as_ptr(),
        ) != ffi::LUA_OK
        {
            ffi::lua_error(l);
        }
        ffi::lua_pushvalue(l, module);
        ffi::lua_pushvalue(l, types);
        ffi::lua_call(l, 2, 0);
        ffi::lua_settop(l, module);
    }
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
    // SAFETY: valid state in protected mode with stack space reserved.
    unsafe {
        let l = s.raw();
        ffi::lua_createtable(l, 0, server::FUNCTIONS.len() as std::ffi::c_int);
        let module = ffi::lua_gettop(l);
        for (name, f) in server::FUNCTIONS {
            s.set_function(module, name, *f);
        }
        server::register(s);
        ffi::lua_settop(l, module);
    }
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
