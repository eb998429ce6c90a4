//! This device's host candidates: the IPv4 addresses of its up interfaces, minus loopback,
//! link-local and the VPN's own overlay addresses (a candidate through our own tunnel would
//! loop).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Host candidates for a socket bound to `port` on all addresses.
pub fn host_candidates(port: u16, exclude: impl Fn(Ipv4Addr) -> bool) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot list interfaces");
        return out;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list returned by getifaddrs, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if !up || entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family we check first.
        let family = unsafe { (*entry.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: the family says this is a sockaddr_in.
        let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || exclude(ip) {
            continue;
        }
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    // SAFETY: freeing the list getifaddrs returned, once.
    unsafe { libc::freeifaddrs(list) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_lists_loopback_or_excluded() {
        let all = host_candidates(4000, |_| false);
        assert!(all
            .iter()
            .all(|a| !a.ip().is_loopback() && a.port() == 4000));
        assert!(host_candidates(4000, |_| true).is_empty());
    }
}
