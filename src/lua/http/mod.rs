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

use crate::http::encode;
use crate::lua::object::register_type;
use crate::lua::stack::{lua_fn, Functions, Stack};
use request::{HttpConfig, HttpConn};

const GLUE: &str = include_str!("../../../lua/embedded/http_glue.lua");
const OPTIONS: &str = include_str!("../../../lua/embedded/http_options.lua");

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
    (c"request_socket", request::request_socket),
    (c"timer_handler", crate::lua::server::timer::timer_handler),
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

/// Builds the module table on the stack.
pub fn open(s: Stack<'_>) {
    s.reserve(8);
    let module = s.push_functions(&[EXPORTS]);
    let core = s.push_functions(&[CORE]);
    s.push_functions(&[REQUEST_METHODS]);
    s.set_field(core, c"request_methods");
    // `conn:done`'s `go_on` values, named once (here) for the glue
    s.push_int(request::GO_ON_UNARMED);
    s.set_field(core, c"GO_ON_UNARMED");
    s.push_int(request::GO_ON_RUNNING);
    s.set_field(core, c"GO_ON_RUNNING");
    register_type::<HttpConfig>(s);
    s.pop(1);
    register_type::<HttpConn>(s);
    s.pop(1);

    s.push_value(core);
    s.run_chunk(OPTIONS, c"=moonbridge_http/options", 1, 1); // -> build_config
    let build_config = s.top();
    s.push_value(module);
    s.push_value(core);
    s.push_value(build_config);
    s.run_chunk(GLUE, c"=moonbridge_http/glue", 3, 0);
    s.set_top(module);
}
