//! A worker's Lua allocator: the small-block cache (`server::small_blocks`) and
//! memory_limit, both installed over the host interpreter's allocator (mlua cannot install
//! its own in module mode). The limit wraps whatever allocator is in place and only counts
//! and refuses growth past the limit, which Lua reports as "not enough memory".
//!
//! Both put a function of this library into the state; the library is pinned in memory
//! first ([`pin_library`]), so that a state closed after `dlclose` (`os.exit(code, true)`
//! in a worker) still finds it.

use std::ffi::c_void;
use std::sync::Once;

use mlua::ffi;

use crate::lua::stack::Stack;
use crate::server::memory::Budget;
use crate::server::small_blocks::SmallBlocks;

/// Makes this shared library stay loaded until the process ends (RTLD_NODELETE), whatever
/// `dlclose` the interpreter does at `lua_close`.
fn pin_library() {
    static PIN: Once = Once::new();
    PIN.call_once(|| {
        // SAFETY: dladdr fills `info` for an address of this library; dlopen with
        // RTLD_NOLOAD only takes another reference to the already loaded library, named by
        // the path dladdr returned (valid while the library is loaded, as it is here).
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let here = pooled_alloc as *const c_void;
            if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
                let flags = libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE;
                libc::dlopen(info.dli_fname, flags);
            }
        }
    });
}

unsafe extern "C" fn pooled_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the leaked cache installed by `use_small_blocks`, used only by this
    // single-threaded Lua state.
    let cache = unsafe { &mut *(ud as *mut SmallBlocks) };
    let p = ptr.cast::<u8>();
    if nsize == 0 {
        // SAFETY: Lua frees only its own live blocks, all of them malloc blocks.
        unsafe { cache.free(p) };
        std::ptr::null_mut()
    } else if p.is_null() {
        cache.alloc(nsize).cast()
    } else {
        // SAFETY: Lua passes a live block of `osize` bytes.
        unsafe { cache.realloc(p, osize, nsize) }.cast()
    }
}

/// Serves the state's small blocks from a cache (see `server::small_blocks`). Only over
/// the interpreter's own allocator (`luaL_newstate`'s: realloc and free, no user data),
/// whose blocks the cache can take over; returns whether it was installed.
pub fn use_small_blocks(s: Stack<'_>) -> bool {
    let l = s.raw();
    // SAFETY: `s` is a valid state of this single-threaded process (Stack's invariant).
    unsafe {
        let mut ud: *mut c_void = std::ptr::null_mut();
        let f = ffi::lua_getallocf(l, &mut ud);
        let (target_f, target_ud): (ffi::lua_Alloc, *mut c_void) =
            if f as *const () == limited_alloc as *const () {
                let w = &*(ud as *mut Wrapped);
                (w.orig, w.orig_ud)
            } else {
                (f, ud)
            };
        if target_f as *const () == pooled_alloc as *const () {
            return true;
        }
        if !target_ud.is_null() {
            return false; // not luaL_newstate's allocator: its blocks may not be malloc's
        }
        pin_library();
        // Leaked on purpose: it must live as long as the state, which lives until exit.
        let cache: *mut c_void = Box::into_raw(Box::new(SmallBlocks::new())).cast();
        if f as *const () == limited_alloc as *const () {
            let w = &mut *(ud as *mut Wrapped);
            w.orig = pooled_alloc;
            w.orig_ud = cache;
        } else {
            ffi::lua_setallocf(l, pooled_alloc, cache);
        }
    }
    true
}

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
        pin_library();
        // Leaked on purpose: it must live as long as the state, which lives until exit.
        let w = Box::into_raw(Box::new(Wrapped {
            orig: f,
            orig_ud: ud,
            budget: Budget { used, limit },
        }));
        ffi::lua_setallocf(l, limited_alloc, w.cast());
    }
}
