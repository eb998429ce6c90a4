//! Finding the tunnel among the process's open descriptors. Apple's packet tunnel extension
//! is given no fd (only `packetFlow`), but the utun control socket NetworkExtension opened
//! for it is open in the process: the extension finds it here and hands a `dup` of it
//! to `start_tunnel(fd, AfHeader)` (the system keeps its own descriptor), skipping packetFlow's per-packet Objective-C objects (the
//! way WireGuard's and Firezone's extensions do). On Linux the same search finds a tun
//! device, which is how the search itself is tested.

use std::os::fd::RawFd;

/// The highest descriptor looked at: NetworkExtension opens the utun socket early, among
/// the first descriptors of the extension's process.
const LAST_FD: RawFd = 1024;

/// A tunnel descriptor and its interface's name (`utun3`; `tun0` on Linux).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TunnelFd {
    pub fd: i32,
    pub name: String,
}

/// The first open descriptor that is a tunnel interface (Apple: a utun control socket;
/// Linux: a tun device), or none. It stays the system's: give the engine a `dup` of it.
#[uniffi::export]
pub fn find_tunnel_fd() -> Option<TunnelFd> {
    tunnel_fds().next()
}

fn tunnel_fds() -> impl Iterator<Item = TunnelFd> {
    (0..=LAST_FD).filter_map(|fd| interface_name(fd).map(|name| TunnelFd { fd, name }))
}

/// The interface name from a C buffer (up to its first NUL).
fn name_from(buffer: &[u8]) -> Option<String> {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let name = std::str::from_utf8(&buffer[..end]).ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(target_vendor = "apple")]
fn interface_name(fd: RawFd) -> Option<String> {
    // <sys/sys_domain.h> and <net/if_utun.h>; not in the libc crate.
    const SYSPROTO_CONTROL: libc::c_int = 2;
    const UTUN_OPT_IFNAME: libc::c_int = 2;
    let mut buffer = [0u8; libc::IFNAMSIZ];
    let mut length = buffer.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `buffer` and fails (without
    // writing) for a descriptor that is closed or not a utun control socket.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SYSPROTO_CONTROL,
            UTUN_OPT_IFNAME,
            buffer.as_mut_ptr().cast(),
            &mut length,
        )
    };
    if rc != 0 {
        return None;
    }
    let length = usize::try_from(length).ok()?.min(buffer.len());
    name_from(&buffer[..length]).filter(|name| name.starts_with("utun"))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn interface_name(fd: RawFd) -> Option<String> {
    /// `_IOR('T', 210, unsigned int)`
    const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
    // SAFETY: an all-zero ifreq is a valid value (a C struct of integers and arrays).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one ifreq into `request`; on any other descriptor (closed,
    // a file, a socket) it fails without writing.
    let rc = unsafe { libc::ioctl(fd, TUNGETIFF as _, &mut request) };
    if rc != 0 {
        return None;
    }
    let name: Vec<u8> = request.ifr_name.iter().map(|&c| c as u8).collect();
    name_from(&name)
}

#[cfg(not(any(target_vendor = "apple", target_os = "linux", target_os = "android")))]
fn interface_name(_fd: RawFd) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialvpn_core::tun::linux::TunConfig;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;

    #[test]
    fn names_end_at_the_first_nul() {
        assert_eq!(name_from(b"utun4\0\0\0"), Some("utun4".into()));
        assert_eq!(name_from(b"\0utun"), None);
        assert_eq!(name_from(b"utun12"), Some("utun12".into()));
    }

    /// A tun device made in a network namespace of the test thread's own (nothing is added
    /// to the host's network), then found among the process's descriptors.
    #[test]
    fn finds_a_tun_device_among_open_descriptors() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (a network namespace and a tun device)");
            return;
        }
        let found = std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread, which ends with the test.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let tun = socialvpn_core::tun::linux::create(&TunConfig {
                name: "svfind0".into(),
                mtu: 1280,
                ipv4: Ipv4Addr::new(100, 64, 0, 1),
                ipv4_prefix: 16,
                ipv6: None,
                offload: false,
            })
            .unwrap()
            .device;
            let ours = TunnelFd {
                fd: tun.as_raw_fd(),
                name: "svfind0".into(),
            };
            let found = tunnel_fds().any(|t| t == ours);
            drop(tun);
            (found, tunnel_fds().any(|t| t == ours))
        })
        .join()
        .unwrap();
        assert_eq!(found, (true, false));
    }
}
