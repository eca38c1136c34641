//! Network functions of `moonbridge_io` (`tcpconnect`, `tcpconnect_nb`, `localconnect`,
//! `localconnect_nb`, `tcplisten`, `locallisten`) and the listener userdata.
//!
//! Failures to resolve, connect or listen return `nil, message`; wrong arguments and use of a
//! closed listener raise plain-string errors.

use std::ffi::{c_int, CStr};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mlua::ffi;

use crate::io::net::{ConnectStep, LocalConnect, TcpConnect};
use crate::io::poll::Interest;
use crate::io::{net, Handle, Kind, Listener, Port};
use crate::lua::coop;
use crate::lua::handle::{push_address_field, push_handle};
use crate::lua::object::{check_self, push_object, to_object, LuaObject};
use crate::lua::stack::{bad_arg, lua_fn, lua_fn_k, Flow, Functions, LResult, Raise, Stack};

pub const FUNCTIONS: Functions = &[
    (c"tcpconnect", tcpconnect),
    (c"tcpconnect_nb", tcpconnect_nb),
    (c"localconnect", localconnect),
    (c"localconnect_nb", localconnect_nb),
    (c"tcplisten", tcplisten),
    (c"locallisten", locallisten),
];

impl LuaObject for Listener {
    const TNAME: &'static CStr = c"moonbridge_io listener";
    const FIELDS: &'static [&'static CStr] =
        &[c"local_ip4", c"local_ip6", c"local_tcpport", c"local_ip"];

    fn methods() -> Functions {
        &[
            (c"accept", accept),
            (c"accept_nb", accept_nb),
            (c"close", close),
        ]
    }

    fn push_field(&self, s: Stack<'_>, key: &[u8]) -> bool {
        match (key.strip_prefix(b"local_"), self.local_addr()) {
            (Some(what), Some(addr)) => push_address_field(s, addr, what),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        if self.is_closed() {
            return "moonbridge_io listener (closed)".into();
        }
        match (self.kind(), self.local_addr(), self.path()) {
            (Kind::Tcp, Some(addr), _) => format!("moonbridge_io listener (tcp, {addr})"),
            (_, _, Some(path)) => format!("moonbridge_io listener (local, {})", path.display()),
            (kind, _, _) => format!("moonbridge_io listener ({})", kind.name()),
        }
    }

    fn on_close(&mut self) {
        self.close();
    }
}

/// Largest `locallisten` mode: the permission bits with setuid, setgid and sticky.
const MAX_MODE: u32 = 0o7777;

/// The port argument: an integer 0..=65535, or a service name (or numeric string).
pub fn check_port<'a>(s: Stack<'a>, i: c_int, fname: &str) -> LResult<Port<'a>> {
    match s.type_of(i) {
        ffi::LUA_TNUMBER => {
            let n = s.check_integer(i, i, fname)?;
            u16::try_from(n)
                .map(Port::Number)
                .map_err(|_| bad_arg(i, fname, "port number out of range"))
        }
        ffi::LUA_TSTRING => Ok(Port::Service(s.check_bytes(i, i, fname)?)),
        _ => Err(s.expected(i, i, fname, "port number or service name")),
    }
}

/// A new handle, or `nil, message`.
fn push_connected(s: Stack<'_>, r: io::Result<Handle>) -> LResult<c_int> {
    match r {
        Ok(h) => {
            push_handle(s, h);
            Ok(1)
        }
        Err(e) => s.fail_os(&e),
    }
}

/// A new listener, or `nil, message`.
fn push_listener(s: Stack<'_>, r: io::Result<Listener>) -> LResult<c_int> {
    match r {
        Ok(l) => {
            push_object(s, l);
            Ok(1)
        }
        Err(e) => s.fail_os(&e),
    }
}

/// A connect of a handler in a concurrent pool, kept on the stack (at [`CONNECTING`])
/// while the handler waits in the loop; collected with the coroutine if it never resumes.
enum Connecting {
    Tcp(TcpConnect),
    Local(Option<LocalConnect>),
}

impl LuaObject for Connecting {
    const TNAME: &'static CStr = c"moonbridge_io connect";

    fn methods() -> Functions {
        &[]
    }

    fn describe(&self) -> String {
        "moonbridge_io connect in progress".into()
    }
}

/// Stack slot of the [`Connecting`] of a cooperative connect (above its two arguments).
const CONNECTING: c_int = 3;

/// Ctx of a resumed cooperative connect.
const RESUMED: isize = 1;

/// Starts a cooperative connect (its `args` arguments stay below it): `None` when the call cannot wait in the loop (it then
/// connects blocking, as everywhere else).
fn start_cooperative(
    s: Stack<'_>,
    args: c_int,
    c: impl FnOnce() -> io::Result<Connecting>,
) -> Option<LResult<Flow>> {
    if !(coop::active() && coop::here(s)) {
        return None;
    }
    Some(match c() {
        Ok(c) => {
            s.set_top(args);
            push_object(s, c);
            step_cooperative(s)
        }
        Err(e) => s.fail_os(&e).map(Flow::Return),
    })
}

/// Goes on with the cooperative connect at [`CONNECTING`]: a handle, `nil, message`, or a
/// wait in the loop.
fn step_cooperative(s: Stack<'_>) -> LResult<Flow> {
    let c = to_object::<Connecting>(s, CONNECTING).expect("the connect stays on the stack");
    let step = match c {
        Connecting::Tcp(t) => t.step().map(|step| match step {
            ConnectStep::Done(h) => Ok(h),
            ConnectStep::Writable(fd) => Err(Some(fd)),
        }),
        Connecting::Local(l) => {
            let pending = l.take().expect("a finished Unix connect is not resumed");
            pending.step().map(|r| {
                r.map_err(|again| {
                    *l = Some(again);
                    None
                })
            })
        }
    };
    match step {
        Ok(Ok(h)) => push_connected(s, Ok(h)).map(Flow::Return),
        Ok(Err(Some(fd))) => Ok(coop::wait(s, fd, Interest::Write, RESUMED)),
        Ok(Err(None)) => Ok(coop::wait_many(
            s,
            &[],
            Some(Instant::now() + coop::RECHECK),
            RESUMED,
        )),
        Err(e) => push_connected(s, Err(e)).map(Flow::Return),
    }
}

lua_fn_k! {
    /// In a handler of a concurrent pool the connect waits in the loop (resolving the name
    /// still blocks).
    fn tcpconnect(s, ctx) {
        if ctx == Some(RESUMED) {
            return step_cooperative(s);
        }
        let host = s.check_bytes(1, 1, "tcpconnect")?;
        let port = check_port(s, 2, "tcpconnect")?;
        if let Some(flow) = start_cooperative(s, 2, || TcpConnect::new(host, port).map(Connecting::Tcp)) {
            return flow;
        }
        push_connected(s, net::tcp_connect(host, port)).map(Flow::Return)
    }
}

lua_fn! {
    fn tcpconnect_nb(s) {
        let host = s.check_bytes(1, 1, "tcpconnect_nb")?;
        let port = check_port(s, 2, "tcpconnect_nb")?;
        push_connected(s, net::tcp_connect_nb(host, port))
    }
}

lua_fn_k! {
    /// In a handler of a concurrent pool a full backlog is waited for in the loop (tried
    /// again every few milliseconds).
    fn localconnect(s, ctx) {
        if ctx == Some(RESUMED) {
            return step_cooperative(s);
        }
        let path = s.check_bytes(1, 1, "localconnect")?;
        if let Some(flow) = start_cooperative(s, 2, || {
            LocalConnect::new(path).map(|c| Connecting::Local(Some(c)))
        }) {
            return flow;
        }
        push_connected(s, net::local_connect(path)).map(Flow::Return)
    }
}

lua_fn! {
    fn localconnect_nb(s) {
        let path = s.check_bytes(1, 1, "localconnect_nb")?;
        push_connected(s, net::local_connect_nb(path))
    }
}

lua_fn! {
    fn tcplisten(s) {
        let host = s.check_bytes(1, 1, "tcplisten")?;
        let port = check_port(s, 2, "tcplisten")?;
        push_listener(s, Listener::tcp(host, port))
    }
}

lua_fn! {
    /// `locallisten(path [, mode])`: `mode` (NEW) is the socket file's permission bits.
    fn locallisten(s) {
        let path = s.check_bytes(1, 1, "locallisten")?;
        let mode = match s.opt_integer(2, 2, "locallisten")? {
            None => None,
            Some(m) => Some(
                u32::try_from(m)
                    .ok()
                    .filter(|m| *m <= MAX_MODE)
                    .ok_or_else(|| bad_arg(2, "locallisten", "mode out of range (0 to 0o7777)"))?,
            ),
        };
        push_listener(s, Listener::local(path, mode))
    }
}

/// `self` of a listener method, which must still be open.
fn open_listener<'a>(s: Stack<'a>, fname: &str) -> LResult<&'a mut Listener> {
    let l = check_self::<Listener>(s, fname)?;
    if l.is_closed() {
        return Err(Raise("Attempt to use a closed listener".into()));
    }
    Ok(l)
}

lua_fn_k! {
    /// In a handler of a concurrent pool the wait for a connection yields to the loop.
    fn accept(s, _ctx) {
        let l = open_listener(s, "accept")?;
        if coop::active() {
            match l.accept_nb() {
                Ok(Some(h)) => return push_connected(s, Ok(h)).map(Flow::Return),
                Ok(None) => {
                    if let (Some(fd), true) = (l.fd(), coop::here(s)) {
                        return Ok(coop::wait(s, fd.as_raw_fd(), Interest::Read, 0));
                    }
                }
                Err(e) => return push_connected(s, Err(e)).map(Flow::Return),
            }
        }
        push_connected(s, l.accept()).map(Flow::Return)
    }
}

lua_fn! {
    fn accept_nb(s) {
        let l = open_listener(s, "accept_nb")?;
        match l.accept_nb() {
            Ok(Some(h)) => {
                push_handle(s, h);
                Ok(1)
            }
            Ok(None) => {
                s.push_bool(false);
                s.push_str("No incoming connection pending");
                Ok(2)
            }
            Err(e) => s.fail_os(&e),
        }
    }
}

lua_fn! {
    fn close(s) {
        let l = open_listener(s, "close")?;
        l.close();
        s.push_bool(true);
        Ok(1)
    }
}
