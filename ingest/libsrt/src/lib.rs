//! A small safe wrapper over the system **libsrt** (the reference SRT implementation that OBS,
//! ffmpeg and hardware encoders use) for what an ingest server needs: a live-mode listener
//! with access control in the handshake (stream id → accept with a per-connection passphrase,
//! or reject with an SRT rejection reason), blocking accept, and blocking receive with a
//! timeout. All `unsafe` of the workspace lives here.
//!
//! Threading: libsrt runs its own I/O threads. [`Listener::accept`] and [`Socket::recv`] block
//! the calling thread (call them from dedicated threads, never the async runtime). The access
//! callback runs on a libsrt thread during the handshake; it must be quick and must not panic
//! (a panic is caught and turned into a rejection).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Once;

type SrtSocket = c_int;
const SRT_ERROR: c_int = -1;
const SRT_INVALID_SOCK: c_int = -1;

// SRT_SOCKOPT values (srt.h, libsrt 1.5).
const SRTO_RCVSYN: c_int = 2;
const SRTO_RCVTIMEO: c_int = 14;
const SRTO_LATENCY: c_int = 23;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_STREAMID: c_int = 46;
const SRTO_TRANSTYPE: c_int = 50;
const SRTO_PEERIDLETIMEO: c_int = 55;
const SRTT_LIVE: c_int = 0;
/// SRT_EASYNCRCV / SRT_ETIMEOUT: no data within the receive timeout.
const SRT_EASYNCRCV: c_int = 6002;
const SRT_ETIMEOUT: c_int = 6003;
/// syslog levels used by libsrt's logging.
const LOG_ERR: c_int = 3;
const LOG_WARNING: c_int = 4;

#[link(name = "srt")]
extern "C" {
    fn srt_startup() -> c_int;
    fn srt_create_socket() -> SrtSocket;
    fn srt_bind(u: SrtSocket, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    fn srt_listen(u: SrtSocket, backlog: c_int) -> c_int;
    fn srt_accept(u: SrtSocket, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> SrtSocket;
    fn srt_listen_callback(
        lsn: SrtSocket,
        hook: Option<ListenCallback>,
        opaque: *mut c_void,
    ) -> c_int;
    fn srt_setrejectreason(sock: SrtSocket, value: c_int) -> c_int;
    fn srt_close(u: SrtSocket) -> c_int;
    fn srt_getsockname(u: SrtSocket, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    fn srt_setsockflag(u: SrtSocket, opt: c_int, optval: *const c_void, optlen: c_int) -> c_int;
    fn srt_getsockflag(u: SrtSocket, opt: c_int, optval: *mut c_void, optlen: *mut c_int) -> c_int;
    fn srt_recvmsg(u: SrtSocket, buf: *mut c_char, len: c_int) -> c_int;
    fn srt_getlasterror_str() -> *const c_char;
    fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    fn srt_setloglevel(ll: c_int);
    fn srt_epoll_create() -> c_int;
    fn srt_epoll_add_usock(eid: c_int, u: SrtSocket, events: *const c_int) -> c_int;
    fn srt_epoll_uwait(eid: c_int, fds: *mut EpollEvent, fds_size: c_int, ms_timeout: i64)
        -> c_int;
    fn srt_epoll_release(eid: c_int) -> c_int;
    fn fc_srt_stats(u: SrtSocket, out: *mut RawStats) -> c_int;
    fn srt_setloghandler(opaque: *mut c_void, handler: Option<LogHandler>);
}

#[repr(C)]
struct EpollEvent {
    fd: SrtSocket,
    events: c_int,
}

const SRT_EPOLL_IN: c_int = 0x1;
const SRT_EPOLL_ERR: c_int = 0x8;

type LogHandler = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

/// Routes libsrt's own log lines into `tracing` (its warnings are mostly expected noise from
/// rejected or broken callers, so they go out at debug level; errors at warn).
unsafe extern "C" fn log_hook(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    _area: *const c_char,
    message: *const c_char,
) {
    if message.is_null() {
        return;
    }
    let msg = CStr::from_ptr(message).to_string_lossy();
    let msg = msg.trim_end();
    if level <= LOG_ERR {
        tracing::warn!(target: "libsrt", "{msg}");
    } else {
        tracing::debug!(target: "libsrt", "{msg}");
    }
}

type ListenCallback = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: SrtSocket,
    hsversion: c_int,
    peer: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int;

fn startup() {
    static INIT: Once = Once::new();
    // SAFETY: srt_startup has no preconditions; Once makes it run once.
    INIT.call_once(|| unsafe {
        srt_startup();
        srt_setloglevel(LOG_WARNING);
        srt_setloghandler(std::ptr::null_mut(), Some(log_hook));
    });
}

fn last_error(what: &str) -> io::Error {
    // SAFETY: libsrt returns a pointer to a thread-local, NUL-terminated message.
    let msg = unsafe {
        let p = srt_getlasterror_str();
        if p.is_null() {
            String::from("unknown SRT error")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    io::Error::other(format!("{what}: {msg}"))
}

fn check(rc: c_int, what: &str) -> io::Result<()> {
    if rc == SRT_ERROR {
        Err(last_error(what))
    } else {
        Ok(())
    }
}

fn set_int(sock: SrtSocket, opt: c_int, v: c_int, what: &str) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed.
    let rc = unsafe {
        srt_setsockflag(
            sock,
            opt,
            (&v as *const c_int).cast(),
            std::mem::size_of::<c_int>() as c_int,
        )
    };
    check(rc, what)
}

fn set_bool(sock: SrtSocket, opt: c_int, v: bool, what: &str) -> io::Result<()> {
    // libsrt's boolean options take a C `bool` (one byte) or an int; an int is accepted.
    set_int(sock, opt, c_int::from(v), what)
}

fn set_str(sock: SrtSocket, opt: c_int, v: &str, what: &str) -> io::Result<()> {
    // SAFETY: libsrt copies `len` bytes from the pointer; no NUL terminator is needed.
    let rc = unsafe { srt_setsockflag(sock, opt, v.as_ptr().cast(), v.len() as c_int) };
    check(rc, what)
}

/// Converts a C socket address to a Rust one.
///
/// # Safety
/// `sa` must be null or point to a valid `sockaddr_in` / `sockaddr_in6` as its family says.
unsafe fn to_socket_addr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    match c_int::from((*sa).sa_family) {
        libc::AF_INET => {
            let v4 = &*(sa.cast::<libc::sockaddr_in>());
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let v6 = &*(sa.cast::<libc::sockaddr_in6>());
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn sockaddr_storage(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}

/// A handshake waiting for the application's decision.
#[derive(Debug, Clone)]
pub struct AccessRequest {
    pub peer: Option<SocketAddr>,
    pub stream_id: String,
}

/// The application's answer to an [`AccessRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Accept; with `Some(passphrase)` the connection must be encrypted with it.
    Accept(Option<String>),
    /// Reject with an SRT rejection reason (e.g. 1403 forbidden; see [`reject`]).
    Reject(i32),
}

/// Rejection reasons from SRT's access control (`access_control.h`).
pub mod reject {
    pub const BAD_REQUEST: i32 = 1400;
    pub const UNAUTHORIZED: i32 = 1401;
    pub const OVERLOAD: i32 = 1402;
    pub const FORBIDDEN: i32 = 1403;
    pub const BAD_MODE: i32 = 1405;
}

type AccessFn = dyn Fn(&AccessRequest) -> Access + Send + Sync;

struct CallbackCtx {
    access: Box<AccessFn>,
}

unsafe extern "C" fn listen_hook(
    opaque: *mut c_void,
    ns: SrtSocket,
    _hsversion: c_int,
    peer: *const libc::sockaddr,
    streamid: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the CallbackCtx owned by the Listener, which outlives the listening
    // socket (it is dropped only after srt_close on the listener).
    let ctx = &*(opaque as *const CallbackCtx);
    let stream_id = if streamid.is_null() {
        String::new()
    } else {
        CStr::from_ptr(streamid).to_string_lossy().into_owned()
    };
    let request = AccessRequest {
        peer: to_socket_addr(peer),
        stream_id,
    };
    let decision =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (ctx.access)(&request)))
            .unwrap_or(Access::Reject(reject::BAD_REQUEST));
    match decision {
        Access::Accept(None) => 0,
        Access::Accept(Some(pass)) => {
            if set_str(ns, SRTO_PASSPHRASE, &pass, "passphrase").is_ok() {
                0
            } else {
                srt_setrejectreason(ns, reject::BAD_REQUEST);
                -1
            }
        }
        Access::Reject(code) => {
            srt_setrejectreason(ns, code);
            -1
        }
    }
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// TSBPD latency in milliseconds (both directions).
    pub latency_ms: i32,
    /// Server-wide passphrase (10–79 characters); per-connection ones come from the access
    /// callback.
    pub passphrase: Option<String>,
    /// Close connections after this long without any packet from the peer.
    pub peer_idle_timeout_ms: i32,
    pub backlog: i32,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            latency_ms: 120,
            passphrase: None,
            peer_idle_timeout_ms: 5000,
            backlog: 64,
        }
    }
}

/// A live-mode SRT listener.
///
/// Accept with [`Listener::accept_timeout`] from one thread and close the listener from that
/// same thread: libsrt deadlocks at process exit if a listener is closed while another thread
/// is blocked in `srt_accept` on it.
pub struct Listener {
    sock: SrtSocket,
    eid: c_int,
    ctx: *mut CallbackCtx,
}

// SAFETY: libsrt socket ids are plain integers usable from any thread; the callback context is
// only read (through a shared reference) by libsrt threads and freed in Drop after close.
unsafe impl Send for Listener {}
unsafe impl Sync for Listener {}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("sock", &self.sock)
            .finish()
    }
}

impl Listener {
    /// Binds and listens. `access` decides each handshake by its stream id.
    pub fn bind(
        addr: SocketAddr,
        options: &ListenOptions,
        access: impl Fn(&AccessRequest) -> Access + Send + Sync + 'static,
    ) -> io::Result<Listener> {
        startup();
        // SAFETY: plain constructor.
        let sock = unsafe { srt_create_socket() };
        if sock == SRT_INVALID_SOCK {
            return Err(last_error("srt_create_socket"));
        }
        let ctx = Box::into_raw(Box::new(CallbackCtx {
            access: Box::new(access),
        }));
        // SAFETY: plain constructor.
        let eid = unsafe { srt_epoll_create() };
        let listener = Listener { sock, eid, ctx };
        if eid < 0 {
            return Err(last_error("srt_epoll_create"));
        }
        set_int(sock, SRTO_TRANSTYPE, SRTT_LIVE, "transtype")?;
        set_int(sock, SRTO_LATENCY, options.latency_ms, "latency")?;
        set_int(
            sock,
            SRTO_PEERIDLETIMEO,
            options.peer_idle_timeout_ms,
            "peer idle timeout",
        )?;
        set_bool(sock, SRTO_RCVSYN, true, "blocking receive")?;
        if let Some(p) = &options.passphrase {
            set_str(sock, SRTO_PASSPHRASE, p, "passphrase")?;
        }
        let (storage, len) = sockaddr_storage(addr);
        // SAFETY: storage holds a valid sockaddr of `len` bytes.
        check(
            unsafe {
                srt_bind(
                    sock,
                    (&storage as *const libc::sockaddr_storage).cast(),
                    len,
                )
            },
            "srt_bind",
        )?;
        // SAFETY: ctx stays valid until Drop, after the socket is closed.
        check(
            unsafe { srt_listen_callback(sock, Some(listen_hook), ctx.cast()) },
            "srt_listen_callback",
        )?;
        // SAFETY: bound socket.
        check(unsafe { srt_listen(sock, options.backlog) }, "srt_listen")?;
        let events = SRT_EPOLL_IN | SRT_EPOLL_ERR;
        // SAFETY: valid epoll id and socket; `events` outlives the call.
        check(
            unsafe { srt_epoll_add_usock(eid, sock, &events) },
            "srt_epoll_add_usock",
        )?;
        Ok(listener)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        // SAFETY: zeroed storage is valid; libsrt writes at most `len` bytes.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
            check(
                srt_getsockname(
                    self.sock,
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                ),
                "srt_getsockname",
            )?;
            to_socket_addr((&storage as *const libc::sockaddr_storage).cast())
                .ok_or_else(|| io::Error::other("unknown address family"))
        }
    }

    /// Waits up to `ms` for a caller that completed the handshake (and passed the access
    /// callback); `Ok(None)` on timeout.
    pub fn accept_timeout(&self, ms: i64) -> io::Result<Option<(Socket, Option<SocketAddr>)>> {
        let mut ev = EpollEvent { fd: -1, events: 0 };
        // SAFETY: one event slot of room.
        let n = unsafe { srt_epoll_uwait(self.eid, &mut ev, 1, ms) };
        if n <= 0 {
            // SAFETY: reads this thread's last libsrt error.
            let code = unsafe { srt_getlasterror(std::ptr::null_mut()) };
            if n == 0 || code == SRT_ETIMEOUT {
                return Ok(None);
            }
            return Err(last_error("srt_epoll_uwait"));
        }
        self.accept().map(Some)
    }

    /// Blocks until a caller has completed the handshake (and passed the access callback).
    /// Fails once the listener is closed.
    pub fn accept(&self) -> io::Result<(Socket, Option<SocketAddr>)> {
        // SAFETY: zeroed storage; libsrt writes the peer address into it.
        unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
            let s = srt_accept(
                self.sock,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            );
            if s == SRT_INVALID_SOCK {
                return Err(last_error("srt_accept"));
            }
            Ok((
                Socket { sock: s },
                to_socket_addr((&storage as *const libc::sockaddr_storage).cast()),
            ))
        }
    }

    /// Closes the listening socket (a blocked [`Listener::accept`] returns an error).
    pub fn close(&self) {
        // SAFETY: closing an already closed id is harmless (returns an error).
        unsafe {
            srt_close(self.sock);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
        // SAFETY: the epoll id is ours; releasing it twice is harmless.
        unsafe {
            srt_epoll_release(self.eid);
        }
        // SAFETY: the listener is closed, so libsrt no longer calls the hook with ctx; we are
        // the only owner of the box.
        unsafe {
            drop(Box::from_raw(self.ctx));
        }
    }
}

/// What a receive gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Data(usize),
    /// Nothing within the receive timeout.
    Timeout,
    /// The connection is over (closed, broken or timed out by the peer-idle limit).
    Closed,
}

/// Mirrors `struct fc_srt_stats` in `csrc/stats.c` (our own struct, not libsrt's).
#[repr(C)]
#[derive(Default)]
struct RawStats {
    rtt_ms: f64,
    pkt_recv_total: i64,
    pkt_rcv_loss_total: i64,
    pkt_rcv_retrans_total: i64,
    pkt_rcv_drop_total: i64,
    rcv_buf_ms: i64,
    rcv_buf_bytes: i64,
    recv_rate_mbps: f64,
}

/// A receiver's figures from libsrt (`srt_bstats`); the counts are since the connection began.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Round-trip time as libsrt smooths it.
    pub rtt: std::time::Duration,
    pub packets_received: u64,
    /// Packets found missing (a gap in sequence numbers), whether retransmitted later or not.
    pub packets_lost: u64,
    /// Retransmitted packets that arrived.
    pub packets_retransmitted: u64,
    /// Packets given up on: too late to play, or never came.
    pub packets_dropped: u64,
    /// Media waiting in the receive buffer (timespan) and its size.
    pub receive_buffer: std::time::Duration,
    pub receive_buffer_bytes: u64,
    /// Receive rate, bit/s.
    pub receive_rate: f64,
}

/// An accepted SRT connection (closed on drop).
#[derive(Debug)]
pub struct Socket {
    sock: SrtSocket,
}

impl Socket {
    pub fn set_recv_timeout(&self, ms: i32) -> io::Result<()> {
        set_int(self.sock, SRTO_RCVTIMEO, ms, "receive timeout")
    }

    /// The stream id the caller sent in its handshake.
    pub fn stream_id(&self) -> String {
        let mut buf = [0u8; 512];
        let mut len = buf.len() as c_int;
        // SAFETY: buf has `len` bytes of room.
        let rc =
            unsafe { srt_getsockflag(self.sock, SRTO_STREAMID, buf.as_mut_ptr().cast(), &mut len) };
        if rc == SRT_ERROR {
            return String::new();
        }
        let len = usize::try_from(len).unwrap_or(0).min(buf.len());
        String::from_utf8_lossy(&buf[..len])
            .trim_end_matches('\0')
            .to_owned()
    }

    /// Receives one message (in live mode: up to 1316 bytes of TS).
    pub fn recv(&self, buf: &mut [u8]) -> Recv {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: buf has `len` bytes of room.
        let n = unsafe { srt_recvmsg(self.sock, buf.as_mut_ptr().cast(), len) };
        if n > 0 {
            return Recv::Data(n as usize);
        }
        // SAFETY: reads this thread's last libsrt error.
        let code = unsafe { srt_getlasterror(std::ptr::null_mut()) };
        if n == 0 || n == SRT_ERROR && (code == SRT_EASYNCRCV || code == SRT_ETIMEOUT) {
            Recv::Timeout
        } else {
            Recv::Closed
        }
    }

    /// libsrt's figures for this connection (`None` once it is gone).
    pub fn stats(&self) -> Option<Stats> {
        let mut raw = RawStats::default();
        // SAFETY: `raw` is a valid, writable `struct fc_srt_stats`.
        if unsafe { fc_srt_stats(self.sock, &mut raw) } != 0 {
            return None;
        }
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let ms = |m: f64| {
            let secs = if m.is_finite() { m / 1000.0 } else { 0.0 };
            std::time::Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
        };
        Some(Stats {
            rtt: ms(raw.rtt_ms),
            packets_received: count(raw.pkt_recv_total),
            packets_lost: count(raw.pkt_rcv_loss_total),
            packets_retransmitted: count(raw.pkt_rcv_retrans_total),
            packets_dropped: count(raw.pkt_rcv_drop_total),
            receive_buffer: ms(raw.rcv_buf_ms as f64),
            receive_buffer_bytes: count(raw.rcv_buf_bytes),
            receive_rate: if raw.recv_rate_mbps.is_finite() {
                (raw.recv_rate_mbps * 1e6).max(0.0)
            } else {
                0.0
            },
        })
    }

    /// Closes the connection now (also done on drop).
    pub fn close(&self) {
        // SAFETY: closing twice is harmless.
        unsafe {
            srt_close(self.sock);
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_reports_its_port() {
        let l = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &ListenOptions::default(),
            |_| Access::Reject(reject::FORBIDDEN),
        )
        .unwrap();
        let a = l.local_addr().unwrap();
        assert_eq!(a.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(a.port(), 0);
    }

    #[test]
    fn stats_of_a_closed_socket_are_none() {
        startup();
        let gone = Socket { sock: -1 };
        assert_eq!(gone.stats(), None);
    }

    #[test]
    fn short_passphrase_is_refused() {
        let opts = ListenOptions {
            passphrase: Some("short".into()),
            ..Default::default()
        };
        assert!(
            Listener::bind("127.0.0.1:0".parse().unwrap(), &opts, |_| Access::Accept(
                None
            ))
            .is_err()
        );
    }
}
