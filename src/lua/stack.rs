//! The raw Lua C API, wrapped once: the stack of a running C function ([`Stack`]) with
//! argument checks, pushes, table, metatable, registry and chunk helpers, and the one place
//! where errors are mapped (I/O failure -> `nil, message`; misuse -> a raised plain string).
//! Binding files go through `Stack`; only this file, the object model (`object.rs`) and the
//! allocator hook (`memory.rs`) call `lua_*` functions.
//!
//! Functions exposed to Lua are written with [`lua_fn!`]: the body runs under
//! `catch_unwind`, returns `Ok(nresults)` or `Err(Raise)`, and only after every Rust value
//! is dropped is the error raised with `lua_error` (which longjmps).

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr;

use mlua::ffi;

use crate::io::HandleError;

/// An error to raise in Lua as a plain string (misuse of the API, or a failure the manual
/// says raises); I/O failures are returned as `nil, message` instead (see [`Stack::fail`]).
#[derive(Debug)]
pub struct Raise(pub String);

/// A C function as Lua calls it.
pub type CFunction = ffi::lua_CFunction;

/// Module-level functions, as (name, function) pairs.
pub type Functions = &'static [(&'static CStr, CFunction)];

pub type LResult<T> = Result<T, Raise>;

/// `bad argument #n to 'fname' (msg)`: the message format of Lua's own `luaL_argerror`.
/// For methods, `n` counts arguments after `self`, as Lua does for method calls.
pub fn bad_arg(n: i32, fname: &str, msg: &str) -> Raise {
    Raise(format!("bad argument #{n} to '{fname}' ({msg})"))
}

/// Defines a Lua C function. The body sees `$s: Stack` and returns `LResult<c_int>`.
macro_rules! lua_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($s:ident) $body:block) => {
        $(#[$meta])*
        $vis unsafe extern "C-unwind" fn $name(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
            // A nested fn keeps the body out of the `unsafe` block below.
            fn body($s: $crate::lua::stack::Stack<'_>) -> $crate::lua::stack::LResult<std::ffi::c_int> $body
            // SAFETY: Lua calls this with a valid state for the duration of the call.
            unsafe { $crate::lua::stack::protect(l, body) }
        }
    };
}
pub(crate) use lua_fn;

/// Runs the body of a Lua C function: returns its result count, or raises its misuse (or a
/// caught panic) as a plain string once every Rust value of the body has been dropped.
///
/// # Safety
/// `l` must be the state of the running C function.
pub unsafe fn protect<F>(l: *mut ffi::lua_State, body: F) -> c_int
where
    F: FnOnce(Stack<'_>) -> LResult<c_int>,
{
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `l` is valid for this call.
        body(unsafe { Stack::new(l) })
    }));
    let message = match result {
        Ok(Ok(n)) => return n,
        Ok(Err(Raise(m))) => m,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            format!("moonbridge internal error: {text}")
        }
    };
    // SAFETY: `l` is valid; the message is copied into Lua and dropped before lua_error
    // longjmps, so no destructor is skipped.
    unsafe {
        ffi::lua_pushlstring(l, message.as_ptr().cast(), message.len());
        drop(message);
        ffi::lua_error(l)
    }
}

/// What a yieldable C function (see [`lua_fn_k!`]) does next.
pub enum Flow {
    /// Return this many values.
    Return(c_int),
    /// Yield the top `n` values to the coroutine's resumer. When the coroutine is resumed
    /// (with no values), the function's body runs again on its original arguments, with
    /// `ctx` telling it how far it got.
    Yield { n: c_int, ctx: isize },
}

/// Defines a C function that may yield: the body sees `$s: Stack` and `$ctx: Option<isize>`
/// (`None` on the first run, the context of its last `Flow::Yield` when resumed) and
/// returns `LResult<Flow>`. Only yield where `Stack::is_yieldable` holds.
macro_rules! lua_fn_k {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($s:ident, $ctx:ident) $body:block) => {
        $(#[$meta])*
        $vis unsafe extern "C-unwind" fn $name(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
            fn body(
                $s: $crate::lua::stack::Stack<'_>,
                $ctx: Option<isize>,
            ) -> $crate::lua::stack::LResult<$crate::lua::stack::Flow> $body
            unsafe extern "C-unwind" fn resumed(
                l: *mut mlua::ffi::lua_State,
                _status: std::ffi::c_int,
                ctx: mlua::ffi::lua_KContext,
            ) -> std::ffi::c_int {
                // SAFETY: Lua calls the continuation with the state of the resumed call.
                unsafe { $crate::lua::stack::protect_k(l, Some(ctx as isize), body, resumed) }
            }
            // SAFETY: Lua calls this with a valid state for the duration of the call.
            unsafe { $crate::lua::stack::protect_k(l, None, body, resumed) }
        }
    };
}
pub(crate) use lua_fn_k;

/// [`protect`] for [`lua_fn_k!`]: a `Flow::Yield` yields (after every Rust value of the body
/// is dropped, as `lua_yieldk` longjmps) with `k` as the continuation.
///
/// # Safety
/// `l` must be the state of the running C function (or of its continuation).
pub unsafe fn protect_k(
    l: *mut ffi::lua_State,
    ctx: Option<isize>,
    body: fn(Stack<'_>, Option<isize>) -> LResult<Flow>,
    k: ffi::lua_KFunction,
) -> c_int {
    let mut flow = None;
    // SAFETY: as the caller guarantees; `protect` raises errors and panics.
    let n = unsafe {
        protect(l, |s| match body(s, ctx)? {
            Flow::Return(n) => Ok(n),
            f @ Flow::Yield { .. } => {
                flow = Some(f);
                Ok(0)
            }
        })
    };
    match flow {
        // SAFETY: the values to yield are on top; nothing of the body is alive any more.
        Some(Flow::Yield { n, ctx }) => unsafe { ffi::lua_yieldk(l, n, ctx as _, Some(k)) },
        _ => n,
    }
}

/// The stack of a running C function. Copyable; valid only during that call.
#[derive(Clone, Copy)]
pub struct Stack<'a> {
    l: *mut ffi::lua_State,
    _call: PhantomData<&'a ()>,
}

impl<'a> Stack<'a> {
    /// # Safety
    /// `l` must be a valid state that outlives `'a`.
    pub unsafe fn new(l: *mut ffi::lua_State) -> Self {
        Stack {
            l,
            _call: PhantomData,
        }
    }

    pub fn raw(self) -> *mut ffi::lua_State {
        self.l
    }

    pub fn top(self) -> c_int {
        // SAFETY: valid state (type invariant).
        unsafe { ffi::lua_gettop(self.l) }
    }

    pub fn type_of(self, i: c_int) -> c_int {
        // SAFETY: lua_type accepts any index, returning LUA_TNONE when out of range.
        unsafe { ffi::lua_type(self.l, i) }
    }

    pub fn is_nil(self, i: c_int) -> bool {
        self.type_of(i) <= ffi::LUA_TNIL
    }

    /// The type name for error messages: `__name` if the metatable has one, else the basic type.
    pub fn type_name(self, i: c_int) -> String {
        // SAFETY: valid state; luaL_getmetafield pushes a value only when it returns non-nil.
        unsafe {
            let i = ffi::lua_absindex(self.l, i);
            let t = ffi::luaL_getmetafield(self.l, i, c"__name".as_ptr());
            if t != ffi::LUA_TNIL {
                let name = self
                    .to_bytes(-1)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
                ffi::lua_pop(self.l, 1);
                if let Some(n) = name {
                    return n;
                }
            }
            let t = ffi::lua_type(self.l, i);
            CStr::from_ptr(ffi::lua_typename(self.l, t))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// `"<what> expected, got <type>"` for argument `i`.
    pub fn expected(self, i: c_int, n: i32, fname: &str, what: &str) -> Raise {
        let got = if self.type_of(i) == ffi::LUA_TNONE {
            "no value".to_string()
        } else {
            self.type_name(i)
        };
        bad_arg(n, fname, &format!("{what} expected, got {got}"))
    }

    /// The bytes of a string (or number, converted in place as Lua does) at `i`.
    pub fn to_bytes(self, i: c_int) -> Option<&'a [u8]> {
        let mut len = 0usize;
        // SAFETY: lua_tolstring gives null for anything but a string or a number (which it
        // converts in place); Lua keeps the string alive while it stays on the stack, which
        // is at least as long as this C call ('a).
        unsafe {
            let p = ffi::lua_tolstring(self.l, i, &mut len);
            (!p.is_null()).then(|| std::slice::from_raw_parts(p.cast(), len))
        }
    }

    pub fn check_bytes(self, i: c_int, n: i32, fname: &str) -> LResult<&'a [u8]> {
        self.to_bytes(i)
            .ok_or_else(|| self.expected(i, n, fname, "string"))
    }

    pub fn opt_bytes(self, i: c_int, n: i32, fname: &str) -> LResult<Option<&'a [u8]>> {
        if self.is_nil(i) {
            Ok(None)
        } else {
            self.check_bytes(i, n, fname).map(Some)
        }
    }

    /// An integer argument (floats with an exact integer value are accepted).
    pub fn check_integer(self, i: c_int, n: i32, fname: &str) -> LResult<i64> {
        // SAFETY: valid state; lua_tointegerx only reads the slot.
        unsafe {
            if ffi::lua_type(self.l, i) == ffi::LUA_TNUMBER {
                let mut ok = 0;
                let v = ffi::lua_tointegerx(self.l, i, &mut ok);
                if ok != 0 {
                    return Ok(v);
                }
                return Err(bad_arg(n, fname, "number has no integer representation"));
            }
        }
        Err(self.expected(i, n, fname, "number"))
    }

    pub fn opt_integer(self, i: c_int, n: i32, fname: &str) -> LResult<Option<i64>> {
        if self.is_nil(i) {
            Ok(None)
        } else {
            self.check_integer(i, n, fname).map(Some)
        }
    }

    pub fn check_number(self, i: c_int, n: i32, fname: &str) -> LResult<f64> {
        if self.type_of(i) == ffi::LUA_TNUMBER {
            // SAFETY: the slot holds a number.
            Ok(unsafe { ffi::lua_tonumber(self.l, i) })
        } else {
            Err(self.expected(i, n, fname, "number"))
        }
    }

    pub fn to_boolean(self, i: c_int) -> bool {
        // SAFETY: lua_toboolean accepts any index.
        unsafe { ffi::lua_toboolean(self.l, i) != 0 }
    }

    pub fn push_nil(self) {
        // SAFETY: valid state; Lua guarantees LUA_MINSTACK free slots in a C function.
        unsafe { ffi::lua_pushnil(self.l) }
    }

    pub fn push_bool(self, b: bool) {
        // SAFETY: see push_nil.
        unsafe { ffi::lua_pushboolean(self.l, b as c_int) }
    }

    pub fn push_int(self, v: i64) {
        // SAFETY: see push_nil.
        unsafe { ffi::lua_pushinteger(self.l, v) }
    }

    pub fn push_number(self, v: f64) {
        // SAFETY: see push_nil.
        unsafe { ffi::lua_pushnumber(self.l, v) }
    }

    pub fn push_bytes(self, b: &[u8]) {
        // SAFETY: Lua copies `b`; see push_nil for stack space.
        unsafe {
            ffi::lua_pushlstring(self.l, b.as_ptr().cast(), b.len());
        }
    }

    pub fn push_str(self, s: &str) {
        self.push_bytes(s.as_bytes())
    }

    pub fn push_value(self, i: c_int) {
        // SAFETY: see push_nil.
        unsafe { ffi::lua_pushvalue(self.l, i) }
    }

    pub fn pop(self, n: c_int) {
        // SAFETY: callers pop only what they pushed.
        unsafe { ffi::lua_pop(self.l, n) }
    }

    /// Makes room for `n` more values (raises "stack overflow" like luaL_checkstack).
    pub fn reserve(self, n: c_int) {
        // SAFETY: valid state; raises a Lua error on failure, before any Rust state changes.
        unsafe { ffi::luaL_checkstack(self.l, n, c"too many values".as_ptr()) }
    }

    /// The `nil, message` convention for runtime I/O failures.
    pub fn fail(self, message: &str) -> LResult<c_int> {
        self.push_nil();
        self.push_str(message);
        Ok(2)
    }

    /// The single mapping of core errors: I/O failure -> `nil, message`; misuse -> raise.
    pub fn handle_error(self, e: HandleError) -> LResult<c_int> {
        match e {
            HandleError::Io(msg) => self.fail(&msg),
            HandleError::Misuse(msg) => Err(Raise(msg.to_string())),
        }
    }

    /// `io::Error` as `nil, strerror`.
    pub fn fail_os(self, e: &std::io::Error) -> LResult<c_int> {
        self.fail(&crate::io::sys::error_text(e))
    }

    /// Sets `t[name] = f` for the table at `t`.
    pub fn set_function(self, t: c_int, name: &CStr, f: ffi::lua_CFunction) {
        // SAFETY: valid state; `t` is an absolute index of a table.
        unsafe {
            ffi::lua_pushcfunction(self.l, f);
            ffi::lua_setfield(self.l, t, name.as_ptr());
        }
    }

    /// Pushes a new table holding the functions of `sets`; returns its (absolute) index.
    pub fn push_functions(self, sets: &[Functions]) -> c_int {
        let n: usize = sets.iter().map(|f| f.len()).sum();
        self.new_table(0, n as c_int);
        let t = self.top();
        for set in sets {
            for (name, f) in set.iter() {
                self.set_function(t, name, *f);
            }
        }
        t
    }

    /// Absolute form of a stack index.
    pub fn abs(self, i: c_int) -> c_int {
        // SAFETY: valid state.
        unsafe { ffi::lua_absindex(self.l, i) }
    }

    /// Sets the top (drops values above `top`, or pushes nils up to it).
    pub fn set_top(self, top: c_int) {
        // SAFETY: valid state; callers reserve space before growing the stack.
        unsafe { ffi::lua_settop(self.l, top) }
    }

    /// Pushes a new table with room for `seq` sequence and `fields` other entries.
    pub fn new_table(self, seq: c_int, fields: c_int) {
        // SAFETY: valid state; callers reserve stack space.
        unsafe { ffi::lua_createtable(self.l, seq, fields) }
    }

    /// Pushes `t[n]` (raw) of the table at `t`; returns its type.
    pub fn raw_get_index(self, t: c_int, n: i64) -> c_int {
        // SAFETY: valid state; `t` holds a table (callers check).
        unsafe { ffi::lua_rawgeti(self.l, t, n as ffi::lua_Integer) }
    }

    /// Pops a value into `t[n]` (raw) of the table at `t`.
    pub fn raw_set_index(self, t: c_int, n: i64) {
        // SAFETY: valid state; `t` holds a table, the value is on top.
        unsafe { ffi::lua_rawseti(self.l, t, n as ffi::lua_Integer) }
    }

    /// Pops a key and pushes `t[key]` (raw) of the table at `t`; returns its type.
    pub fn raw_get(self, t: c_int) -> c_int {
        // SAFETY: valid state; `t` holds a table, the key is on top.
        unsafe { ffi::lua_rawget(self.l, t) }
    }

    /// Pops a key and a value (pushed in that order) into the table at `t` (raw).
    pub fn raw_set(self, t: c_int) {
        // SAFETY: valid state; `t` holds a table, key and value are on top.
        unsafe { ffi::lua_rawset(self.l, t) }
    }

    /// Pops a key and pushes `t[key]` of the value at `t` (metamethods apply, and may
    /// raise: call it before owning Rust values); returns its type.
    pub fn get_table(self, t: c_int) -> c_int {
        // SAFETY: valid state; the key is on top.
        unsafe { ffi::lua_gettable(self.l, t) }
    }

    /// Pops a key and a value (pushed in that order) into `t[key]` of the value at `t`
    /// (metamethods apply, and may raise: call it before owning Rust values).
    pub fn set_table(self, t: c_int) {
        // SAFETY: valid state; key and value are on top.
        unsafe { ffi::lua_settable(self.l, t) }
    }

    /// Pushes field `name` of the table at `t` (metamethods apply); returns its type.
    pub fn get_field(self, t: c_int, name: &CStr) -> c_int {
        // SAFETY: valid state; `t` holds a table (callers check). A metamethod may raise,
        // which callers allow by calling this before they own Rust values.
        unsafe { ffi::lua_getfield(self.l, t, name.as_ptr()) }
    }

    /// Pushes the metatable of the value at `i`; `false` (nothing pushed) if it has none.
    pub fn get_metatable(self, i: c_int) -> bool {
        // SAFETY: valid state; any index is accepted.
        unsafe { ffi::lua_getmetatable(self.l, i) != 0 }
    }

    /// Pops a table and makes it the metatable of the value at `i`.
    pub fn set_metatable(self, i: c_int) {
        // SAFETY: valid state; a table is on top.
        unsafe {
            ffi::lua_setmetatable(self.l, i);
        }
    }

    /// Pushes the uservalue of the userdata at `i`; returns its type.
    pub fn get_uservalue(self, i: c_int) -> c_int {
        // SAFETY: valid state; `i` holds a full userdata (callers check).
        unsafe { ffi::lua_getuservalue(self.l, i) }
    }

    /// Pops a value into the uservalue of the userdata at `i`.
    pub fn set_uservalue(self, i: c_int) {
        // SAFETY: valid state; `i` holds a full userdata, the value is on top.
        unsafe {
            ffi::lua_setuservalue(self.l, i);
        }
    }

    /// The address identifying the object at `i` (null for non-objects), for identity.
    pub fn to_pointer(self, i: c_int) -> *const std::ffi::c_void {
        // SAFETY: valid state; any index is accepted.
        unsafe { ffi::lua_topointer(self.l, i) }
    }

    /// Replaces the value at `i` by `tostring(value)` (its `__tostring` may raise, so
    /// call this before owning Rust values).
    pub fn to_string_in_place(self, i: c_int) {
        let i = self.abs(i);
        self.reserve(1);
        // SAFETY: valid state with room for one value; luaL_tolstring pushes one string.
        unsafe {
            ffi::luaL_tolstring(self.l, i, ptr::null_mut());
            ffi::lua_replace(self.l, i);
        }
    }

    /// The raw length (`#` without metamethods) of the value at `i`.
    pub fn raw_len(self, i: c_int) -> usize {
        // SAFETY: valid state; any index is accepted.
        unsafe { ffi::lua_rawlen(self.l, i) }
    }

    /// Table iteration: pops a key and pushes the next key and its value (true), or pushes
    /// nothing at the end (false). Start with a nil key.
    pub fn next(self, t: c_int) -> bool {
        // SAFETY: valid state; `t` holds a table and a key is on top (callers keep it).
        unsafe { ffi::lua_next(self.l, t) != 0 }
    }

    /// Pops a value into field `name` of the table at `t` (metamethods apply).
    pub fn set_field(self, t: c_int, name: &CStr) {
        // SAFETY: valid state; `t` holds a table, the value is on top. Used on tables this
        // layer made (no metamethod raises).
        unsafe { ffi::lua_setfield(self.l, t, name.as_ptr()) }
    }

    /// Moves the top value to index `i`, shifting the values above it up.
    pub fn insert(self, i: c_int) {
        // SAFETY: valid state; `i` is a valid index.
        unsafe { ffi::lua_insert(self.l, i) }
    }

    /// Removes the value at `i`, shifting the values above it down.
    pub fn remove(self, i: c_int) {
        // SAFETY: valid state; `i` is a valid index.
        unsafe { ffi::lua_remove(self.l, i) }
    }

    /// Pushes `f` as a closure over the top `upvalues` values (popped).
    pub fn push_closure(self, f: CFunction, upvalues: c_int) {
        // SAFETY: valid state; the upvalues are on top.
        unsafe { ffi::lua_pushcclosure(self.l, f, upvalues) }
    }

    /// Pushes the registry table `name` for a metatable, created (with `__name`) if new.
    pub fn new_metatable(self, name: &CStr) {
        // SAFETY: valid state; callers reserve stack space.
        unsafe {
            ffi::luaL_newmetatable(self.l, name.as_ptr());
        }
    }

    /// Pushes the registry value stored under the light key `key`; returns its type.
    pub fn registry_get(self, key: *const std::ffi::c_void) -> c_int {
        // SAFETY: valid state; a light-userdata key is only compared, never dereferenced.
        unsafe { ffi::lua_rawgetp(self.l, ffi::LUA_REGISTRYINDEX, key) }
    }

    /// Pushes the weak-keyed table stored in the registry under `key`, made (with room
    /// for `size` keys) on first use.
    pub fn registry_weak_table(self, key: *const std::ffi::c_void, size: c_int) {
        self.reserve(3);
        if self.registry_get(key) != ffi::LUA_TTABLE {
            self.pop(1);
            self.new_table(0, size);
            self.new_table(0, 1);
            self.push_str("k");
            self.set_field(-2, c"__mode");
            self.set_metatable(-2);
            self.push_value(-1);
            self.registry_set(key);
        }
    }

    /// Pops a value into the registry under the light key `key`.
    pub fn registry_set(self, key: *const std::ffi::c_void) {
        // SAFETY: as in registry_get; the value is on top.
        unsafe { ffi::lua_rawsetp(self.l, ffi::LUA_REGISTRYINDEX, key) }
    }

    /// The number at `i` (strings are not converted), if it is one.
    pub fn to_number(self, i: c_int) -> Option<f64> {
        // SAFETY: valid state; the slot is read only when it holds a number.
        (self.type_of(i) == ffi::LUA_TNUMBER).then(|| unsafe { ffi::lua_tonumber(self.l, i) })
    }

    /// The integer at `i`, if it is a number with an exact integer value.
    pub fn to_integer(self, i: c_int) -> Option<i64> {
        if self.type_of(i) != ffi::LUA_TNUMBER {
            return None;
        }
        let mut ok = 0;
        // SAFETY: valid state; the slot holds a number.
        let v = unsafe { ffi::lua_tointegerx(self.l, i, &mut ok) };
        (ok != 0).then_some(v)
    }

    /// Loads a text chunk of this library (embedded Lua glue) and calls it with the top
    /// `nargs` values, keeping `nresults` results. A syntax or runtime error is raised
    /// (longjmp), so call this only where no Rust value owns anything: while a module is
    /// being opened, under mlua's protected `exec_raw`.
    pub fn run_chunk(self, code: &str, name: &CStr, nargs: c_int, nresults: c_int) {
        // SAFETY: valid state in protected mode; the chunk is pushed below its arguments.
        unsafe {
            if ffi::luaL_loadbufferx(
                self.l,
                code.as_ptr().cast(),
                code.len(),
                name.as_ptr(),
                c"t".as_ptr(),
            ) != ffi::LUA_OK
            {
                ffi::lua_error(self.l);
            }
            ffi::lua_insert(self.l, -(nargs + 1));
            ffi::lua_call(self.l, nargs, nresults);
        }
    }

    /// Bytes in use by this Lua state (`collectgarbage("count")` in bytes).
    pub fn gc_bytes(self) -> usize {
        // SAFETY: valid state; LUA_GCCOUNT/COUNTB only read the collector's counters.
        unsafe {
            ffi::lua_gc(self.l, ffi::LUA_GCCOUNT, 0) as usize * 1024
                + ffi::lua_gc(self.l, ffi::LUA_GCCOUNTB, 0) as usize
        }
    }

    /// Whether the running function may yield (it runs in a coroutine, with no C call that
    /// cannot be resumed between it and the coroutine's start).
    pub fn is_yieldable(self) -> bool {
        // SAFETY: valid state.
        unsafe { ffi::lua_isyieldable(self.l) != 0 }
    }

    /// Pushes the running thread (coroutine); true for the main thread.
    pub fn push_thread(self) -> bool {
        // SAFETY: valid state; callers reserve stack space.
        unsafe { ffi::lua_pushthread(self.l) != 0 }
    }

    /// Pushes a light userdata (an address used as an identity, never dereferenced).
    pub fn push_light(self, p: *const std::ffi::c_void) {
        // SAFETY: valid state; the pointer is stored, not dereferenced.
        unsafe { ffi::lua_pushlightuserdata(self.l, p as *mut std::ffi::c_void) }
    }
}
