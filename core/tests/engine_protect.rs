//! The platform's socket protector is asked before the engine uses its UDP socket, and a
//! refusal stops the start with a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use socialvpn_core::protect::SocketProtector;
use socialvpn_core::tun::TunDevice;
use socialvpn_core::{EngineConfig, Framing, PreparedEngine, StartError};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// A socketpair end stands in for the platform's tun fd.
fn tun() -> TunDevice {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    let made = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, fds.as_mut_ptr()) };
    assert_eq!(made, 0);
    // SAFETY: just created; the other end is closed right away.
    let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    TunDevice::from_owned(a, Framing::RawIp).unwrap()
}

fn config(dir: &std::path::Path, protect: SocketProtector) -> EngineConfig {
    EngineConfig {
        state_dir: dir.to_path_buf(),
        subnet: "100.64.0.0/16".parse().unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        social: None,
        protect: Some(protect),
        watch_network: false,
    }
}

fn socket_type(fd: i32) -> i32 {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: querying an option into a local int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    kind
}

#[tokio::test]
async fn the_udp_socket_is_protected_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let protect = SocketProtector::new(move |fd| {
        record.lock().unwrap().push(socket_type(fd));
        true
    });
    let engine = PreparedEngine::load(config(dir.path(), protect))
        .unwrap()
        .start(Some(tun()))
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![libc::SOCK_DGRAM]);
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_protection_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let result = PreparedEngine::load(config(dir.path(), SocketProtector::new(|_| false)))
        .unwrap()
        .start(Some(tun()));
    assert!(
        matches!(result, Err(StartError::Protect)),
        "{:?}",
        result.err()
    );
}
