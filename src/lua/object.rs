//! The userdata object model: a Rust value inside a Lua userdata, its type proof, its
//! per-object field table and metatable, and the `__gc`/`__tostring`/`__close` methods.

use std::ffi::{c_int, CStr};
use std::ptr;

use mlua::ffi;

use crate::lua::stack::{protect, Functions, LResult, Raise, Stack};

/// A Rust value living inside a Lua userdata, with its own metatable.
///
/// The userdata holds `Option<T>`: `None` once `__gc` ran. Fields that are not methods are
/// answered by [`LuaObject::push_field`], then by a per-object table of user fields.
pub trait LuaObject: Sized + 'static {
    /// Metatable registry key and `__name`.
    const TNAME: &'static CStr;
    /// Methods implemented in Rust.
    fn methods() -> Functions;
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
    /// Built-in fields, computed by `push_field` on first access and then kept in the
    /// object's field table (a socket's addresses cost nothing until a handler asks).
    const FIELDS: &'static [&'static CStr] = &[];
    /// Objects only this library's Lua glue sees (an HTTP connection): no field table and
    /// no metatable of their own, just the shared one (`__index` = the methods).
    const SHARED_METATABLE: bool = false;
}

/// The block of an object's userdata: its type's id, then the value (`None` once `__gc`
/// ran). The id, not the metatable, proves the type: Lua code cannot write into a
/// userdata, while it can change metatables (`getmetatable(io.stdout)` is writable), and
/// reading it costs no Lua API call.
#[repr(C)]
struct Block<T> {
    id: std::any::TypeId,
    stage: Stage,
    value: Option<T>,
}

/// Which metatable an object of a type without `SHARED_METATABLE` has, or is due.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The type's lazy metatable: not indexed yet.
    Lazy,
    /// Its own metatable and field table (see [`upgrade`]).
    Own,
    /// Retired (see [`retire`]): the shared metatable, or still the lazy one, which then
    /// hands out the shared one on the first indexing.
    Retired,
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

/// The registry key of `T`'s shared metatable (`__index` = the methods), which retired
/// objects (see [`retire`]) and `SHARED_METATABLE` types have.
fn shared_key<T: LuaObject>() -> *const std::ffi::c_void {
    // SAFETY (of the pointer arithmetic): as in `fields_mt_key`; only used as a key.
    T::TNAME.as_ptr().wrapping_add(2).cast()
}

/// The registry key of `T`'s methods table; in a field table, the key of its object.
fn methods_key<T: LuaObject>() -> *const std::ffi::c_void {
    // SAFETY (of the pointer arithmetic): TNAME is a type name of more than 3 bytes; only
    // used as a key.
    T::TNAME.as_ptr().wrapping_add(3).cast()
}

/// Pushes upvalue `n` (1-based among [`LuaObject::UPVALUE_STRINGS`]) of the running method.
pub fn push_upvalue(s: Stack<'_>, n: c_int) {
    // methods are registered with these upvalues; a missing one reads as nil
    s.push_value(ffi::lua_upvalueindex(n))
}

/// Pushes a new userdata holding `value`.
///
/// Each object used from Lua gets its own small metatable, copied from `T`'s template,
/// whose `__index` and `__newindex` are a per-object field table; that table's metatable
/// has `__index =` the methods table (or, for a type with `FIELDS`, a function that finds
/// the method or computes the field and keeps it in the field table). So `obj:method()`
/// and `obj.field` are plain table look-ups inside the VM (no C call) from their second
/// use on, and user fields (`obj.foo = 42`) live beside the built-in ones.
///
/// Those two tables are made on the object's first indexing (see [`upgrade`]): until then
/// it has its type's lazy metatable, whose `__index` and `__newindex` make them. An HTTP
/// connection's socket, used only by Rust, never pays for them (they were a sixth of the
/// instructions of a `Connection: close` request). `SHARED_METATABLE` types get the type's
/// shared metatable instead.
pub fn push_object<T: LuaObject>(s: Stack<'_>, value: T) -> &mut T {
    s.reserve(7);
    // Lua aligns userdata blocks to 8 bytes only (LUAI_MAXALIGN): refuse, at compile time, a
    // type that needs more (box its over-aligned parts instead).
    const { assert!(std::mem::align_of::<Block<T>>() <= 8) };
    // The object's metatable first (a type first used here is registered now): making it
    // may raise, which must happen before `value` is in a block that has no `__gc` yet.
    if T::SHARED_METATABLE {
        push_shared_metatable::<T>(s);
    } else {
        push_lazy_metatable::<T>(s);
    }
    let mt = s.top();
    // SAFETY: Lua returns a block of the requested size aligned to 8 bytes (asserted above to
    // be enough); it is initialised before anything can observe it, and `__gc` drops it
    // exactly once. The block never moves, so the reference lives as long as the userdata,
    // which stays on the stack for this call.
    let obj = unsafe {
        let p = ffi::lua_newuserdata(s.raw(), std::mem::size_of::<Block<T>>()) as *mut Block<T>;
        ptr::write(
            p,
            Block {
                id: std::any::TypeId::of::<T>(),
                stage: Stage::Lazy,
                value: Some(value),
            },
        );
        (*p).value.as_mut().expect("just written")
    };
    let ud = s.top();
    s.push_value(mt);
    s.set_metatable(ud);
    s.remove(mt); // the userdata moves down into its place
    obj
}

/// Gives the `T` object at `ud` (absolute index) its own metatable and field table (see
/// [`push_object`]). Leaves the stack as it was.
fn upgrade<T: LuaObject>(s: Stack<'_>, ud: c_int) {
    let Some(stage) = stage_of::<T>(s, ud) else {
        return;
    };
    // SAFETY: `stage_of` points at the stage of a live block (only that field: a method
    // may hold a reference to the value); Lua runs one C function at a time.
    match unsafe { *stage } {
        Stage::Lazy => {}
        Stage::Retired => {
            // retired before it was ever indexed: it gets what `retire` would have given
            push_shared_metatable::<T>(s);
            s.set_metatable(ud);
            return;
        }
        Stage::Own => return,
    }
    s.reserve(6);
    let top = s.top();
    s.registry_get(metatable_key::<T>()); // exists: a `T` object was made from it
    let template = s.top();
    // room for the object, a built-in field or two and the methods a handler uses
    s.new_table(0, if T::FIELDS.is_empty() { 0 } else { 4 });
    let fields = s.top();
    s.registry_get(fields_mt_key::<T>());
    s.set_metatable(fields);
    if !T::FIELDS.is_empty() {
        // for `lazy_index`; a cycle the collector handles like any other
        s.push_light(methods_key::<T>());
        s.push_value(ud);
        s.raw_set(fields);
    }
    let mt = copy_table(s, template, 8);
    s.push_value(fields);
    s.set_field(mt, c"__index");
    s.push_value(fields);
    s.set_field(mt, c"__newindex");
    s.set_metatable(ud);
    s.set_top(top);
    // (only now: should making the tables raise, the object stays lazy and tries again)
    // SAFETY: as above.
    unsafe { *stage = Stage::Own };
}

/// The registry key of `T`'s lazy metatable (objects not indexed yet).
fn lazy_key<T: LuaObject>() -> *const std::ffi::c_void {
    // SAFETY (of the pointer arithmetic): as in `methods_key` (type names are longer than
    // 4 bytes); only used as a key.
    T::TNAME.as_ptr().wrapping_add(4).cast()
}

/// Pushes `T`'s lazy metatable (the template's metamethods; `__index` and `__newindex`
/// upgrade the object, then index it again), made on first use; `T` is registered.
fn push_lazy_metatable<T: LuaObject>(s: Stack<'_>) {
    push_template_copy::<T>(s, lazy_key::<T>(), |s, mt| {
        s.set_function(mt, c"__index", upgrade_index::<T>);
        s.set_function(mt, c"__newindex", upgrade_newindex::<T>);
    });
}

/// Pushes the metatable kept in the registry under `key`, made on first use: a copy of
/// `T`'s template (the metamethods) that `fill` completes (given its index, with room for
/// one more value on the stack); `T` is registered if it was not.
fn push_template_copy<T: LuaObject>(
    s: Stack<'_>,
    key: *const std::ffi::c_void,
    fill: fn(Stack<'_>, c_int),
) {
    s.reserve(4);
    if s.registry_get(key) == ffi::LUA_TTABLE {
        return;
    }
    s.pop(1);
    if s.registry_get(metatable_key::<T>()) != ffi::LUA_TTABLE {
        s.pop(1);
        register_type::<T>(s);
        s.pop(1); // its methods table
        s.registry_get(metatable_key::<T>());
    }
    let template = s.top();
    let mt = copy_table(s, template, 6);
    fill(s, mt);
    s.remove(template);
    s.push_value(-1);
    s.registry_set(key);
}

/// `__index` of the lazy metatable: (object, key) -> `object[key]` once upgraded.
unsafe extern "C-unwind" fn upgrade_index<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: installed as `__index` of `T`'s lazy metatable; a script calling it by hand
    // with anything else gets nil (the block check below).
    unsafe {
        protect(l, |s| {
            s.set_top(2);
            if object_slot::<T>(s, 1).is_null() {
                s.push_nil();
                return Ok(1);
            }
            upgrade::<T>(s, 1);
            s.reserve(1);
            s.push_value(2);
            s.get_table(1);
            Ok(1)
        })
    }
}

/// `__newindex` of the lazy metatable: (object, key, value) sets `object[key] = value`
/// once upgraded.
unsafe extern "C-unwind" fn upgrade_newindex<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as in `upgrade_index`.
    unsafe {
        protect(l, |s| {
            s.set_top(3);
            if object_slot::<T>(s, 1).is_null() {
                return Ok(0);
            }
            upgrade::<T>(s, 1);
            s.set_table(1);
            Ok(0)
        })
    }
}

/// Pushes `T`'s shared metatable (the template's metamethods, `__index` = the methods),
/// made on first use; `T` is registered.
fn push_shared_metatable<T: LuaObject>(s: Stack<'_>) {
    push_template_copy::<T>(s, shared_key::<T>(), |s, mt| {
        s.registry_get(methods_key::<T>());
        s.set_field(mt, c"__index");
    });
}

/// Pushes a shallow copy of the table at `src` (sized for `size` fields); returns its index.
fn copy_table(s: Stack<'_>, src: c_int, size: c_int) -> c_int {
    s.new_table(0, size);
    let copy = s.top();
    s.push_nil();
    while s.next(src) {
        s.push_value(-2);
        s.insert(-2);
        s.raw_set(copy);
    }
    copy
}

/// Retires the `T` object at `i` (anything else is left alone): it gets its type's shared
/// metatable (the metamethods, `__index` = the methods), dropping its own metatable and
/// field table; its built-in and user fields read as nil from then on, its methods still
/// work. For objects whose use is over, such as a connection's socket once the connection
/// ended: an object with a finalizer keeps what it references alive for one more
/// collection cycle, and those two tables are a good part of a short connection's garbage.
///
/// An object never indexed (most sockets of HTTP connections) has no tables to drop: it
/// is only marked, and gets the shared metatable if it is ever indexed again (no Lua call
/// here). `SHARED_METATABLE` objects have it already.
pub fn retire<T: LuaObject>(s: Stack<'_>, i: c_int) {
    if T::SHARED_METATABLE {
        return;
    }
    let Some(stage) = stage_of::<T>(s, i) else {
        return;
    };
    // SAFETY: as in `upgrade`.
    match std::mem::replace(unsafe { &mut *stage }, Stage::Retired) {
        Stage::Own => {
            let i = s.abs(i);
            push_shared_metatable::<T>(s);
            s.set_metatable(i);
        }
        Stage::Lazy | Stage::Retired => {}
    }
}

/// Sets field `name` of the object at `obj` to the value on top of the stack (popped).
pub fn set_object_field(s: Stack<'_>, obj: c_int, name: &CStr) {
    // objects made by `push_object` have a metatable whose `__newindex` is their field
    // table, or (not indexed yet) a function that makes it first; a shared metatable has
    // none, and anything else just drops the value
    let obj = s.abs(obj);
    if s.get_metatable(obj) {
        let has = s.get_field(-1, c"__newindex") != ffi::LUA_TNIL;
        s.pop(2);
        if has {
            s.set_field(obj, name);
            return;
        }
    }
    s.pop(1);
}

/// The value slot of the userdata at `i` if it is a `T` object (see [`Block`]), else null.
fn object_slot<T: LuaObject>(s: Stack<'_>, i: c_int) -> *mut Option<T> {
    let p = object_block::<T>(s, i);
    if p.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `p` is a live `Block<T>` (checked by `object_block`).
    unsafe { ptr::addr_of_mut!((*p).value) }
}

/// The stage field of the `T` object at `i` (none for anything else). A pointer to that
/// field alone: the value may be borrowed by the method that led here.
fn stage_of<T: LuaObject>(s: Stack<'_>, i: c_int) -> Option<*mut Stage> {
    let p = object_block::<T>(s, i);
    // SAFETY: a non-null `p` is a live `Block<T>` (checked by `object_block`); no
    // reference to the block is made.
    (!p.is_null()).then(|| unsafe { ptr::addr_of_mut!((*p).stage) })
}

/// The block of the userdata at `i` if it is a `T` object, else null.
fn object_block<T: LuaObject>(s: Stack<'_>, i: c_int) -> *mut Block<T> {
    const ID: usize = std::mem::size_of::<std::any::TypeId>();
    let id = std::any::TypeId::of::<T>();
    // SAFETY: lua_touserdata gives null for anything but a userdata, and a light one has
    // length 0. A full userdata of exactly `Block<T>`'s size has at least the id's bytes,
    // compared as bytes (a foreign block's bytes are not read as a Rust value). Only a
    // `Block<T>` written by `push_object` carries `T`'s id, and Lua aligns userdata blocks
    // for it (asserted in `push_object`).
    unsafe {
        let p = ffi::lua_touserdata(s.raw(), i) as *mut Block<T>;
        if p.is_null() || ffi::lua_rawlen(s.raw(), i) != std::mem::size_of::<Block<T>>() {
            return ptr::null_mut();
        }
        let ours = std::slice::from_raw_parts((&id as *const std::any::TypeId).cast::<u8>(), ID);
        if std::slice::from_raw_parts(p.cast::<u8>(), ID) != ours {
            return ptr::null_mut();
        }
        p
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
        Raise(format!(
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
    s.new_metatable(T::TNAME); // sets __name too
    let mt = s.top();
    s.push_value(mt);
    s.registry_set(metatable_key::<T>());
    s.set_function(mt, c"__gc", gc_object::<T>);
    s.set_function(mt, c"__tostring", tostring_object::<T>);
    #[cfg(feature = "lua54")]
    s.set_function(mt, c"__close", close_object::<T>);
    s.new_table(0, T::methods().len() as c_int);
    let methods = s.top();
    let upvalues = T::UPVALUE_STRINGS.len() as c_int;
    s.reserve(upvalues);
    for (name, f) in T::methods() {
        for u in T::UPVALUE_STRINGS {
            s.push_str(u);
        }
        s.push_closure(*f, upvalues);
        s.set_field(methods, name);
    }
    s.push_value(methods);
    s.registry_set(methods_key::<T>());
    s.new_table(0, 1);
    s.push_value(methods);
    if !T::FIELDS.is_empty() {
        s.push_closure(lazy_index::<T>, 1);
    }
    s.set_field(-2, c"__index");
    s.registry_set(fields_mt_key::<T>());
    s.remove(mt);
}

/// `__index` of the field tables of a type with `FIELDS`: (fields, key) -> the method or
/// the built-in field `key`, kept in the field table for the next look-up (both stay the
/// same for the object's life), or nil. Upvalue 1: the methods table.
unsafe extern "C-unwind" fn lazy_index<T: LuaObject>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: installed only as `__index` of `T`'s field tables, so argument 1 is one of
    // them (or whatever a script passes when it calls the function itself: every step
    // below checks types).
    unsafe {
        protect(l, |s| {
            s.reserve(4);
            if s.type_of(1) != ffi::LUA_TTABLE {
                s.push_nil();
                return Ok(1);
            }
            s.set_top(2);
            s.push_value(2);
            if s.raw_get(ffi::lua_upvalueindex(1)) == ffi::LUA_TNIL {
                s.pop(1);
                // a string key: `to_bytes` would turn a number key into a string in place
                let key = match s.type_of(2) {
                    ffi::LUA_TSTRING => s.to_bytes(2).unwrap_or_default(),
                    _ => &[],
                };
                let Some(name) = T::FIELDS.iter().find(|n| n.to_bytes() == key) else {
                    s.push_nil();
                    return Ok(1);
                };
                s.push_light(methods_key::<T>());
                s.raw_get(1);
                let pushed =
                    to_object::<T>(s, -1).is_some_and(|obj| obj.push_field(s, name.to_bytes()));
                if !pushed {
                    s.push_nil();
                    return Ok(1);
                }
            }
            s.push_value(2);
            s.push_value(-2);
            s.raw_set(1);
            Ok(1)
        })
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
