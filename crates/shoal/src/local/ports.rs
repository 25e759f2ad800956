//! Free loopback ports for child processes: the nodes of a [`super::LocalCluster`],
//! and the nodes the integration tests start (they include this very file with
//! `#[path]`, so both pick ports the same way). Plain `std` and `libc` only.
//!
//! A port is picked here and bound later by a child, so something else may
//! take it in between. The kernel itself hands out ports from the ephemeral
//! range (`net.ipv4.ip_local_port_range`) to every bind to port 0 and to the
//! local end of every outgoing connection on the machine, so a port picked
//! in that range can be taken at any moment, by any process: before the
//! first start, and again while a killed node is down before its restart.
//! Ports are therefore picked outside that range, where only a program that
//! names the port itself can take it.
//!
//! Within one process a cursor that only moves forward hands out each port
//! of the pool once (until the pool wraps around after all its ports), and
//! a port another program holds at the time of the pick is skipped. The
//! cursor starts at an offset drawn from the pid, so two processes that pick
//! ports this way (two test runs side by side) start far apart. The
//! collision that remains (another program binds the same port between the
//! pick and the child's bind) makes the child exit with EADDRINUSE, which
//! [`bind_failed`] recognizes in its log; the caller then starts again on
//! fresh ports.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Ports below this are left alone: well-known and registered services live
/// there (and `shoal up` uses 7100 and up by default).
const POOL_FIRST_PORT: u16 = 10_000;
/// A pool smaller than this is not used; ports then come from the kernel.
const POOL_PORTS_MIN: u32 = 1_000;
/// Where Linux keeps the ephemeral range, as "LOW\tHIGH".
const EPHEMERAL_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The pool (`len` ports from `first`) and how many picks were made from it.
struct Cursor {
    first: u16,
    len: u32,
    picks: u32,
}

static CURSOR: Mutex<Option<Cursor>> = Mutex::new(None);

impl Cursor {
    /// The largest run of ports from [`POOL_FIRST_PORT`] up that lies outside
    /// the ephemeral range (len 0 if there is none worth using).
    fn new() -> Cursor {
        let range = std::fs::read_to_string(EPHEMERAL_RANGE_FILE).ok().and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        });
        // Without the file, assume Linux's default range.
        let (low, high) = range.unwrap_or((32_768, 60_999));
        let below = (u32::from(POOL_FIRST_PORT), low.saturating_sub(u32::from(POOL_FIRST_PORT)));
        let above_first = (high + 1).max(u32::from(POOL_FIRST_PORT));
        let above = (above_first, 65_536u32.saturating_sub(above_first));
        let (first, len) = if below.1 >= above.1 { below } else { above };
        if len < POOL_PORTS_MIN {
            return Cursor { first: 0, len: 0, picks: 0 };
        }
        // Knuth's multiplicative hash spreads neighbouring pids over the pool.
        let start = (u64::from(std::process::id()).wrapping_mul(2_654_435_761) % u64::from(len)) as u32;
        Cursor { first: first as u16, len, picks: start }
    }
}

/// A loopback port that no program held a moment ago and that this process
/// has not handed out before (see the module doc for what that is worth).
pub fn free_port() -> std::io::Result<u16> {
    let mut guard = CURSOR.lock().unwrap_or_else(PoisonError::into_inner);
    let cursor = guard.get_or_insert_with(Cursor::new);
    if cursor.len == 0 {
        // No room outside the ephemeral range: let the kernel choose.
        return Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port());
    }
    for _ in 0..cursor.len {
        let port = cursor.first + (cursor.picks % cursor.len) as u16;
        cursor.picks = cursor.picks.wrapping_add(1);
        // Dropped at once: the child binds it. The bind sets SO_REUSEADDR, as
        // the children's binds do, so a port in TIME_WAIT counts as free.
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "every port of the pool is in use"))
}

/// Whether a node's log says it could not bind its port because another
/// socket holds it (the race the module doc describes).
pub fn bind_failed(log: &str) -> bool {
    log.contains(&std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string())
}
