//! Raw UDP from inside the world, and what the victim's process costs.

use crate::netns::Namespace;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// Most datagrams [`send_udp`] sends in one call.
pub const MAX_DATAGRAMS: usize = 10_000;

/// Whether `ip` is an underlay address of the test world (198.18.0.0/15): the only
/// addresses [`send_udp`] sends to.
pub fn in_world(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    a == 198 && (b == 18 || b == 19)
}

/// Sends `datagrams` to `target` (an address of the world) from a fresh UDP socket inside
/// `ns`, `pace` apart; returns how many the kernel accepted.
pub fn send_udp(
    ns: &Namespace,
    target: SocketAddrV4,
    datagrams: Vec<Vec<u8>>,
    pace: Duration,
) -> usize {
    assert!(
        in_world(*target.ip()),
        "{target} is not an address of the test world"
    );
    assert!(
        datagrams.len() <= MAX_DATAGRAMS,
        "{} datagrams (at most {MAX_DATAGRAMS})",
        datagrams.len()
    );
    ns.run(move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            .expect("a UDP socket in the namespace");
        let mut sent = 0;
        for datagram in datagrams {
            if socket.send_to(&datagram, target).is_ok() {
                sent += 1;
            }
            if !pace.is_zero() {
                std::thread::sleep(pace);
            }
        }
        sent
    })
    .join()
    .expect("the UDP sender's thread")
}

/// The PID of the running process whose program name ends with `program` and that has
/// `arg` among its arguments (e.g. a node's state directory).
pub fn pid_with_arg(program: &str, arg: &str) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let mut args = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let name = args.next()?;
        (name.ends_with(program) && args.any(|a| a == arg)).then_some(pid)
    })
}

/// CPU time (user + system, seconds) the process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; here, after pid and comm, 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}
