//! An engine runs without a tunnel (the app shows friends before the VPN is on), drops
//! packets for this device as `no_tunnel`, and delivers them once a tunnel is attached.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use socialvpn_core::api::{Event, LinkView, Request, Response, StatusView};
use socialvpn_core::tun::TunDevice;
use socialvpn_core::{DropReason, Engine, EngineConfig, Framing, PeerConfig, PreparedEngine};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// A socketpair stands in for the platform's tun: the engine gets one end, the test the other.
fn tun_pair() -> (TunDevice, std::os::unix::net::UnixDatagram) {
    let (engine_end, test_end) = std::os::unix::net::UnixDatagram::pair().unwrap();
    test_end.set_nonblocking(true).unwrap();
    // SAFETY: the fd is taken out of its owner, which forgets it.
    let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(engine_end)) };
    (TunDevice::from_owned(fd, Framing::RawIp).unwrap(), test_end)
}

fn prepared(dir: &std::path::Path) -> PreparedEngine {
    PreparedEngine::load(EngineConfig {
        state_dir: dir.to_path_buf(),
        subnet: "100.64.0.0/16".parse().unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        social: None,
        protect: None,
        watch_network: false,
    })
    .unwrap()
}

async fn status(engine: &Engine) -> StatusView {
    match engine.handle(Request::Status).await {
        Response::Status { status } => *status,
        other => panic!("{other:?}"),
    }
}

async fn links(engine: &Engine) -> Vec<LinkView> {
    match engine.handle(Request::Links).await {
        Response::Links { links } => links,
        other => panic!("{other:?}"),
    }
}

async fn no_tunnel_drops(engine: &Engine) -> u64 {
    status(engine)
        .await
        .counters
        .drops
        .get(DropReason::NoTunnel)
}

#[tokio::test]
async fn packets_wait_for_an_attached_tunnel() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = prepared(dir_a.path()).start(None).unwrap();
    assert!(!status(&a).await.tunnel);

    let b_prepared = prepared(dir_b.path());
    let b_address = b_prepared.ipv4();
    let (b_tun, b_side) = tun_pair();
    let b = b_prepared.start(Some(b_tun)).unwrap();

    let a_uid = b
        .add_peer(PeerConfig {
            public_key: a.public_key(),
            endpoint: Some(a.local_addr()),
            keepalive_secs: None,
        })
        .await
        .unwrap();
    a.add_peer(PeerConfig {
        public_key: b.public_key(),
        endpoint: Some(b.local_addr()),
        keepalive_secs: None,
    })
    .await
    .unwrap();
    let links = links(&b).await;
    let a_as_seen_by_b = links.iter().find(|l| l.uid == a_uid.to_string()).unwrap();
    let packet = common::udp(b_address, a_as_seen_by_b.overlay_address, 200);

    // Until A has a tunnel, B's packets reach A and are dropped there as `no_tunnel`.
    let mut dropped = 0;
    for _ in 0..100 {
        b_side.send(&packet).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        dropped = no_tunnel_drops(&a).await;
        if dropped > 0 {
            break;
        }
    }
    assert!(dropped > 0, "A never saw B's packets");

    let (a_tun, a_side) = tun_pair();
    a.attach_tunnel(a_tun).await.unwrap();
    assert!(status(&a).await.tunnel);
    let mut buf = [0u8; 2048];
    let mut delivered = None;
    for _ in 0..100 {
        b_side.send(&packet).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(n) = a_side.recv(&mut buf) {
            delivered = Some(n);
            break;
        }
    }
    assert_eq!(
        delivered,
        Some(packet.len()),
        "no packet through A's tunnel"
    );
    assert_eq!(&buf[16..20], &status(&a).await.ipv4.octets());

    // Detached, the fd is closed (the test's end sees the peer gone) and drops resume.
    a.detach_tunnel().await.unwrap();
    assert!(!status(&a).await.tunnel);
    let before = no_tunnel_drops(&a).await;
    for _ in 0..100 {
        b_side.send(&packet).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if no_tunnel_drops(&a).await > before {
            break;
        }
    }
    assert!(no_tunnel_drops(&a).await > before);
    assert!(
        a_side.send(&[0x45]).is_err(),
        "A's old tunnel fd is still open"
    );

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A SOCK_SEQPACKET pair: like a tun, one packet per read, and closing the test's end is
/// what the engine sees when the interface goes away (reads return 0 bytes).
fn seqpacket_tun() -> (TunDevice, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into the array.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: both fds are new and owned here.
    let (engine_end, test_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    (
        TunDevice::from_owned(engine_end, Framing::RawIp).unwrap(),
        test_end,
    )
}

#[tokio::test]
async fn a_tunnel_that_goes_away_is_detached_and_the_engine_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (tun, test_end) = seqpacket_tun();
    let engine = prepared(dir.path()).start(Some(tun)).unwrap();
    let mut events = engine.subscribe();
    assert!(status(&engine).await.tunnel);

    // The interface disappears under the engine.
    drop(test_end);
    let lost = tunnel_lost(&mut events).await;
    assert!(!lost.is_empty());
    assert!(!status(&engine).await.tunnel);

    // A new tunnel works as the first did.
    let (tun, _test_end) = seqpacket_tun();
    engine.attach_tunnel(tun).await.unwrap();
    assert!(status(&engine).await.tunnel);
    engine.shutdown().await.unwrap();
}

/// A fd that reports only an error condition (EPOLLERR alone, as a tun whose interface was
/// deleted does; here the write end of a pipe whose read end is closed) is read at once, and
/// the tunnel is detached with what the read said.
#[tokio::test]
async fn a_tunnel_that_reports_only_an_error_is_detached() {
    let dir = tempfile::tempdir().unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0);
    // SAFETY: both fds are new and owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let tun = TunDevice::from_owned(write_end, Framing::RawIp).unwrap();
    let engine = prepared(dir.path()).start(Some(tun)).unwrap();
    let mut events = engine.subscribe();
    assert!(status(&engine).await.tunnel);

    drop(read_end);
    let lost = tunnel_lost(&mut events).await;
    assert!(!lost.is_empty());
    assert!(!status(&engine).await.tunnel);
    engine.shutdown().await.unwrap();
}

/// Why the tunnel was lost, from the next `TunnelLost` event (within 10 s).
async fn tunnel_lost(events: &mut tokio::sync::broadcast::Receiver<Event>) -> String {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Ok(Event::TunnelLost { reason }) => return reason,
                Ok(Event::Stopped { error }) => {
                    panic!("the engine stopped: {error:?}")
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("no TunnelLost event")
}
