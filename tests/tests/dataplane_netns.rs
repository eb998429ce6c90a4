//! The data plane between two namespaces joined by a veth, each engine on a real Linux TUN.
//! Run as root; each test builds and removes its own namespaces.

use socialvpn_core::api::Request;
use socialvpn_tests::traffic::tcp_transfer;
use socialvpn_tests::two_hosts::{ping, TwoHosts, A_UNDERLAY, B_UNDERLAY, PORT};

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

fn world(tag: &str) -> TwoHosts {
    TwoHosts::new(tag, Path::new(env!("CARGO_BIN_EXE_socialvpn-dpnode")))
}

#[test]
fn ping_both_ways_over_ipv4_and_ipv6() {
    let mut w = world("ping");
    assert!(ping(&w.a, &w.b_at_a), "A cannot ping B");
    assert!(ping(&w.b, &w.a_at_b), "B cannot ping A");
    assert!(ping(&w.a, &w.node_b.ipv6), "A cannot ping B over IPv6");
    assert!(ping(&w.b, &w.node_a.ipv6), "B cannot ping A over IPv6");
    assert_eq!(w.node_a.drops("wireguard_rejected"), 0);
    assert_eq!(w.node_b.drops("source_uid_mismatch"), 0);
    // Each user chose a different subnet for its friend.
    assert!(w.b_at_a.starts_with("100.64."), "{}", w.b_at_a);
    assert!(w.a_at_b.starts_with("100.65."), "{}", w.a_at_b);
    // IPv6 works without the kernel soliciting routers on the tunnel (nothing answers them;
    // each one would wake the engine).
    for ns in [&w.a, &w.b] {
        let out = ns.output(
            "cat",
            &["/proc/sys/net/ipv6/conf/svpn0/router_solicitations"],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    }
}

#[test]
fn udp_datagrams_arrive_from_the_address_the_receiver_assigned() {
    let w = world("udp");
    // Receiver in B: bound to B's own overlay address.
    let b_own: std::net::Ipv4Addr = w.node_b.ipv4.parse().unwrap();
    let receiver = w.b.run(move || {
        let sock = UdpSocket::bind((b_own, 7000)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 50 {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => got.push((buf[..n].to_vec(), from)),
                Err(_) => break,
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let a_own: std::net::Ipv4Addr = w.node_a.ipv4.parse().unwrap();
    let target: SocketAddr = format!("{}:7000", w.b_at_a).parse().unwrap();
    w.a.run(move || {
        let sock = UdpSocket::bind((a_own, 7001)).unwrap();
        for i in 0..50u32 {
            let mut payload = vec![0u8; 100 + i as usize * 20];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            sock.send_to(&payload, target).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    })
    .join()
    .unwrap();
    let got = receiver.join().unwrap();
    // The first datagram may wait on the handshake; none may be lost or altered.
    assert_eq!(got.len(), 50, "received {} of 50", got.len());
    let expected_from: SocketAddr = format!("{}:7001", w.a_at_b).parse().unwrap();
    for (i, (payload, from)) in got.iter().enumerate() {
        assert_eq!(
            *from, expected_from,
            "B must see A at the address B assigned"
        );
        assert_eq!(payload.len(), 100 + i * 20);
        assert_eq!(&payload[..4], &(i as u32).to_be_bytes());
    }
}

#[test]
fn tcp_transfer_of_100_mb_arrives_intact() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let w = world("tcp");
    let t = tcp_transfer(
        &w.a,
        &w.b,
        w.node_b.ipv4.parse().unwrap(),
        w.b_at_a.parse().unwrap(),
        7100,
        TOTAL,
    );
    assert_eq!(t.received, TOTAL);
    assert_eq!(t.received_sha256, t.sent_sha256);
    assert_eq!(
        t.seen_from.ip().to_string(),
        w.a_at_b,
        "B must see A at the address B assigned"
    );
}

/// The tun as a phone hands it over (no offloads: one packet per `write`): the TCP segments
/// of a transfer reach the receiving kernel joined into packets larger than the MTU, which
/// it takes whole, and the data arrives intact.
#[test]
fn tcp_over_a_phone_fd_arrives_intact_in_joined_packets() {
    let mut w = raw_fd_world("rawtcp");
    let (listen, target) = (w.node_b.ipv4.parse().unwrap(), w.b_at_a.parse().unwrap());
    joined_transfer(&mut w, listen, target, 7101);
}

/// The same over IPv6 (the devices' ULA addresses): a joined packet's payload length and
/// checksum are IPv6's, and the kernel takes it too.
#[test]
fn tcp_over_a_phone_fd_arrives_intact_in_joined_packets_over_ipv6() {
    let mut w = raw_fd_world("rawtcp6");
    let b: IpAddr = w.node_b.ipv6.parse().unwrap();
    joined_transfer(&mut w, b, b, 7102);
}

fn raw_fd_world(tag: &str) -> TwoHosts {
    TwoHosts::with_env(
        tag,
        Path::new(env!("CARGO_BIN_EXE_socialvpn-dpnode")),
        &[("SOCIALVPN_TUN_MODE", "raw")],
    )
}

/// Sends 64 MB from A to B and checks that they arrive intact, in far fewer packets than
/// segments on B's tun, and that A's engine bounded its sender's window with none of A's
/// packets lost in its tun's ring.
fn joined_transfer(w: &mut TwoHosts, listen: IpAddr, target: IpAddr, port: u16) {
    const TOTAL: usize = 64 * 1024 * 1024;
    let before = svpn0_counter(&w.b, "rx_packets");
    let dropped_before = svpn0_counter(&w.a, "tx_dropped");
    let t = tcp_transfer(&w.a, &w.b, listen, target, port, TOTAL);
    assert_eq!(t.received, TOTAL);
    assert_eq!(t.received_sha256, t.sent_sha256);
    // One packet per segment would be TOTAL / 1 380 (48 000; IPv6's are 20 bytes smaller);
    // joined, a few per 64 KB.
    let packets = svpn0_counter(&w.b, "rx_packets") - before;
    let segments = (TOTAL / 1380) as u64;
    assert!(
        packets * 4 < segments,
        "{packets} packets reached B's tun for {segments} segments: not joined"
    );
    // A's engine bounded its sender by the windows of the ACKs it wrote, and its tun's ring
    // (500 packets, which a sender's congestion window outgrows) dropped nothing.
    let counters = w.node_a.ask(Request::Status)["counters"].take();
    assert!(
        counters["windows_clamped"].as_u64() > Some(0),
        "no window was lowered at the sender: {counters}"
    );
    let dropped = svpn0_counter(&w.a, "tx_dropped") - dropped_before;
    assert_eq!(
        dropped, 0,
        "A's tun dropped {dropped} packets of the transfer"
    );
}

/// One of the statistics of the tun interface `svpn0` in `ns` (`tx_dropped`: packets the
/// kernel dropped on their way into the tun's ring).
fn svpn0_counter(ns: &socialvpn_tests::netns::Namespace, name: &str) -> u64 {
    let path = format!("/sys/class/net/svpn0/statistics/{name}");
    let out = ns.output("cat", &[&path]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}: {out:?}"))
}

/// A friend of A (a raw WireGuard session in B's namespace, with its own key) sends packets
/// claiming to come from B: A drops and counts them, and delivers nothing.
#[test]
fn forged_source_from_another_friend_is_dropped_and_counted() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    use socialvpn_core::packet::uid_header;
    use socialvpn_core::Uid;

    let mut w = world("forge");
    let secret = StaticSecret::from([77u8; 32]);
    let public = PublicKey::from(&secret);
    let rogue_port = 51999;
    w.node_a.add_peer(
        &hex::encode(public.as_bytes()),
        &format!("{B_UNDERLAY}:{rogue_port}"),
    );
    let a_key: [u8; 32] = hex::decode(&w.node_a.public_key)
        .unwrap()
        .try_into()
        .unwrap();
    let a_uid: Uid = w.node_a.uid.parse().unwrap();
    let b_uid: Uid = w.node_b.uid.parse().unwrap();
    let rogue_uid = Uid::from_public_key(public.as_bytes());
    let a_endpoint: SocketAddr = format!("{A_UNDERLAY}:{PORT}").parse().unwrap();
    // Any packet from this friend to A's own address.
    let a_own: std::net::Ipv4Addr = w.node_a.ipv4.parse().unwrap();
    let sent_ok =
        w.b.run(move || {
            let sock = UdpSocket::bind((B_UNDERLAY, rogue_port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut tunn = Tunn::new(secret, PublicKey::from(a_key), None, None, 3, None);
            let mut out = vec![0u8; 2048];
            let mut inbuf = vec![0u8; 2048];
            let TunnResult::WriteToNetwork(init) =
                tunn.format_handshake_initiation(&mut out, false)
            else {
                panic!("no initiation");
            };
            sock.send_to(init, a_endpoint).unwrap();
            let (n, _) = sock.recv_from(&mut inbuf).unwrap();
            if let TunnResult::WriteToNetwork(keepalive) =
                tunn.decapsulate(None, &inbuf[..n], &mut out)
            {
                sock.send_to(keepalive, a_endpoint).unwrap();
            }
            // An ICMP echo (any content) from "B", and one with an honest header.
            let mut ip = vec![
                0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 100, 64, 0, 99, 0, 0, 0, 0, 8, 0, 0xf7,
                0xff, 0, 0, 0, 0,
            ];
            ip[16..20].copy_from_slice(&a_own.octets());
            let mut sent = 0;
            for src in [b_uid, b_uid, rogue_uid] {
                let mut plain = ip.clone();
                plain.extend_from_slice(&[0u8; 40]);
                uid_header::write(&mut plain[ip.len()..], &src, &a_uid);
                if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&plain, &mut out) {
                    sock.send_to(d, a_endpoint).unwrap();
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            sent
        })
        .join()
        .unwrap();
    assert_eq!(sent_ok, 3);
    assert_eq!(w.node_a.drops("source_uid_mismatch"), 2);
    let counters = w.node_a.ask(Request::Status)["counters"].take();
    assert_eq!(
        counters["tun_tx"]["packets"], 1,
        "only the honest packet reaches A's tun: {counters}"
    );
}

#[test]
fn restart_keeps_key_uid_and_address_map() {
    let mut w = world("restart");
    assert!(ping(&w.a, &w.b_at_a));
    let (uid, key, ipv4) = (
        w.node_a.uid.clone(),
        w.node_a.public_key.clone(),
        w.node_a.ipv4.clone(),
    );
    w.restart_a();
    assert_eq!(w.node_a.uid, uid);
    assert_eq!(w.node_a.public_key, key);
    assert_eq!(w.node_a.ipv4, ipv4);
    let b_key = w.node_b.public_key.clone();
    let b_again = w.node_a.add_peer(&b_key, &format!("{B_UNDERLAY}:{PORT}"));
    assert_eq!(b_again, w.b_at_a, "B keeps the address A gave it");
    assert!(ping(&w.a, &w.b_at_a), "traffic resumes after the restart");
    assert!(ping(&w.b, &w.a_at_b));
}
