//! `moonbridge_http`: the HTTP module, loaded from the same shared object as
//! `moonbridge_io` (`lua/moonbridge_http.lua` calls `luaopen_moonbridge_http`), so request
//! objects read and write through the very socket handles of `moonbridge_io`.
//!
//! - `request`: the connection userdata and the request's response methods
//! - `fields`: lazily built tables (`headers`, query pairs, `cookies`)
//! - `post`: body chunks and multipart events for the glue
//! - `lua/embedded/http_glue.lua`: `generate_handler`, the request loop, lazy fields and streaming callbacks
//! - `lua/embedded/http_options.lua`: checking `generate_handler`'s options

mod fields;
mod post;
mod request;

use std::ffi::CStr;

use mlua::ffi;

use crate::http::encode;
use crate::lua::state::{lua_fn, register_type, Stack};
use request::{HttpConfig, HttpConn};

const GLUE: &str = include_str!("../../../lua/embedded/http_glue.lua");
const OPTIONS: &str = include_str!("../../../lua/embedded/http_options.lua");

type Functions = &'static [(&'static CStr, ffi::lua_CFunction)];

/// The request methods written in Rust (the glue adds the body-streaming ones).
const REQUEST_METHODS: Functions = &[
    (c"send_status", request::send_status),
    (c"send_header", request::send_header),
    (c"send_data", request::send_data),
    (c"flush", request::flush),
    (c"finish", request::finish),
    (c"finish_headers", request::finish_headers),
    (c"close_after_finish", request::close_after_finish),
    (c"monologue", request::monologue),
];

/// The primitives the glue builds on.
const CORE: Functions = &[
    (c"config", request::config),
    (c"connection", request::connection),
    (c"fresh", request::fresh),
    (c"faulty", request::faulty),
    (c"headers", fields::headers),
    (c"query_pairs", fields::query_pairs),
    (c"form_pairs", fields::form_pairs),
    (c"cookies", fields::cookies),
    (c"setup", post::setup),
    (c"begin", post::begin),
    (c"read_chunk", post::read_chunk),
    (c"read_all", post::read_all),
    (c"post_kind", post::post_kind),
    (c"post_next", post::post_next),
];

/// Helpers exported by the module, as the original's.
const EXPORTS: Functions = &[
    (c"encode_html", encode_html),
    (c"encode_uri", encode_uri),
    (c"decode_uri", decode_uri),
];

lua_fn! {
    fn encode_html(s) {
        let text = s.check_bytes(1, 1, "encode_html")?;
        s.push_bytes(&encode::encode_html(text));
        Ok(1)
    }
}

lua_fn! {
    fn encode_uri(s) {
        let text = s.check_bytes(1, 1, "encode_uri")?;
        s.push_str(&encode::encode_uri(text));
        Ok(1)
    }
}

lua_fn! {
    fn decode_uri(s) {
        let text = s.check_bytes(1, 1, "decode_uri")?;
        s.push_bytes(&encode::decode_uri(text));
        Ok(1)
    }
}

/// Pushes the compiled Lua chunk `source` (raises its syntax error, which cannot happen for
/// the files built in).
fn load_chunk(s: Stack<'_>, source: &str, name: &CStr) {
    // SAFETY: valid state in protected mode; pushes the chunk or raises.
    unsafe {
        let l = s.raw();
        if ffi::luaL_loadbufferx(
            l,
            source.as_ptr().cast(),
            source.len(),
            name.as_ptr(),
            c"t".as_ptr(),
        ) != ffi::LUA_OK
        {
            ffi::lua_error(l);
        }
    }
}

/// Builds the module table on the stack.
pub fn open(s: Stack<'_>) {
    s.reserve(8);
    // SAFETY: `s` is a valid state in protected mode (mlua's exec_raw), with space reserved.
    unsafe {
        let l = s.raw();
        ffi::lua_createtable(l, 0, 8);
        let module = ffi::lua_gettop(l);
        for (name, f) in EXPORTS {
            s.set_function(module, name, *f);
        }
        ffi::lua_createtable(l, 0, CORE.len() as _);
        let core = ffi::lua_gettop(l);
        for (name, f) in CORE {
            s.set_function(core, name, *f);
        }
        ffi::lua_createtable(l, 0, REQUEST_METHODS.len() as _);
        let methods = ffi::lua_gettop(l);
        for (name, f) in REQUEST_METHODS {
            s.set_function(methods, name, *f);
        }
        ffi::lua_setfield(l, core, c"request_methods".as_ptr());
        register_type::<HttpConfig>(s);
        ffi::lua_pop(l, 1);
        register_type::<HttpConn>(s);
        ffi::lua_pop(l, 1);

        load_chunk(s, OPTIONS, c"=moonbridge_http/options");
        ffi::lua_pushvalue(l, core);
        ffi::lua_call(l, 1, 1); // -> build_config
        let build_config = ffi::lua_gettop(l);
        load_chunk(s, GLUE, c"=moonbridge_http/glue");
        ffi::lua_pushvalue(l, module);
        ffi::lua_pushvalue(l, core);
        ffi::lua_pushvalue(l, build_config);
        ffi::lua_call(l, 3, 0);
        ffi::lua_settop(l, module);
    }
}
