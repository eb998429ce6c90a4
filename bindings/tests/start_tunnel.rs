//! `start_tunnel` leaves a refused fd exactly as the caller handed it over: open, with its
//! flags, still the caller's to close. One test per failure path; they share the process's
//! fd table (and one of them its fd limit), so they run in one test function, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use socialvpn_ffi::{
    CallbackError, LinkEvent, LinkPolicyConfig, SignIn, SocialVpn, TunFraming, VpnConfig, VpnError,
    VpnEventListener, VpnState,
};
use std::sync::Arc;

struct Quiet;

impl VpnEventListener for Quiet {
    fn on_state(&self, _: VpnState) -> Result<(), CallbackError> {
        Ok(())
    }
    fn on_roster_changed(&self) -> Result<(), CallbackError> {
        Ok(())
    }
    fn on_friend_request(&self, _: String) -> Result<(), CallbackError> {
        Ok(())
    }
    fn on_link(&self, _: LinkEvent) -> Result<(), CallbackError> {
        Ok(())
    }
    fn on_tunnel_lost(&self, _: String) -> Result<(), CallbackError> {
        Ok(())
    }
}

fn engine(dir: &std::path::Path) -> Arc<SocialVpn> {
    let config = VpnConfig {
        state_dir: dir.to_string_lossy().into_owned(),
        jid: "kate@svpn.test".into(),
        sign_in: SignIn::Password {
            password: "unused".into(),
        },
        resource: String::new(),
        // Nothing listens there: the engine retries on loopback and never gets online.
        server: Some("127.0.0.1:1".into()),
        dns_servers: vec![],
        ca_file: None,
        ice_servers: vec![],
        subnet: "100.64.0.0/16".into(),
        listen_port: 0,
        link_policy: LinkPolicyConfig::Proactive { max_links: 8 },
    };
    SocialVpn::new(config, Arc::new(Quiet), None).unwrap()
}

/// A character device the reactor cannot watch (epoll refuses /dev/null): it passes the
/// kind check and fails only once the engine tries to use it.
fn dev_null() -> i32 {
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    fd
}

/// The fd is open and its flags are what they were (blocking, as handed over).
fn still_the_callers(fd: i32, what: &str) {
    // SAFETY: fcntl on any integer is safe.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0, "{what}: the refused fd was closed");
    assert_eq!(
        flags & libc::O_NONBLOCK,
        0,
        "{what}: the fd's flags changed"
    );
}

fn close(fd: i32) {
    // SAFETY: the test owns `fd`.
    assert_eq!(unsafe { libc::close(fd) }, 0);
}

#[test]
fn every_refusal_leaves_the_fd_with_the_caller() {
    let dir = std::env::temp_dir().join(format!("svpn-start-tunnel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vpn = engine(&dir);

    // Not a tunnel: a regular file.
    let file = dir.join("not-a-tun");
    let path = std::ffi::CString::new(file.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: open with a NUL-terminated path; the fd is the test's.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        )
    };
    let e = vpn.start_tunnel(fd, TunFraming::RawIp).unwrap_err();
    assert!(matches!(e, VpnError::InvalidFd { .. }), "{e}");
    still_the_callers(fd, "not a tunnel");
    close(fd);

    // Negative and closed numbers are refused without touching anything.
    assert!(matches!(
        vpn.start_tunnel(-1, TunFraming::RawIp),
        Err(VpnError::InvalidFd { .. })
    ));
    assert!(matches!(
        vpn.start_tunnel(fd, TunFraming::RawIp),
        Err(VpnError::InvalidFd { .. })
    ));

    // Called from inside a runtime (as from the socket protector): refused before anything.
    let fd = dev_null();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = runtime.block_on(async { vpn.start_tunnel(fd, TunFraming::RawIp) });
    assert!(matches!(e, Err(VpnError::Reentrant)), "{e:?}");
    still_the_callers(fd, "reentrant call");

    // The engine cannot watch it: refused after the engine had it.
    let e = vpn.start_tunnel(fd, TunFraming::RawIp).unwrap_err();
    assert!(matches!(e, VpnError::Tunnel { .. }), "{e}");
    still_the_callers(fd, "refused by the engine");
    assert!(!vpn.status().unwrap().tunnel);

    // A stopped engine.
    vpn.stop().unwrap();
    let e = vpn.start_tunnel(fd, TunFraming::RawIp).unwrap_err();
    assert!(matches!(e, VpnError::Stopped), "{e}");
    still_the_callers(fd, "stopped engine");

    // No fd left to duplicate it into (the engine is stopped: no thread of its opens or
    // closes fds meanwhile).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid out-struct.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    let saved = limit;
    // The lowest free number is the next one opened; every number below it is in use.
    let probe = dev_null();
    limit.rlim_cur = probe as libc::rlim_t + 1;
    // SAFETY: setrlimit with a valid struct (this process only).
    let lowered = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(lowered, 0);
    let e = vpn.start_tunnel(fd, TunFraming::RawIp);
    // SAFETY: as above, restoring the saved limit.
    let restored = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    assert_eq!(restored, 0);
    let e = e.unwrap_err();
    assert!(
        matches!(&e, VpnError::InvalidFd { reason, .. } if reason.contains("duplicate")),
        "{e}"
    );
    still_the_callers(fd, "no fd to duplicate into");
    close(probe);
    close(fd);
    let _ = std::fs::remove_dir_all(&dir);
}
