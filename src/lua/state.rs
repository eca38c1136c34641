//! The raw Lua C API, wrapped once: argument checks, pushes, userdata types, and the one
//! place where errors are mapped (I/O failure -> `nil, message`; misuse -> plain-string error).
//!
//! Functions exposed to Lua are written with [`lua_fn!`]: the body runs under
//! `catch_unwind`, returns `Ok(nresults)` or `Err(Misuse)`, and only after every Rust value
//! is dropped is a misuse raised with `lua_error` (which longjmps).

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr;

use mlua::ffi;

use crate::io::HandleError;

/// A misuse error: raised in Lua as a plain string.
#[derive(Debug)]
pub struct Misuse(pub String);

pub type LResult<T> = Result<T, Misuse>;

/// `bad argument #n to 'fname' (msg)`: the message format of Lua's own `luaL_argerror`.
/// For methods, `n` counts arguments after `self`, as Lua does for method calls.
pub fn bad_arg(n: i32, fname: &str, msg: &str) -> Misuse {
    Misuse(format!("bad argument #{n} to '{fname}' ({msg})"))
}

/// Defines a Lua C function. The body sees `$s: Stack` and returns `LResult<c_int>`.
macro_rules! lua_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($s:ident) $body:block) => {
        $(#[$meta])*
        $vis unsafe extern "C-unwind" fn $name(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
            // A nested fn keeps the body out of the `unsafe` block below.
            fn body($s: $crate::lua::state::Stack<'_>) -> $crate::lua::state::LResult<std::ffi::c_int> $body
            // SAFETY: Lua calls this with a valid state for the duration of the call.
            unsafe { $crate::lua::state::protect(l, body) }
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
        Ok(Err(Misuse(m))) => m,
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
    pub fn expected(self, i: c_int, n: i32, fname: &str, what: &str) -> Misuse {
        let got = if self.type_of(i) == ffi::LUA_TNONE {
            "no value".to_string()
        } else {
            self.type_name(i)
        };
        bad_arg(n, fname, &format!("{what} expected, got {got}"))
    }

    /// The bytes of a string (or number, converted in place as Lua does) at `i`.
    pub fn to_bytes(self, i: c_int) -> Option<&'a [u8]> {
        let t = self.type_of(i);
        if t != ffi::LUA_TSTRING && t != ffi::LUA_TNUMBER {
            return None;
        }
        let mut len = 0usize;
        // SAFETY: the value is a string or number; Lua keeps the string alive while it stays
        // on the stack, which is at least as long as this C call ('a).
        unsafe {
            let p = ffi::lua_tolstring(self.l, i, &mut len);
            Some(std::slice::from_raw_parts(p.cast(), len))
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
            HandleError::Misuse(msg) => Err(Misuse(msg.to_string())),
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

    /// Pops a key and a value (pushed in that order) into the table at `t` (raw).
    pub fn raw_set(self, t: c_int) {
        // SAFETY: valid state; `t` holds a table, key and value are on top.
        unsafe { ffi::lua_rawset(self.l, t) }
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
}

/// Typed readers of the fields of an options table at stack index `t`, with errors that
/// name the function and the field.
#[derive(Clone, Copy)]
pub struct Fields<'a> {
    s: Stack<'a>,
    t: c_int,
    fname: &'a str,
}

impl<'a> Fields<'a> {
    /// The table at argument `t` of `fname`.
    pub fn new(s: Stack<'a>, t: c_int, fname: &'a str) -> LResult<Self> {
        if s.type_of(t) != ffi::LUA_TTABLE {
            return Err(s.expected(t, t, fname, "table"));
        }
        Ok(Fields {
            s,
            t: s.abs(t),
            fname,
        })
    }

    fn bad(self, name: &CStr, what: &str) -> Misuse {
        Misuse(format!(
            "bad field '{}' in '{}' ({what} expected)",
            name.to_string_lossy(),
            self.fname
        ))
    }

    /// Runs `read` with the field pushed, then pops it.
    fn with<T>(self, name: &CStr, read: impl FnOnce(Stack<'a>) -> LResult<T>) -> LResult<T> {
        self.s.reserve(1);
        self.s.get_field(self.t, name);
        let r = read(self.s);
        self.s.pop(1);
        r
    }

    /// A non-negative integer field (required: defaults belong to the caller's side).
    pub fn size(self, name: &CStr) -> LResult<usize> {
        self.with(name, |s| {
            if s.type_of(-1) != ffi::LUA_TNUMBER {
                return Err(self.bad(name, "non-negative integer"));
            }
            // SAFETY: valid state; the field is on top and is a number.
            let (v, ok) = unsafe {
                let mut ok = 0;
                let v = ffi::lua_tointegerx(s.raw(), -1, &mut ok);
                (v, ok != 0)
            };
            match usize::try_from(v) {
                Ok(v) if ok => Ok(v),
                _ => Err(self.bad(name, "non-negative integer")),
            }
        })
    }

    /// Seconds as a duration; nil (or a value too large to represent) = none.
    pub fn seconds(self, name: &CStr) -> LResult<Option<std::time::Duration>> {
        self.with(name, |s| {
            if s.is_nil(-1) {
                return Ok(None);
            }
            if s.type_of(-1) != ffi::LUA_TNUMBER {
                return Err(self.bad(name, "non-negative number"));
            }
            // SAFETY: valid state; the field is on top and is a number.
            let v = unsafe { ffi::lua_tonumberx(s.raw(), -1, ptr::null_mut()) };
            if v.is_nan() || v < 0.0 {
                return Err(self.bad(name, "non-negative number"));
            }
            Ok(std::time::Duration::try_from_secs_f64(v).ok())
        })
    }

    /// A string field, copied (required).
    pub fn bytes(self, name: &CStr) -> LResult<Vec<u8>> {
        self.with(name, |s| {
            if s.type_of(-1) != ffi::LUA_TSTRING {
                return Err(self.bad(name, "string"));
            }
            Ok(s.to_bytes(-1).unwrap_or_default().to_vec())
        })
    }
}

/// A Rust value living inside a Lua userdata, with its own metatable.
///
/// The userdata holds `Option<T>`: `None` once `__gc` ran. Fields that are not methods are
/// answered by [`LuaObject::push_field`], then by a per-object table of user fields.
pub trait LuaObject: Sized + 'static {
    /// Metatable registry key and `__name`.
    const TNAME: &'static CStr;
    /// Methods implemented in Rust.
    fn methods() -> &'static [(&'static CStr, ffi::lua_CFunction)];
    /// Pushes the built-in field `key` and returns true, or returns false.
    fn push_field(&self, _s: Stack<'_>, _key: &[u8]) -> bool {
        false
    }
    /// `__tostring` text.
    fn describe(&self) -> String;
    /// `__close` (Lua 5.4 to-be-closed variables): release without raising.
    #[cfg_attr(not(feature = "lua54"), allow(dead_code))]
    fn on_close(&mut self) {}
    /// Strings given to every method as upvalues 2, 3, ... (see [`push_upvalue`]), so hot
    /// paths push them without hashing a C string each time.
    const UPVALUE_STRINGS: &'static [&'static str] = &[];
    /// Built-in fields stored in a new object's field table (values from `push_field`).
    const FIELDS: &'static [&'static CStr] = &[];
}

/// The block of an object's userdata: its type's id, then the value (`None` once `__gc`
/// ran). The id, not the metatable, proves the type: Lua code cannot write into a
/// userdata, while it can change metatables (`getmetatable(io.stdout)` is writable), and
/// reading it costs no Lua API call.
#[repr(C)]
struct Block<T> {
    id: std::any::TypeId,
    value: Option<T>,
}

/// Registry key of the metatable of `T`'s field tables (`{__index = methods}`).
fn fields_mt_key<T: LuaObject>() -> *const std::ffi::c_void {
    // SAFETY (of the pointer arithmetic): TNAME has at least its NUL byte, so +1 stays
    // within or one past the allocation; the pointer is only used as a unique key.
    T::TNAME.as_ptr().wrapping_add(1).cast()
}

/// The registry key of `T`'s template metatable: the address of its name, unique per type.
/// Looking it up with `lua_rawgetp` avoids hashing the name as `luaL_testudata` does.
fn metatable_key<T: LuaObject>() -> *const std::ffi::c_void {
    T::TNAME.as_ptr().cast()
}

/// Pushes upvalue `n` (1-based among [`LuaObject::UPVALUE_STRINGS`]) of the running method.
pub fn push_upvalue(s: Stack<'_>, n: c_int) {
    // SAFETY: methods are registered with these upvalues; a missing upvalue reads as none
    // (pushes nil), which is safe.
    unsafe { ffi::lua_pushvalue(s.l, ffi::lua_upvalueindex(n)) }
}

/// Pushes a new userdata holding `value`.
///
/// Each object gets its own small metatable, copied from `T`'s template, whose `__index`
/// and `__newindex` are a per-object field table; that table's metatable has `__index =`
/// the methods table. So `obj:method()` and `obj.field` are plain table look-ups inside the
/// VM (no C call), and user fields (`obj.foo = 42`) live beside the built-in ones.
pub fn push_object<T: LuaObject>(s: Stack<'_>, value: T) -> &mut T {
    s.reserve(6);
    // SAFETY: Lua returns a block of the requested size aligned for any standard type
    // (LUAI_MAXALIGN covers our structs' 8-byte alignment, checked below); we initialise it
    // before anything can observe it, and `__gc` drops it exactly once. Every other push is
    // balanced before returning, leaving only the userdata.
    unsafe {
        let l = s.l;
        // Lua aligns userdata blocks to 8 bytes only (LUAI_MAXALIGN): refuse, at compile
        // time, a type that needs more (box its over-aligned parts instead).
        const { assert!(std::mem::align_of::<Block<T>>() <= 8) };
        let p = ffi::lua_newuserdata(l, std::mem::size_of::<Block<T>>()) as *mut Block<T>;
        ptr::write(
            p,
            Block {
                id: std::any::TypeId::of::<T>(),
                value: Some(value),
            },
        );
        let ud = ffi::lua_gettop(l);
        let obj = (*p).value.as_mut().expect("just written");

        ffi::lua_createtable(l, 0, T::FIELDS.len() as c_int);
        let fields = ffi::lua_gettop(l);
        ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, fields_mt_key::<T>());
        ffi::lua_setmetatable(l, fields);
        for name in T::FIELDS {
            if obj.push_field(s, name.to_bytes()) {
                ffi::lua_setfield(l, fields, name.as_ptr());
            }
        }

        ffi::lua_createtable(l, 0, 8);
        let mt = ffi::lua_gettop(l);
        ffi::lua_rawgetp(l, ffi::LUA_REGISTRYINDEX, metatable_key::<T>());
        let template = ffi::lua_gettop(l);
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, template) != 0 {
            ffi::lua_pushvalue(l, -2);
            ffi::lua_insert(l, -2);
            ffi::lua_rawset(l, mt);
        }
        ffi::lua_pop(l, 1); // template
        ffi::lua_pushvalue(l, fields);
        ffi::lua_setfield(l, mt, c"__index".as_ptr());
        ffi::lua_pushvalue(l, fields);
        ffi::lua_setfield(l, mt, c"__newindex".as_ptr());
        ffi::lua_setmetatable(l, ud);
        ffi::lua_settop(l, ud);
        obj
    }
}

/// Sets field `name` of the object at `obj` to the value on top of the stack (popped).
pub fn set_object_field(s: Stack<'_>, obj: c_int, name: &CStr) {
    // SAFETY: objects made by `push_object` have a metatable whose `__index` is their field
    // table; anything else just drops the value.
    unsafe {
        let l = s.l;
        let obj = ffi::lua_absindex(l, obj);
        if ffi::lua_getmetatable(l, obj) != 0 {
            if ffi::lua_getfield(l, -1, c"__index".as_ptr()) == ffi::LUA_TTABLE {
                ffi::lua_pushvalue(l, -3);
                ffi::lua_setfield(l, -2, name.as_ptr());
            }
            ffi::lua_pop(l, 2);
        }
        ffi::lua_pop(l, 1);
    }
}

/// The value slot of the userdata at `i` if it is a `T` object (see [`Block`]), else null.
fn object_slot<T: LuaObject>(s: Stack<'_>, i: c_int) -> *mut Option<T> {
    let id = std::any::TypeId::of::<T>();
    // SAFETY: a full userdata of exactly `Block<T>`'s size has at least the id's bytes,
    // compared with memcmp (a foreign block's bytes are not read as a Rust value). Only a
    // `Block<T>` written by `push_object` carries `T`'s id, and Lua aligns userdata blocks
    // for it (asserted in `push_object`).
    unsafe {
        if ffi::lua_type(s.l, i) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(s.l, i) != std::mem::size_of::<Block<T>>()
        {
            return ptr::null_mut();
        }
        let p = ffi::lua_touserdata(s.l, i) as *mut Block<T>;
        let same = libc::memcmp(
            p.cast(),
            (&id as *const std::any::TypeId).cast(),
            std::mem::size_of::<std::any::TypeId>(),
        ) == 0;
        if !same {
            return ptr::null_mut();
        }
        ptr::addr_of_mut!((*p).value)
    }
}

/// The object at stack index `i`, if it is a live `T`.
pub fn to_object<'a, T: LuaObject>(s: Stack<'a>, i: c_int) -> Option<&'a mut T> {
    let p = object_slot::<T>(s, i);
    // SAFETY: the metatable check guarantees the block holds an `Option<T>` written by
    // `push_object`; Lua keeps it alive while it is on the stack.
    unsafe { p.as_mut().and_then(|o| o.as_mut()) }
}

/// The value slot of the `T` userdata at `i`, for a caller that keeps it beyond this call.
/// The pointer stays valid as long as the userdata is referenced from Lua (blocks never
/// move); the slot may become `None` when `__gc` runs.
pub fn object_slot_ptr<T: LuaObject>(s: Stack<'_>, i: c_int) -> Option<ptr::NonNull<Option<T>>> {
    ptr::NonNull::new(object_slot::<T>(s, i))
}

/// Moves the value out of the `T` userdata at `i`, leaving it empty (later method calls
/// on it fail as on a wrong type). Used when ownership passes to Rust, as listeners do to
/// the server.
pub fn take_object<T: LuaObject>(s: Stack<'_>, i: c_int) -> Option<T> {
    let p = object_slot::<T>(s, i);
    // SAFETY: as in `to_object`; `take` leaves a valid `None` behind for `__gc`.
    unsafe { p.as_mut().and_then(|o| o.take()) }
}

/// `self` of a method, or a misuse error naming the method.
pub fn check_self<'a, T: LuaObject>(s: Stack<'a>, fname: &str) -> LResult<&'a mut T> {
    let p = object_slot::<T>(s, 1);
    // SAFETY: as in `to_object`.
    unsafe { p.as_mut().and_then(|o| o.as_mut()) }.ok_or_else(|| {
        let got = if s.type_of(1) == ffi::LUA_TNONE {
            "no value".to_string()
        } else {
            s.type_name(1)
        };
        Misuse(format!(
            "bad self to '{fname}' ({} expected, got {got})",
            T::TNAME.to_string_lossy()
        ))
    })
}

/// Registers `T`: its template metatable (`__name`, `__gc`, `__tostring`, `__close`), its
/// methods (closures with the `UPVALUE_STRINGS` as upvalues), and the metatable of its
/// field tables. Leaves the methods table on the stack, for the Lua glue.
pub fn register_type<T: LuaObject>(s: Stack<'_>) {
    s.reserve(6);
    // SAFETY: valid state with stack space reserved above.
    unsafe {
        let l = s.raw();
        ffi::luaL_newmetatable(l, T::TNAME.as_ptr()); // sets __name too
        let mt = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, mt);
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, metatable_key::<T>());
        s.set_function(mt, c"__gc", gc_object::<T>);
        s.set_function(mt, c"__tostring", tostring_object::<T>);
        #[cfg(feature = "lua54")]
        s.set_function(mt, c"__close", close_object::<T>);
        ffi::lua_createtable(l, 0, T::methods().len() as c_int);
        let methods = ffi::lua_gettop(l);
        let upvalues = T::UPVALUE_STRINGS.len() as c_int;
        s.reserve(upvalues);
        for (name, f) in T::methods() {
            for u in T::UPVALUE_STRINGS {
                s.push_str(u);
            }
            ffi::lua_pushcclosure(l, *f, upvalues);
            ffi::lua_setfield(l, methods, name.as_ptr());
        }
        ffi::lua_createtable(l, 0, 1);
        ffi::lua_pushvalue(l, methods);
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_rawsetp(l, ffi::LUA_REGISTRYINDEX, fields_mt_key::<T>());
        ffi::lua_remove(l, mt);
    }
}

unsafe extern "C-unwind" fn gc_object<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: `object_slot` checks that argument 1 is a `T` block (a script can call a
    // `__gc` it found in a metatable with anything).
    unsafe {
        protect(l, |s| {
            if let Some(slot) = object_slot::<T>(s, 1).as_mut() {
                drop(slot.take());
            }
            Ok(0)
        })
    }
}

#[cfg(feature = "lua54")]
unsafe extern "C-unwind" fn close_object<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: __close is installed only on T's metatable.
    unsafe {
        protect(l, |s| {
            if let Some(obj) = to_object::<T>(s, 1) {
                obj.on_close();
            }
            Ok(0)
        })
    }
}

unsafe extern "C-unwind" fn tostring_object<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: called by Lua as __tostring(self).
    unsafe {
        protect(l, |s| {
            let text = match to_object::<T>(s, 1) {
                Some(obj) => obj.describe(),
                None => format!("{} (collected)", T::TNAME.to_string_lossy()),
            };
            s.push_str(&text);
            Ok(1)
        })
    }
}
