//! Typed readers of option tables that Lua hands to Rust as one table (the HTTP options,
//! the pool specs of `listen{}`): each field is read with the type the Rust side needs and
//! a wrong one is an error naming the function and the field. Defaults are not here: they
//! are filled in on the Lua side, in one place, before the table crosses.

use std::ffi::{c_int, CStr};

use mlua::ffi;

use crate::lua::stack::{LResult, Raise, Stack};

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

    fn bad(self, name: &CStr, what: &str) -> Raise {
        Raise(format!(
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
            s.to_integer(-1)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| self.bad(name, "non-negative integer"))
        })
    }

    /// A count (a non-negative integer that fits 32 bits), required.
    pub fn count(self, name: &CStr) -> LResult<u32> {
        u32::try_from(self.size(name)?).map_err(|_| self.bad(name, "count"))
    }

    /// A non-negative number field, required.
    pub fn number(self, name: &CStr) -> LResult<f64> {
        self.with(name, |s| match s.to_number(-1) {
            Some(v) if v >= 0.0 => Ok(v),
            _ => Err(self.bad(name, "non-negative number")),
        })
    }

    /// Seconds as a duration; nil (or a value too large to represent) = none.
    pub fn seconds(self, name: &CStr) -> LResult<Option<std::time::Duration>> {
        self.with(name, |s| {
            if s.is_nil(-1) {
                return Ok(None);
            }
            match s.to_number(-1) {
                Some(v) if v >= 0.0 => Ok(std::time::Duration::try_from_secs_f64(v).ok()),
                _ => Err(self.bad(name, "non-negative number")),
            }
        })
    }

    /// A boolean field, required.
    pub fn boolean(self, name: &CStr) -> LResult<bool> {
        self.with(name, |s| {
            if s.type_of(-1) != ffi::LUA_TBOOLEAN {
                return Err(self.bad(name, "boolean"));
            }
            Ok(s.to_boolean(-1))
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

    /// Runs `read` on the table in field `name` (required).
    pub fn table<T>(self, name: &CStr, read: impl FnOnce(Fields<'a>) -> LResult<T>) -> LResult<T> {
        self.with(name, |s| {
            if s.type_of(-1) != ffi::LUA_TTABLE {
                return Err(self.bad(name, "table"));
            }
            read(Fields {
                s,
                t: s.top(),
                fname: self.fname,
            })
        })
    }

    /// Calls `each` with the 1-based position of every element of this table's sequence,
    /// the element pushed on top of the stack (and popped afterwards).
    pub fn each(self, mut each: impl FnMut(i64, Stack<'a>) -> LResult<()>) -> LResult<()> {
        self.s.reserve(1);
        for i in 1..=self.s.raw_len(self.t) as i64 {
            self.s.raw_get_index(self.t, i);
            let r = each(i, self.s);
            self.s.pop(1);
            r?;
        }
        Ok(())
    }

    /// As [`Fields::each`] for a sequence of tables, each read with its own `Fields`.
    pub fn each_table(self, mut each: impl FnMut(i64, Fields<'a>) -> LResult<()>) -> LResult<()> {
        self.each(|i, s| {
            if s.type_of(-1) != ffi::LUA_TTABLE {
                return Err(Raise(format!(
                    "bad element #{i} in '{}' (table expected)",
                    self.fname
                )));
            }
            each(
                i,
                Fields {
                    s,
                    t: s.top(),
                    fname: self.fname,
                },
            )
        })
    }
}
