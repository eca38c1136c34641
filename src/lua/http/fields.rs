//! The lazily computed request fields that only need the head: the `headers` table, the
//! query's name/value pairs, and `cookies`. Parsing is done by `src/http`; these functions
//! only build the Lua tables, once, on first access (the glue caches them in the request).

use std::borrow::Cow;

use super::request::request_ctx;
use crate::http::{cookie, form};
use crate::lua::stack::{lua_fn, Raise, Stack};

fn finished() -> Raise {
    Raise("Attempt to read a field of a finished request".into())
}

/// Pushes `{n1, v1, n2, v2, ...}`.
fn push_flat<'a>(s: Stack<'_>, pairs: impl Iterator<Item = (Cow<'a, [u8]>, Cow<'a, [u8]>)>) {
    s.reserve(4);
    s.new_table(8, 0);
    let t = s.top();
    let mut i = 0;
    for (name, value) in pairs {
        s.push_bytes(&name);
        s.raw_set_index(t, i + 1);
        s.push_bytes(&value);
        s.raw_set_index(t, i + 2);
        i += 2;
    }
}

lua_fn! {
    /// headers(request) -> {lowercase name = {value, ...}}, in the order received.
    pub fn headers(s) {
        let ctx = request_ctx(s, "headers")?;
        if !ctx.current {
            return Err(finished());
        }
        let p = &ctx.http.conn.m.parsed;
        let mut groups: Vec<(Vec<u8>, Vec<&[u8]>)> = Vec::with_capacity(p.headers.len());
        for (name, value) in &p.headers {
            let lower = p.get(name).to_ascii_lowercase();
            match groups.iter_mut().find(|(n, _)| *n == lower) {
                Some((_, values)) => values.push(p.get(value)),
                None => groups.push((lower, vec![p.get(value)])),
            }
        }
        s.reserve(6);
        s.new_table(0, groups.len() as _);
        let t = s.top();
        for (name, values) in &groups {
            s.push_bytes(name);
            s.new_table(values.len() as _, 0);
            for (i, v) in values.iter().enumerate() {
                s.push_bytes(v);
                s.raw_set_index(t + 2, i as i64 + 1);
            }
            s.raw_set(t);
        }
        Ok(1)
    }
}

lua_fn! {
    /// query_pairs(request) -> {name1, value1, ...} decoded from the query string.
    pub fn query_pairs(s) {
        let ctx = request_ctx(s, "get_params")?;
        if !ctx.current {
            return Err(finished());
        }
        let p = &ctx.http.conn.m.parsed;
        let query = p.query.as_ref().map_or(&[][..], |r| p.get(r));
        push_flat(s, form::parse_query(query).into_iter());
        Ok(1)
    }
}

lua_fn! {
    /// form_pairs(body) -> {name1, value1, ...} of an urlencoded body.
    pub fn form_pairs(s) {
        let body = s.check_bytes(1, 1, "form_pairs")?;
        push_flat(s, form::parse_urlencoded(body).into_iter());
        Ok(1)
    }
}

lua_fn! {
    /// cookies(request) -> {name = value}; of repeated names the first wins.
    pub fn cookies(s) {
        let ctx = request_ctx(s, "cookies")?;
        if !ctx.current {
            return Err(finished());
        }
        let p = &ctx.http.conn.m.parsed;
        let mut pairs = Vec::new();
        for (name, value) in &p.headers {
            if p.get(name).eq_ignore_ascii_case(b"cookie") {
                pairs.extend(cookie::parse_cookies(p.get(value)));
            }
        }
        let pairs = cookie::first_wins(pairs);
        s.reserve(4);
        s.new_table(0, pairs.len() as _);
        let t = s.top();
        for (name, value) in &pairs {
            s.push_bytes(name);
            s.push_bytes(value);
            s.raw_set(t);
        }
        Ok(1)
    }
}
