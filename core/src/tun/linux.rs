//! Opening and configuring a Linux tun device by name (`/dev/net/tun`, `IFF_TUN | IFF_NO_PI`).
//!
//! Only the CLI and the tests use this; phones hand over an fd that is already set up.

use super::{TunDevice, TunError};
use crate::framing::Framing;
use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `_IOW('T', 202, int)`
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;

/// What to configure on a new device.
#[derive(Clone, Debug)]
pub struct TunConfig {
    pub name: String,
    pub mtu: u16,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix: u8,
    /// The IPv6 address (a /64 is routed) or none.
    pub ipv6: Option<Ipv6Addr>,
    /// Let the kernel hand over TCP super-packets and partial checksums (`IFF_VNET_HDR` with
    /// TSO): far fewer reads and a cheaper TCP stack on the sending side.
    pub offload: bool,
}

/// A device [`create`] made.
#[derive(Debug)]
pub struct CreatedTun {
    pub device: TunDevice,
    /// Whether it got its IPv6 address: false when asked for none, or when IPv6 is switched
    /// off on this machine (the VPN then runs IPv4-only).
    pub ipv6: bool,
}

/// Creates the device, sets its addresses and MTU, and brings it up. It disappears when the
/// returned fd is closed. On a machine with IPv6 switched off it is set up IPv4-only.
pub fn create(config: &TunConfig) -> Result<CreatedTun, TunError> {
    let name = config.name.clone();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
        return Err(TunError::Open {
            name,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "interface names are 1-15 characters",
            ),
        });
    }
    let configure = |step: &'static str| {
        let name = name.clone();
        move |source| TunError::Configure { name, step, source }
    };
    let path = CString::new("/dev/net/tun").map_err(|e| TunError::Open {
        name: name.clone(),
        source: io::Error::other(e),
    })?;
    // SAFETY: open with a valid C string.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(TunError::Open {
            name,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };

    let mut req = ifreq(&name);
    let vnet = if config.offload {
        libc::IFF_VNET_HDR
    } else {
        0
    };
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | vnet) as libc::c_short;
    ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req).map_err(|source| TunError::Open {
        name: name.clone(),
        source,
    })?;
    if config.offload {
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                TUNSETOFFLOAD as _,
                (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as libc::c_ulong,
            )
        };
        if rc < 0 {
            // Still correct without offloads: every frame then has a zeroed header.
            tracing::debug!(error = %io::Error::last_os_error(), "tun offloads unavailable");
        }
    }

    let ctl = socket(libc::AF_INET).map_err(configure("control socket"))?;
    let mut req = ifreq(&name);
    req.ifr_ifru.ifru_addr = sockaddr_in(config.ipv4);
    ioctl(ctl.as_raw_fd(), libc::SIOCSIFADDR, &mut req).map_err(configure("IPv4 address"))?;
    let mask = Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - u32::from(config.ipv4_prefix))
            .unwrap_or(0),
    );
    let mut req = ifreq(&name);
    req.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    ioctl(ctl.as_raw_fd(), libc::SIOCSIFNETMASK, &mut req).map_err(configure("IPv4 netmask"))?;
    let mut req = ifreq(&name);
    req.ifr_ifru.ifru_mtu = libc::c_int::from(config.mtu);
    ioctl(ctl.as_raw_fd(), libc::SIOCSIFMTU, &mut req).map_err(configure("MTU"))?;
    no_router_solicitations(&name);
    let mut req = ifreq(&name);
    ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req).map_err(configure("read flags"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req).map_err(configure("bring up"))?;

    let ipv6 = match config.ipv6 {
        Some(_) if ipv6_disabled(&name) => false,
        Some(v6) => {
            set_ipv6(&name, v6).map_err(configure("IPv6 address"))?;
            true
        }
        None => false,
    };
    let framing = if config.offload {
        Framing::VnetHdr
    } else {
        Framing::RawIp
    };
    Ok(CreatedTun {
        device: TunDevice::from_owned(fd, framing)?,
        ipv6,
    })
}

/// No router ever answers on the tunnel, yet the kernel asks for one when the interface comes
/// up and keeps asking (with back-off, for an hour by default): each solicitation is a packet
/// the engine wakes up to read and drop. Best effort (a sandbox may not let us write sysctls).
fn no_router_solicitations(name: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/router_solicitations");
    if let Err(error) = std::fs::write(&path, "0") {
        tracing::debug!(%error, "cannot turn off router solicitations on the tunnel");
    }
}

/// Whether IPv6 is switched off for the interface (or the machine has no IPv6 at all): then
/// the kernel refuses an IPv6 address with EACCES.
fn ipv6_disabled(name: &str) -> bool {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::read_to_string(path) {
        Ok(value) => value.trim() == "1",
        Err(_) => !std::path::Path::new("/proc/sys/net/ipv6").exists(),
    }
}

fn set_ipv6(name: &str, v6: Ipv6Addr) -> io::Result<()> {
    let ctl6 = socket(libc::AF_INET6)?;
    let mut req = ifreq(name);
    ioctl(ctl6.as_raw_fd(), libc::SIOCGIFINDEX, &mut req)?;
    let mut req6 = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr {
            s6_addr: v6.octets(),
        },
        ifr6_prefixlen: 64,
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        ifr6_ifindex: unsafe { req.ifr_ifru.ifru_ifindex },
    };
    ioctl(ctl6.as_raw_fd(), libc::SIOCSIFADDR, &mut req6)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the kernel reads it as
    // sockaddr_in because of the family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl<T>(fd: RawFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is a live, correctly typed argument for `request` (checked at call sites).
    if unsafe { libc::ioctl(fd, request as _, arg as *mut T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
