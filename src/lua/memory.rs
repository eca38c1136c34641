//! memory_limit for a worker's Lua state: wraps the host interpreter's allocator (mlua cannot
//! install its own in module mode). Blocks allocated before the wrap are freed through the
//! original allocator as before; the wrapper only counts and refuses growth past the limit,
//! which Lua reports as "not enough memory".

use std::ffi::c_void;

use mlua::ffi;

use crate::lua::stack::Stack;
use crate::server::memory::Budget;

struct Wrapped {
    orig: ffi::lua_Alloc,
    orig_ud: *mut c_void,
    budget: Budget,
}

unsafe extern "C" fn limited_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the leaked `Wrapped` installed by `set_limit`, used only by this
    // single-threaded Lua state.
    let w = unsafe { &mut *(ud as *mut Wrapped) };
    // With a NULL block, `osize` is a type tag, not a size.
    let old = if ptr.is_null() { 0 } else { osize };
    if !w.budget.admits(old, nsize) {
        return std::ptr::null_mut();
    }
    // SAFETY: forwards the call unchanged to the allocator the state was created with.
    let p = unsafe { (w.orig)(w.orig_ud, ptr, osize, nsize) };
    if nsize == 0 || !p.is_null() {
        w.budget.record(old, nsize);
    }
    p
}

/// Sets the limit in bytes (0 = none) for everything the state allocated since it was
/// created. Installs the wrapper on first use.
pub fn set_limit(s: Stack<'_>, limit: usize) {
    let l = s.raw();
    let used = s.gc_bytes();
    // SAFETY: `s` is a valid state of this single-threaded process (Stack's invariant); the
    // allocator is replaced by one that forwards to the original.
    unsafe {
        let mut ud: *mut c_void = std::ptr::null_mut();
        let f = ffi::lua_getallocf(l, &mut ud);
        if f as *const () == limited_alloc as *const () {
            (*(ud as *mut Wrapped)).budget.limit = limit;
            return;
        }
        // Leaked on purpose: it must live as long as the state, which lives until exit.
        let w = Box::into_raw(Box::new(Wrapped {
            orig: f,
            orig_ud: ud,
            budget: Budget { used, limit },
        }));
        ffi::lua_setallocf(l, limited_alloc, w.cast());
    }
}
