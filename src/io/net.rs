//! Sockets: name resolution, TCP and Unix connects (blocking and non-blocking), and
//! listeners with `accept`.
//!
//! Every socket is created close-on-exec and non-blocking in the same call (the exceptions:
//! a blocking Unix connect switches to non-blocking right after connecting, and accepted
//! connections stay blocking, since all handle steps pass MSG_DONTWAIT and a waiting server
//! may sleep in `recv`, see `Handle::recv_wait`). Connected and
//! accepted TCP sockets get SO_LINGER 0, so a crash or a collected handle resets the peer;
//! `Handle::close` undoes that for a graceful close. Nothing here knows about Lua.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::ptr;

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage,
    UnixAddr,
};

use crate::io::handle::{Handle, Kind};
use crate::io::sys::{self, cvt, Interest};

/// Backlog of listening sockets; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = if libc::SOMAXCONN > 1024 {
    libc::SOMAXCONN
} else {
    1024
};

/// Longest Unix socket path: `sun_path` holds 108 bytes including the terminating NUL.
pub const MAX_PATH_LEN: usize = 107;

/// A TCP port: a number, or a service name (or numeric string) looked up by getaddrinfo.
#[derive(Clone, Copy, Debug)]
pub enum Port<'a> {
    Number(u16),
    Service(&'a [u8]),
}

/// An error with the text of `gai_strerror` (or of errno for `EAI_SYSTEM`).
fn gai_error(code: i32) -> io::Error {
    if code == libc::EAI_SYSTEM {
        return io::Error::last_os_error();
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
    io::Error::other(text.to_string_lossy().into_owned())
}

/// Frees a getaddrinfo result list on every path.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the list came from a successful getaddrinfo and is freed once.
            unsafe { libc::freeaddrinfo(self.0) }
        }
    }
}

/// Resolves `host` (numeric or a name) and `port` to stream socket addresses, in the order
/// getaddrinfo prefers. `passive` asks for addresses to bind to. Blocks during DNS lookups.
pub fn resolve(host: &[u8], port: Port<'_>, passive: bool) -> io::Result<Vec<SocketAddr>> {
    let no_name = || gai_error(libc::EAI_NONAME);
    let node = CString::new(host).map_err(|_| no_name())?;
    let (service, numeric) = match port {
        Port::Number(n) => (CString::new(n.to_string()).expect("digits"), true),
        Port::Service(s) => (
            CString::new(s).map_err(|_| gai_error(libc::EAI_SERVICE))?,
            false,
        ),
    };
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; we set the fields we need.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_protocol = libc::IPPROTO_TCP;
    hints.ai_flags =
        if passive { libc::AI_PASSIVE } else { 0 } | if numeric { libc::AI_NUMERICSERV } else { 0 };
    let mut list = AddrInfoList(ptr::null_mut());
    // SAFETY: node, service and hints are valid for the call; the result is owned by `list`.
    let rc = unsafe { libc::getaddrinfo(node.as_ptr(), service.as_ptr(), &hints, &mut list.0) };
    if rc != 0 {
        return Err(gai_error(rc));
    }
    let mut addrs = Vec::new();
    let mut ai = list.0;
    while !ai.is_null() {
        // SAFETY: `ai` is a node of the list owned by `list`, alive until it drops; ai_addr
        // points to ai_addrlen bytes of socket address.
        unsafe {
            let info = &*ai;
            if let Some(ss) = SockaddrStorage::from_raw(info.ai_addr, Some(info.ai_addrlen)) {
                if let Some(a) = inet_addr(&ss) {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            ai = info.ai_next;
        }
    }
    if addrs.is_empty() {
        return Err(no_name());
    }
    Ok(addrs)
}

/// Checks that `tcplisten(host, port)` would find an address to bind to (the same passive
/// resolution), without binding. `Err` is the message: it says whether the service name or
/// the host could not be resolved.
pub fn check_listen_address(host: &[u8], port: Port<'_>) -> Result<(), String> {
    let Err(e) = resolve(host, port, true) else {
        return Ok(());
    };
    if let Port::Service(name) = port {
        // With a numeric wildcard host only the service can fail.
        if let Err(e) = resolve(b"0.0.0.0", port, true) {
            return Err(format!(
                "Could not resolve service \"{}\": {}",
                String::from_utf8_lossy(name),
                sys::error_text(&e)
            ));
        }
    }
    Err(format!(
        "Could not resolve host \"{}\": {}",
        String::from_utf8_lossy(host),
        sys::error_text(&e)
    ))
}

/// The IPv4/IPv6 address in a socket address, if it is one.
fn inet_addr(ss: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = ss.as_sockaddr_in() {
        Some(SocketAddr::V4((*a).into()))
    } else {
        ss.as_sockaddr_in6().map(|a| SocketAddr::V6((*a).into()))
    }
}

fn local_inet_addr(fd: RawFd) -> Option<SocketAddr> {
    sock::getsockname::<SockaddrStorage>(fd)
        .ok()
        .and_then(|ss| inet_addr(&ss))
}

fn peer_inet_addr(fd: RawFd) -> Option<SocketAddr> {
    sock::getpeername::<SockaddrStorage>(fd)
        .ok()
        .and_then(|ss| inet_addr(&ss))
}

fn new_socket(family: AddressFamily, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    Ok(sock::socket(family, SockType::Stream, flags, None)?)
}

fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    new_socket(family, true)
}

/// Starts a connect on a non-blocking socket. `Ok(false)`: still in progress.
fn start_connect(fd: &OwnedFd, addr: &dyn SockaddrLike) -> io::Result<bool> {
    match sock::connect(fd.as_raw_fd(), addr) {
        Ok(()) => Ok(true),
        // After EINTR the connect goes on in the background, just like EINPROGRESS.
        Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The outcome of a started connect that has ended (the socket is writable): SO_ERROR.
fn connect_outcome(fd: &OwnedFd) -> io::Result<()> {
    match sock::getsockopt(fd, sockopt::SocketError)? {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

/// Wraps a connected (or connecting) TCP socket: SO_LINGER 0 until a graceful close, so
/// that a process that dies with the connection open resets it rather than ending it like
/// a complete response (`lingers`: the socket has it already, accepted from a listener that
/// has it). The addresses not passed in are asked of the system.
fn tcp_handle(
    fd: OwnedFd,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    lingers: bool,
) -> io::Result<Handle> {
    let raw = fd.as_raw_fd();
    if !lingers {
        sys::set_linger(raw, Some(0))?;
    }
    let mut h = Handle::new(fd, Kind::Tcp);
    h.local_addr = local.or_else(|| local_inet_addr(raw));
    h.remote_addr = remote.or_else(|| peer_inet_addr(raw));
    Ok(h)
}

/// What a TCP connect in steps ([`TcpConnect`]) needs next.
pub enum ConnectStep {
    /// Connected.
    Done(Handle),
    /// Call `step` again once this socket is writable (the connect in progress ended).
    Writable(RawFd),
}

/// `tcpconnect` in steps, for a caller that waits elsewhere (a handler of a concurrent
/// pool waits in its worker's loop): tries each resolved address in turn; the last
/// failure is reported. Resolving the name happens in [`TcpConnect::new`] and blocks.
pub struct TcpConnect {
    addrs: std::vec::IntoIter<SocketAddr>,
    current: Option<(OwnedFd, SocketAddr)>,
    last: Option<io::Error>,
}

impl TcpConnect {
    pub fn new(host: &[u8], port: Port<'_>) -> io::Result<TcpConnect> {
        Ok(TcpConnect {
            addrs: resolve(host, port, false)?.into_iter(),
            current: None,
            last: None,
        })
    }

    /// Waits in the kernel for the connect in progress to end.
    fn wait(&self) -> io::Result<()> {
        match &self.current {
            Some((fd, _)) => sys::wait_fd(fd.as_fd(), Interest::Write, -1).map(drop),
            None => Ok(()),
        }
    }

    /// Starts, or goes on with, the connect. Spurious calls (the socket not writable yet)
    /// only ask to wait again.
    pub fn step(&mut self) -> io::Result<ConnectStep> {
        loop {
            if let Some((fd, addr)) = self.current.take() {
                if !sys::wait_fd(fd.as_fd(), Interest::Write, 0)? {
                    let raw = fd.as_raw_fd();
                    self.current = Some((fd, addr));
                    return Ok(ConnectStep::Writable(raw));
                }
                match connect_outcome(&fd) {
                    Ok(()) => {
                        return tcp_handle(fd, None, Some(addr), false).map(ConnectStep::Done)
                    }
                    Err(e) => self.last = Some(e),
                }
            }
            let Some(addr) = self.addrs.next() else {
                return Err(self
                    .last
                    .take()
                    .expect("resolve returns at least one address"));
            };
            let started = tcp_socket(&addr).and_then(|fd| {
                let done = start_connect(&fd, &SockaddrStorage::from(addr))?;
                Ok((fd, done))
            });
            match started {
                Ok((fd, true)) => {
                    return tcp_handle(fd, None, Some(addr), false).map(ConnectStep::Done)
                }
                Ok((fd, false)) => self.current = Some((fd, addr)),
                Err(e) => self.last = Some(e),
            }
        }
    }
}

/// `tcpconnect`: tries each resolved address in turn; the last failure is reported.
pub fn tcp_connect(host: &[u8], port: Port<'_>) -> io::Result<Handle> {
    let mut c = TcpConnect::new(host, port)?;
    loop {
        match c.step()? {
            ConnectStep::Done(h) => return Ok(h),
            ConnectStep::Writable(_) => c.wait()?,
        }
    }
}

/// `tcpconnect_nb`: starts connecting to the first resolved address and returns at once.
/// A refused connection shows up as the error of the first read or write.
pub fn tcp_connect_nb(host: &[u8], port: Port<'_>) -> io::Result<Handle> {
    let addr = resolve(host, port, false)?[0];
    let fd = tcp_socket(&addr)?;
    start_connect(&fd, &SockaddrStorage::from(addr))?;
    tcp_handle(fd, None, Some(addr), false)
}

/// The socket address of a Unix socket path. Rejects what the kernel would misread: an
/// empty path (it means "autobind") and paths that do not fit `sun_path`.
fn unix_addr(path: &[u8]) -> io::Result<UnixAddr> {
    if path.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(UnixAddr::new(OsStr::from_bytes(path))?)
}

/// `localconnect`: connects a Unix stream socket, waiting while the listener's backlog is
/// full. A non-blocking Unix connect cannot be waited for (it fails with EAGAIN instead of
/// going on in the background), so this socket starts blocking and is switched afterwards.
pub fn local_connect(path: &[u8]) -> io::Result<Handle> {
    let addr = unix_addr(path)?;
    let fd = new_socket(AddressFamily::Unix, false)?;
    // A Unix connect interrupted by a signal has not happened; it is simply tried again.
    match sys::retry(|| sock::connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EISCONN) => {}
        Err(e) => return Err(e),
    }
    sys::set_nonblocking(fd.as_raw_fd(), true)?;
    Ok(Handle::new(fd, Kind::Local))
}

/// `localconnect` in steps, for a caller that waits elsewhere: while the listener's
/// backlog is full the connect is simply tried again later (`step` gives itself back),
/// since the kernel offers nothing to wait on.
pub struct LocalConnect {
    addr: UnixAddr,
    fd: OwnedFd,
}

impl LocalConnect {
    pub fn new(path: &[u8]) -> io::Result<LocalConnect> {
        Ok(LocalConnect {
            addr: unix_addr(path)?,
            fd: new_socket(AddressFamily::Unix, true)?,
        })
    }

    /// Tries the connect. Unix connects end at once (connected, refused, or backlog full).
    pub fn step(self) -> io::Result<Result<Handle, LocalConnect>> {
        match sock::connect(self.fd.as_raw_fd(), &self.addr) {
            Ok(()) | Err(Errno::EISCONN) => Ok(Ok(Handle::new(self.fd, Kind::Local))),
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(Err(self)),
            Err(e) => Err(e.into()),
        }
    }
}

/// `localconnect_nb`: like `local_connect`, but a full backlog is reported ("Resource
/// temporarily unavailable") instead of waited for.
pub fn local_connect_nb(path: &[u8]) -> io::Result<Handle> {
    let addr = unix_addr(path)?;
    let fd = new_socket(AddressFamily::Unix, true)?;
    start_connect(&fd, &addr)?;
    Ok(Handle::new(fd, Kind::Local))
}

/// Sets the permission bits of a socket file by its path: `fchmod` on a socket descriptor
/// does not change the file on Linux. The file was bound a moment ago by this process.
fn chmod_socket(file: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
}

/// Runs `before_listen` on the socket file that `fd` was just bound to, then listens. On
/// any failure the socket is closed and the file (created by the bind) removed.
fn listen_bound(
    fd: OwnedFd,
    file: &Path,
    before_listen: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    match before_listen(file).and_then(|()| listen(&fd)) {
        Ok(()) => Ok(fd),
        Err(e) => {
            drop(fd);
            let _ = std::fs::remove_file(file);
            Err(e)
        }
    }
}

fn listen(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) }).map(drop)
}

/// A listening socket (TCP or Unix). Owns its descriptor; `close` or drop closes it. A Unix
/// socket file is never unlinked here (the manual); the server removes it at shutdown.
#[derive(Debug)]
pub struct Listener {
    fd: Option<OwnedFd>,
    kind: Kind,
    /// A TCP listener with SO_LINGER 0, which its connections inherit: accepting needs no
    /// setsockopt per connection.
    lingers: bool,
    local_addr: Option<SocketAddr>,
    path: Option<PathBuf>,
}

impl Listener {
    /// `tcplisten`: binds the first resolved address that works, with SO_REUSEADDR. The
    /// IPv6 wildcard `::` also accepts IPv4 (dual stack) where the system allows it.
    pub fn tcp(host: &[u8], port: Port<'_>) -> io::Result<Listener> {
        let mut last = None;
        for addr in resolve(host, port, true)? {
            match Self::tcp_at(&addr) {
                Ok(fd) => return Self::from_owned_fd(fd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("resolve returns at least one address"))
    }

    fn tcp_at(addr: &SocketAddr) -> io::Result<OwnedFd> {
        let fd = tcp_socket(addr)?;
        let raw = fd.as_raw_fd();
        sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if let SocketAddr::V6(a) = addr {
            if a.ip().is_unspecified() {
                // Best effort: a system without IPv4 still serves IPv6.
                let _ = sys::setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
            }
        }
        sock::bind(raw, &SockaddrStorage::from(*addr))?;
        listen(&fd)?;
        Ok(fd)
    }

    /// `locallisten`: an existing socket file at `path` is replaced; any other existing file
    /// is an error and stays untouched. With `mode` (permission bits, at most `0o7777`), the
    /// socket file is chmod-ed after `bind` and before `listen`: a bound Unix socket that is
    /// not listening refuses every connect, so no client gets in before the permissions are
    /// in effect. If the chmod or the listen fails, the socket is closed and the file that
    /// `bind` created is removed.
    pub fn local(path: &[u8], mode: Option<u32>) -> io::Result<Listener> {
        let addr = unix_addr(path)?;
        let file = Path::new(OsStr::from_bytes(path));
        match std::fs::symlink_metadata(file) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(file)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "File exists and is not a socket",
                ))
            }
            // Missing (the usual case) or not inspectable: bind reports any real problem.
            Err(_) => {}
        }
        let fd = new_socket(AddressFamily::Unix, true)?;
        sock::bind(fd.as_raw_fd(), &addr)?;
        let fd = listen_bound(fd, file, |file| match mode {
            Some(mode) => chmod_socket(file, mode),
            None => Ok(()),
        })?;
        Self::from_owned_fd(fd)
    }

    /// Adopts a descriptor that is already listening (e.g. opened by the server's master
    /// before forking). It is switched to non-blocking mode; the kind (TCP or Unix) and the
    /// local address are read from the socket.
    pub fn from_owned_fd(fd: OwnedFd) -> io::Result<Listener> {
        let raw = fd.as_raw_fd();
        sys::set_nonblocking(raw, true)?;
        let ss = sock::getsockname::<SockaddrStorage>(raw)?;
        let (kind, local_addr, path) = match ss.family() {
            Some(AddressFamily::Unix) => {
                let path = ss
                    .as_unix_addr()
                    .and_then(|u| u.path())
                    .map(Path::to_path_buf);
                (Kind::Local, None, path)
            }
            _ => (Kind::Tcp, inet_addr(&ss), None),
        };
        // SO_LINGER on a listening socket changes nothing for the listener itself.
        let lingers = kind == Kind::Tcp && sys::set_linger(raw, Some(0)).is_ok();
        Ok(Listener {
            fd: Some(fd),
            kind,
            lingers,
            local_addr,
            path,
        })
    }

    /// `Kind::Tcp` or `Kind::Local`.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The bound address of a TCP listener (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The file system path of a Unix listener.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The descriptor, until `close`.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    pub fn is_closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Hands new connections to `accept` only once their first bytes arrived (or after
    /// about `seconds` without any): for protocols where the client speaks first, such as
    /// HTTP. A worker then never wakes for a connection it would only wait on. TCP only;
    /// 0 turns it off.
    pub fn defer_accept(&self, seconds: i32) -> io::Result<()> {
        if self.kind != Kind::Tcp {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "deferred accepting needs a TCP listener",
            ));
        }
        sys::set_defer_accept(self.raw()?, seconds)
    }

    /// Closes the listening socket (idempotent).
    pub fn close(&mut self) {
        self.fd = None;
    }

    fn raw(&self) -> io::Result<RawFd> {
        self.fd
            .as_ref()
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Accepts a pending connection, or `None` if there is none right now.
    pub fn accept_nb(&self) -> io::Result<Option<Handle>> {
        let fd = self.raw()?;
        loop {
            // The connection stays in blocking mode: every handle step passes MSG_DONTWAIT,
            // and a server waiting for the next request can then sleep in `recv` itself.
            let flags = libc::SOCK_CLOEXEC;
            // The peer's address comes with the connection (no getpeername later).
            // SAFETY: an all-zero sockaddr_storage is a valid (unspecified) address.
            let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let (addr, len_ptr) = match self.kind {
                Kind::Tcp => (
                    (&mut peer as *mut libc::sockaddr_storage).cast(),
                    &mut len as *mut _,
                ),
                _ => (ptr::null_mut(), ptr::null_mut()),
            };
            // SAFETY: `addr` and `len_ptr` are null or point to the live `peer` and `len`,
            // whose size `len` gives.
            match cvt(unsafe { libc::accept4(fd, addr, len_ptr, flags) }) {
                Ok(new) => {
                    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                    let conn = unsafe { OwnedFd::from_raw_fd(new) };
                    // SAFETY: accept4 filled `peer` with an address of `len` bytes.
                    let remote = unsafe {
                        SockaddrStorage::from_raw(
                            (&peer as *const libc::sockaddr_storage).cast(),
                            Some(len),
                        )
                    };
                    let mut h = self.wrap(conn, remote.as_ref().and_then(inet_addr))?;
                    h.set_blocking_socket();
                    return Ok(Some(h));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    // A connection that died while queued, or (Linux) a network error of the
                    // new connection passed on by accept: skip it and look at the next one.
                    Some(
                        libc::EINTR
                        | libc::ECONNABORTED
                        | libc::EPROTO
                        | libc::ENETDOWN
                        | libc::ENOPROTOOPT
                        | libc::EHOSTDOWN
                        | libc::ENONET
                        | libc::EHOSTUNREACH
                        | libc::EOPNOTSUPP
                        | libc::ENETUNREACH,
                    ) => continue,
                    _ => return Err(e),
                },
            }
        }
    }

    /// Waits for a connection and accepts it.
    pub fn accept(&self) -> io::Result<Handle> {
        loop {
            if let Some(h) = self.accept_nb()? {
                return Ok(h);
            }
            let fd = self
                .fd()
                .expect("accept_nb checked that the listener is open");
            sys::wait_fd(fd, Interest::Read, -1)?;
        }
    }

    /// A handle for an accepted connection. Its local address is the listener's when that
    /// is a specific one (a wildcard listener's connections are asked).
    fn wrap(&self, conn: OwnedFd, remote: Option<SocketAddr>) -> io::Result<Handle> {
        match self.kind {
            Kind::Tcp => {
                let local = self.local_addr.filter(|a| !a.ip().is_unspecified());
                tcp_handle(conn, local, remote, self.lingers)
            }
            _ => Ok(Handle::new(conn, Kind::Local)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::handle::{HandleError, ReadStatus};

    fn loopback(host: &str) -> (Listener, u16) {
        let l = Listener::tcp(host.as_bytes(), Port::Number(0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert_ne!(port, 0);
        (l, port)
    }

    /// A port nothing listens on (as far as any test can tell).
    fn closed_port() -> u16 {
        let (l, port) = loopback("127.0.0.1");
        drop(l);
        port
    }

    fn tmp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mb-net-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    /// Runs a connect in steps, waiting for writability with poll (as a scheduler would).
    fn run_steps(c: &mut TcpConnect) -> io::Result<Handle> {
        let mut waits = 0;
        loop {
            match c.step() {
                Ok(ConnectStep::Done(h)) => return Ok(h),
                Ok(ConnectStep::Writable(_)) => {
                    waits += 1;
                    assert!(waits < 100, "a loopback connect ends after a few wake-ups");
                    c.wait().unwrap();
                }
                Err(e) => return Err(e),
            }
        }
    }

    #[test]
    fn tcp_connect_in_steps_connects_refuses_and_tries_each_address() {
        let (l, port) = loopback("127.0.0.1");
        let h = run_steps(&mut TcpConnect::new(b"127.0.0.1", Port::Number(port)).unwrap());
        let h = h.unwrap();
        assert_eq!(
            h.remote_addr,
            Some(format!("127.0.0.1:{port}").parse().unwrap())
        );
        assert!(l.accept_nb().unwrap().is_some());

        let closed = closed_port();
        let e = run_steps(&mut TcpConnect::new(b"127.0.0.1", Port::Number(closed)).unwrap());
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::ECONNREFUSED));

        // "localhost" may resolve to ::1 first: the connect goes on to 127.0.0.1
        let h = run_steps(&mut TcpConnect::new(b"localhost", Port::Number(port)).unwrap());
        assert!(h.unwrap().remote_addr.unwrap().ip().is_loopback());
        assert!(l.accept_nb().unwrap().is_some());
    }

    #[test]
    fn local_connect_in_steps_gives_itself_back_while_the_backlog_is_full() {
        let path = tmp_path("steps");
        let l = Listener::local(path.as_os_str().as_bytes(), None).unwrap();
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .map_or(4096, |t| t.trim().parse().unwrap_or(4096));
        let mut queued = Vec::new();
        let mut pending = LocalConnect::new(path.as_os_str().as_bytes()).unwrap();
        let pending = loop {
            match pending.step().unwrap() {
                Ok(h) => {
                    queued.push(h);
                    assert!(queued.len() <= BACKLOG as usize + 1 && queued.len() <= somaxconn + 1);
                    pending = LocalConnect::new(path.as_os_str().as_bytes()).unwrap();
                }
                Err(again) => break again,
            }
        };
        assert!(!queued.is_empty());
        // room again: the same connect now succeeds
        assert!(l.accept_nb().unwrap().is_some());
        assert!(pending.step().unwrap().is_ok());
        let e = LocalConnect::new(b"/nonexistent/socket")
            .unwrap()
            .step()
            .err()
            .unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        drop(l);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn resolves_numeric_and_named_hosts_and_services() {
        let a = resolve(b"127.0.0.1", Port::Number(80), false).unwrap();
        assert_eq!(a, vec!["127.0.0.1:80".parse().unwrap()]);
        let a = resolve(b"::1", Port::Service(b"8080"), false).unwrap();
        assert_eq!(a, vec!["[::1]:8080".parse().unwrap()]);
        let a = resolve(b"localhost", Port::Number(1), false).unwrap();
        assert!(a.iter().all(|a| a.ip().is_loopback() && a.port() == 1));
        let e = resolve(b"127.0.0.1", Port::Service(b"no-such-service"), false).unwrap_err();
        assert!(!sys::error_text(&e).is_empty());
        assert!(resolve(b"a\0b", Port::Number(1), false).is_err());
    }

    #[test]
    fn listen_addresses_are_checked_like_tcplisten_resolves_them() {
        assert_eq!(check_listen_address(b"127.0.0.1", Port::Number(0)), Ok(()));
        assert_eq!(check_listen_address(b"::", Port::Service(b"http")), Ok(()));
        assert_eq!(
            check_listen_address(b"0.0.0.0", Port::Service(b"8080")),
            Ok(())
        );
        let e = check_listen_address(b"nosuch.invalid", Port::Number(80)).unwrap_err();
        assert!(
            e.starts_with("Could not resolve host \"nosuch.invalid\": "),
            "{e}"
        );
        let e = check_listen_address(b"127.0.0.1", Port::Service(b"nosuchservice")).unwrap_err();
        assert!(
            e.starts_with("Could not resolve service \"nosuchservice\": "),
            "{e}"
        );
        let e = check_listen_address(b"nosuch.invalid", Port::Service(b"http")).unwrap_err();
        assert!(e.starts_with("Could not resolve host "), "{e}");
    }

    #[test]
    fn connect_accept_and_addresses_v4_and_v6() {
        for host in ["127.0.0.1", "::1"] {
            let (l, port) = loopback(host);
            assert!(l.accept_nb().unwrap().is_none());
            let c = tcp_connect(host.as_bytes(), Port::Number(port)).unwrap();
            let s = l.accept().unwrap();
            assert_eq!(c.remote_addr.unwrap().port(), port);
            assert_eq!(s.local_addr.unwrap().port(), port);
            assert_eq!(s.remote_addr, c.local_addr);
            assert_eq!(c.kind(), Kind::Tcp);
            assert_eq!(s.kind(), Kind::Tcp);
        }
    }

    /// SO_LINGER as (on, seconds).
    fn linger_of(h: &Handle) -> (bool, i32) {
        let fd = h.fd().expect("open");
        let l = sock::getsockopt(&fd, sockopt::Linger).unwrap();
        (l.l_onoff != 0, l.l_linger)
    }

    #[test]
    fn connections_reset_unless_closed_gracefully() {
        // Accepted connections inherit SO_LINGER 0 from the listener (no setsockopt per
        // connection, see tcp_handle); connected ones get it set.
        for host in ["127.0.0.1", "::1"] {
            let (l, port) = loopback(host);
            assert!(l.lingers);
            let c = tcp_connect(host.as_bytes(), Port::Number(port)).unwrap();
            let s = l.accept().unwrap();
            assert_eq!(linger_of(&s), (true, 0));
            assert_eq!(linger_of(&c), (true, 0));
        }
    }

    #[test]
    fn deferred_accept_waits_for_the_first_bytes() {
        for host in ["127.0.0.1", "::1"] {
            let (l, port) = loopback(host);
            l.defer_accept(1).unwrap();
            let fd = l.fd().unwrap();
            assert!(sys::defer_accept_of(fd.as_raw_fd()).unwrap() > 0);
            // connected, but silent: not acceptable yet
            let mut c = tcp_connect(host.as_bytes(), Port::Number(port)).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(l.accept_nb().unwrap().is_none(), "{host}");
            c.write_blocking(&[b"x"]).unwrap();
            c.flush_blocking(&[]).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let s = loop {
                if let Some(s) = l.accept_nb().unwrap() {
                    break s;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{host}: never accepted"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            assert_eq!(s.remote_addr, c.local_addr);
            l.defer_accept(0).unwrap();
            assert_eq!(sys::defer_accept_of(fd.as_raw_fd()).unwrap(), 0);
        }
        let path = tmp_path("defer");
        let l = Listener::local(path.as_os_str().as_bytes(), None).unwrap();
        assert!(
            l.defer_accept(1).is_err(),
            "Unix listeners have no deferred accept"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refused_connects_report_the_reason() {
        let port = closed_port();
        let e = tcp_connect(b"127.0.0.1", Port::Number(port)).unwrap_err();
        assert_eq!(sys::error_text(&e), "Connection refused");
        // The non-blocking form returns a handle; its first write or read reports it.
        let mut h = tcp_connect_nb(b"127.0.0.1", Port::Number(port)).unwrap();
        let err = h.flush_blocking(&[b"x"]).unwrap_err();
        assert_eq!(err, HandleError::Io("Connection refused".into()));
        let mut h = tcp_connect_nb(b"127.0.0.1", Port::Number(port)).unwrap();
        let err = h.read_blocking(None, None).unwrap_err();
        assert_eq!(err, HandleError::Io("Connection refused".into()));
    }

    #[test]
    fn dual_stack_wildcard_accepts_ipv4() {
        let (l, port) = loopback("::");
        let _c = tcp_connect(b"127.0.0.1", Port::Number(port)).unwrap();
        let s = l.accept().unwrap();
        let remote = s.remote_addr.unwrap();
        match remote {
            SocketAddr::V6(a) => assert!(a.ip().to_ipv4_mapped().is_some()),
            SocketAddr::V4(_) => {}
        }
    }

    #[test]
    fn unix_listener_replaces_sockets_only() {
        let path = tmp_path("sock");
        let bytes = path.as_os_str().as_bytes();
        let l = Listener::local(bytes, None).unwrap();
        assert_eq!(l.kind(), Kind::Local);
        assert_eq!(l.path(), Some(path.as_path()));
        let mut c = local_connect(bytes).unwrap();
        let mut s = l.accept().unwrap();
        c.flush_blocking(&[b"hi\n"]).unwrap();
        let out = s.read_blocking(None, Some(b'\n')).unwrap();
        assert_eq!((out.len, out.status), (3, ReadStatus::Term));
        drop(l);
        // the stale socket file is replaced
        let l2 = Listener::local(bytes, None).unwrap();
        drop(l2);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"keep").unwrap();
        let e = Listener::local(bytes, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn unix_listener_mode_is_applied_before_listening() {
        use std::os::unix::fs::PermissionsExt;
        let path = tmp_path("mode");
        let bytes = path.as_os_str().as_bytes();
        for mode in [0o600, 0o660, 0o777, 0o1700] {
            let l = Listener::local(bytes, Some(mode)).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o7777, mode);
            let _c = local_connect(bytes).unwrap();
            assert!(l.accept_nb().unwrap().is_some());
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_failure_between_bind_and_listen_removes_the_socket_file() {
        let path = tmp_path("fail");
        let bytes = path.as_os_str().as_bytes();
        let addr = unix_addr(bytes).unwrap();
        let fd = new_socket(AddressFamily::Unix, true).unwrap();
        sock::bind(fd.as_raw_fd(), &addr).unwrap();
        let mut seen = None;
        let e = listen_bound(fd, &path, |file| {
            // bound, not listening: the file exists and connects are refused
            seen = Some(std::fs::symlink_metadata(file).is_ok());
            let refused = local_connect(bytes).unwrap_err();
            assert_eq!(refused.raw_os_error(), Some(libc::ECONNREFUSED));
            Err(io::Error::from_raw_os_error(libc::EPERM))
        })
        .unwrap_err();
        assert_eq!(seen, Some(true));
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(std::fs::symlink_metadata(&path).is_err(), "file removed");
    }

    #[test]
    fn unix_paths_that_do_not_fit_are_rejected() {
        let long = vec![b'a'; MAX_PATH_LEN + 1];
        let e = local_connect(&long).unwrap_err();
        assert_eq!(sys::error_text(&e), "File name too long");
        assert!(local_connect_nb(&long).is_err());
        assert!(Listener::local(&long, None).is_err());
        assert!(local_connect(b"").is_err());
        let e = local_connect(b"/nonexistent/mb.sock").unwrap_err();
        assert_eq!(sys::error_text(&e), "No such file or directory");
    }

    #[test]
    fn adopted_descriptor_keeps_kind_and_address() {
        let (l, port) = loopback("127.0.0.1");
        let fd = l.fd().unwrap().try_clone_to_owned().unwrap();
        let adopted = Listener::from_owned_fd(fd).unwrap();
        assert_eq!(adopted.kind(), Kind::Tcp);
        assert_eq!(adopted.local_addr().unwrap().port(), port);
        let mut closed = adopted;
        closed.close();
        assert!(closed.is_closed());
        assert!(closed.accept_nb().is_err());
    }
}
