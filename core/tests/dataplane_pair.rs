//! Two data planes wired back to back in memory: deterministic, no sockets, no sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use etherparse::{Ipv4Header, PacketBuilder};
use socialvpn_core::addrbook::AddressBook;
use socialvpn_core::dataplane::{DataPlane, NetSink, TunSink, TUN_BUFFER};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::packet::uid_header;
use socialvpn_core::subnet::ula_address;
use socialvpn_core::{DropReason, Uid};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

#[derive(Default)]
struct Wire(Vec<(SocketAddr, Vec<u8>)>, Option<[u8; 32]>);
impl NetSink for Wire {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.0.push((dst, datagram.to_vec()));
        Ok(())
    }

    /// Built in place, as the engine's socket batch builds them: the data plane's in-place
    /// path is the one these tests drive (the fallback through `send_to` stays for what is
    /// not a data packet on a direct path).
    fn send_built_to(
        &mut self,
        dst: SocketAddr,
        _expect: usize,
        room: usize,
        build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        let mut datagram = vec![0u8; room];
        let len = build(&mut datagram);
        if len > 0 {
            datagram.truncate(len);
            self.0.push((dst, datagram));
        }
        Some(Ok(len))
    }

    /// The link layer under this wire is connecting to the device with key `.1`.
    fn connecting_key(&mut self, uid: &Uid) -> Option<[u8; 32]> {
        self.1.filter(|key| Uid::from_public_key(key) == *uid)
    }
}

#[derive(Default)]
struct Tun(Vec<Vec<u8>>);
impl TunSink for Tun {
    fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.push(packet.to_vec());
        Ok(())
    }
}

struct Node {
    dp: DataPlane,
    addr: SocketAddr,
    wire: Wire,
    tun: Tun,
    _dir: tempfile::TempDir,
}

impl Node {
    fn new(subnet: &str, port: u16) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let identity = DeviceIdentity::load_or_create(dir.path()).unwrap();
        let book = AddressBook::open(dir.path(), subnet.parse().unwrap()).unwrap();
        Node {
            dp: DataPlane::new(identity, book),
            addr: SocketAddr::from(([198, 18, 0, port as u8], port)),
            wire: Wire::default(),
            tun: Tun::default(),
            _dir: dir,
        }
    }

    fn key(&self) -> [u8; 32] {
        *self.dp.identity().public_key().as_bytes()
    }

    fn send_ip(&mut self, now: Instant, packet: &[u8]) {
        let mut buf = [0u8; TUN_BUFFER];
        buf[..packet.len()].copy_from_slice(packet);
        self.dp
            .handle_tun_packet(now, &mut buf, packet.len(), &mut self.wire);
    }

    /// A UDP packet from this device's own address to the one it gave `peer`.
    fn send_udp_to(&mut self, now: Instant, peer: &Uid, payload: &[u8]) {
        let book = self.dp.address_book();
        let packet = udp(book.own_address(), book.address_of(peer).unwrap(), payload);
        self.send_ip(now, &packet);
    }
}

/// Moves datagrams between the nodes until none are in flight.
fn pump(now: Instant, nodes: &mut [&mut Node]) {
    for _ in 0..20 {
        let mut moved = false;
        for i in 0..nodes.len() {
            let outgoing = std::mem::take(&mut nodes[i].wire.0);
            let from = nodes[i].addr;
            for (dst, datagram) in outgoing {
                moved = true;
                if let Some(target) = nodes.iter_mut().find(|n| n.addr == dst) {
                    let Node { dp, wire, tun, .. } = &mut **target;
                    dp.handle_net_datagram(now, from, &datagram, wire, tun);
                }
            }
        }
        if !moved {
            return;
        }
    }
    panic!("datagrams kept flowing");
}

fn link(a: &mut Node, b: &mut Node, now: Instant) -> (Uid, Uid) {
    let ub = a.dp.add_peer(now, b.key(), Some(b.addr), None).unwrap();
    let ua = b.dp.add_peer(now, a.key(), Some(a.addr), None).unwrap();
    (ub, ua)
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(4000, 5000)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn packets_are_translated_into_each_users_view() {
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    let (ub, ua) = link(&mut a, &mut b, now);
    let b_at_a = a.dp.address_book().address_of(&ub).unwrap();
    let a_at_b = b.dp.address_book().address_of(&ua).unwrap();
    let a_own = a.dp.address_book().own_address();
    let b_own = b.dp.address_book().own_address();

    // The first packet is queued during the handshake and delivered after it.
    a.send_ip(now, &udp(a_own, b_at_a, b"hello"));
    pump(now, &mut [&mut a, &mut b]);
    assert_eq!(b.tun.0.len(), 1, "{:?}", b.dp.counters());
    let (ip, rest) = Ipv4Header::from_slice(&b.tun.0[0]).unwrap();
    assert_eq!(Ipv4Addr::from(ip.source), a_at_b);
    assert_eq!(Ipv4Addr::from(ip.destination), b_own);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert!(rest.ends_with(b"hello"));

    // And back, in A's view.
    b.send_ip(now, &udp(b_own, a_at_b, b"world"));
    pump(now, &mut [&mut a, &mut b]);
    let (ip, _) = Ipv4Header::from_slice(&a.tun.0[0]).unwrap();
    assert_eq!(Ipv4Addr::from(ip.source), b_at_a);
    assert_eq!(Ipv4Addr::from(ip.destination), a_own);
    assert_eq!(a.dp.counters().drops.total(), 0);
    assert_eq!(b.dp.counters().drops.total(), 0);
    assert_eq!(a.dp.links()[0].counters.rx.packets, 1);
}

#[test]
fn broadcast_reaches_every_friend_as_their_broadcast() {
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    let mut c = Node::new("100.66.0.0/24", 3);
    link(&mut a, &mut b, now);
    link(&mut a, &mut c, now);
    let own = a.dp.address_book().own_address();
    a.send_ip(now, &udp(own, Ipv4Addr::new(100, 64, 255, 255), b"bcast"));
    a.send_ip(now, &udp(own, Ipv4Addr::new(224, 0, 0, 251), b"mdns"));
    pump(now, &mut [&mut a, &mut b, &mut c]);
    for (node, bcast) in [
        (&b, Ipv4Addr::new(100, 65, 255, 255)),
        (&c, Ipv4Addr::new(100, 66, 0, 255)),
    ] {
        let dsts: Vec<Ipv4Addr> = node
            .tun
            .0
            .iter()
            .map(|p| Ipv4Addr::from(Ipv4Header::from_slice(p).unwrap().0.destination))
            .collect();
        assert_eq!(dsts, vec![bcast, Ipv4Addr::new(224, 0, 0, 251)]);
    }
}

#[test]
fn bad_tun_input_is_counted_not_sent() {
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    link(&mut a, &mut b, now);
    let own = a.dp.address_book().own_address();
    a.send_ip(now, &[]);
    a.send_ip(now, &[0x45, 0, 0]);
    a.send_ip(now, &[0x20; 40]);
    let mut bad_ihl = udp(own, Ipv4Addr::new(100, 64, 0, 9), b"x");
    bad_ihl[0] = 0x43;
    a.send_ip(now, &bad_ihl);
    a.send_ip(now, &udp(own, Ipv4Addr::new(100, 64, 3, 3), b"nobody"));
    a.send_ip(now, &udp(own, Ipv4Addr::new(198, 18, 0, 1), b"outside"));
    let mut buf = vec![0x45u8; TUN_BUFFER];
    a.dp.handle_tun_packet(now, &mut buf, 1501, &mut a.wire);
    let drops = a.dp.counters().drops;
    assert_eq!(drops.get(DropReason::Truncated), 2);
    assert_eq!(drops.get(DropReason::NotIp), 1);
    assert_eq!(drops.get(DropReason::BadHeaderLength), 1);
    assert_eq!(drops.get(DropReason::UnknownDestination), 1);
    assert_eq!(drops.get(DropReason::NoRoute), 1);
    assert_eq!(drops.get(DropReason::Oversized), 1);
    assert!(a.wire.0.is_empty());
}

/// A friend who forges the UID header or its IPv6 source: a raw boringtun session with the
/// friend's real key, so the forgery is authenticated but lies about who sent the packet.
#[test]
fn forged_sources_are_dropped_and_counted() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let other = Node::new("100.67.0.0/16", 4);
    let rogue_secret = StaticSecret::from([42u8; 32]);
    let rogue_public = PublicKey::from(&rogue_secret);
    let rogue_addr = SocketAddr::from(([198, 18, 0, 9], 9));
    a.dp.add_peer(now, *rogue_public.as_bytes(), Some(rogue_addr), None)
        .unwrap();
    let victim =
        a.dp.add_peer(now, other.key(), Some(other.addr), None)
            .unwrap();
    let mut rogue = Tunn::new(
        rogue_secret,
        *a.dp.identity().public_key(),
        None,
        None,
        7,
        None,
    );

    let mut out = vec![0u8; 2048];
    let deliver = |a: &mut Node, datagram: &[u8], rogue: &mut Tunn| {
        a.dp.handle_net_datagram(now, rogue_addr, datagram, &mut a.wire, &mut a.tun);
        for (_, reply) in std::mem::take(&mut a.wire.0) {
            let mut tmp = vec![0u8; 2048];
            if let TunnResult::WriteToNetwork(r) = rogue.decapsulate(None, &reply, &mut tmp) {
                let r = r.to_vec();
                a.dp.handle_net_datagram(now, rogue_addr, &r, &mut a.wire, &mut a.tun);
            }
        }
    };
    // Handshake.
    let TunnResult::WriteToNetwork(init) = rogue.format_handshake_initiation(&mut out, false)
    else {
        panic!("no initiation");
    };
    let init = init.to_vec();
    deliver(&mut a, &init, &mut rogue);

    let a_uid = a.dp.uid();
    let rogue_uid = Uid::from_public_key(rogue_public.as_bytes());
    let send = |a: &mut Node, rogue: &mut Tunn, ip: &[u8], src: &Uid, dst: &Uid| {
        let mut plain = ip.to_vec();
        plain.extend_from_slice(&[0u8; 40]);
        uid_header::write(&mut plain[ip.len()..], src, dst);
        let mut buf = vec![0u8; 2048];
        match rogue.encapsulate(&plain, &mut buf) {
            TunnResult::WriteToNetwork(d) => {
                let d = d.to_vec();
                a.dp.handle_net_datagram(now, rogue_addr, &d, &mut a.wire, &mut a.tun);
            }
            _ => panic!("rogue session not up"),
        }
    };
    let ip4 = udp(
        Ipv4Addr::new(100, 90, 0, 1),
        Ipv4Addr::new(100, 64, 0, 1),
        b"x",
    );
    send(&mut a, &mut rogue, &ip4, &victim, &a_uid);
    assert_eq!(a.dp.counters().drops.get(DropReason::SourceUidMismatch), 1);
    send(&mut a, &mut rogue, &ip4, &rogue_uid, &victim);
    assert_eq!(
        a.dp.counters()
            .drops
            .get(DropReason::DestinationUidMismatch),
        1
    );
    // An IPv6 packet claiming the victim's address.
    let mut ip6 = Vec::new();
    PacketBuilder::ipv6(
        ula_address(&victim).octets(),
        ula_address(&a_uid).octets(),
        64,
    )
    .udp(1, 2)
    .write(&mut ip6, b"y")
    .unwrap();
    send(&mut a, &mut rogue, &ip6, &rogue_uid, &a_uid);
    assert_eq!(a.dp.counters().drops.get(DropReason::AddressMismatch), 1);
    // A bare IP packet without a UID header.
    let mut buf = vec![0u8; 2048];
    if let TunnResult::WriteToNetwork(d) = rogue.encapsulate(&ip4, &mut buf) {
        let d = d.to_vec();
        a.dp.handle_net_datagram(now, rogue_addr, &d, &mut a.wire, &mut a.tun);
    }
    assert_eq!(a.dp.counters().drops.get(DropReason::MissingUidHeader), 1);
    assert!(a.tun.0.is_empty());
    // The honest packet passes, translated.
    send(&mut a, &mut rogue, &ip4, &rogue_uid, &a_uid);
    assert_eq!(a.tun.0.len(), 1);
    // Garbage and unknown senders.
    a.dp.handle_net_datagram(now, rogue_addr, &[1, 0, 0, 0, 9], &mut a.wire, &mut a.tun);
    a.dp.handle_net_datagram(now, rogue_addr, b"GET / HTTP/1.1", &mut a.wire, &mut a.tun);
    assert_eq!(a.dp.counters().drops.get(DropReason::UnknownPeer), 2);
}

#[test]
fn links_sleep_after_traffic() {
    use std::time::Duration;
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    let (ub, ua) = link(&mut a, &mut b, now);
    // One datagram each way: both sides heard the other after they last sent.
    let t1 = now + Duration::from_secs(1);
    a.send_udp_to(t1, &ub, b"x");
    pump(t1, &mut [&mut a, &mut b]);
    b.send_udp_to(t1, &ua, b"y");
    pump(t1, &mut [&mut a, &mut b]);
    // Step virtual time through each side's timers for a minute: no 250 ms ticking, only
    // the moments boringtun's timers can act (a keepalive owed 10 s on) and the path watch.
    for (name, node) in [("a", &mut a), ("b", &mut b)] {
        let mut ticks = Vec::new();
        while let Some(d) = node.dp.poll_timeout() {
            if d > t1 + Duration::from_secs(60) || ticks.len() > 10 {
                break;
            }
            node.dp.handle_timeout(d, &mut node.wire);
            ticks.push(d - t1);
        }
        assert!(ticks.len() <= 2, "{name} ticked at {ticks:?}");
        let next = node.dp.poll_timeout().unwrap();
        assert!(
            next >= now + Duration::from_secs(500),
            "{name}: next tick {:?}",
            next - now
        );
    }
}

#[test]
fn endpoint_follows_authentic_datagrams_only() {
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    let (_, ua) = link(&mut a, &mut b, now);
    b.send_udp_to(now, &ua, b"first");
    pump(now, &mut [&mut a, &mut b]);
    assert_eq!(a.tun.0.len(), 1);

    // B roams: its next packet arrives from a new address; A follows.
    let roamed = SocketAddr::from(([198, 19, 9, 9], 4444));
    b.send_udp_to(now, &ua, b"moved");
    let (_, datagram) = b.wire.0.pop().unwrap();
    // A forged copy (one flipped byte) from yet another address changes nothing.
    let mut forged = datagram.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let attacker = SocketAddr::from(([198, 18, 6, 6], 6666));
    a.dp.handle_net_datagram(now, attacker, &forged, &mut a.wire, &mut a.tun);
    assert_eq!(a.dp.links()[0].endpoint, Some(b.addr));
    a.dp.handle_net_datagram(now, roamed, &datagram, &mut a.wire, &mut a.tun);
    assert_eq!(a.dp.links()[0].endpoint, Some(roamed));
    assert_eq!(a.tun.0.len(), 2);
    assert_eq!(a.dp.counters().drops.get(DropReason::WireGuardRejected), 1);
}

#[test]
fn a_connecting_device_gets_its_link_when_first_needed() {
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut b = Node::new("100.65.0.0/16", 2);
    let ub = Uid::from_public_key(&b.key());
    let ua = Uid::from_public_key(&a.key());
    let b_at_a = a.dp.address_book_mut().assign(ub).unwrap();
    b.dp.address_book_mut().assign(ua).unwrap();
    // b has a link to a (its ICE reported the path first); a's link layer is still
    // connecting to b and a's data plane holds nothing for it yet.
    b.dp.add_peer(now, a.key(), Some(a.addr), None).unwrap();
    a.wire.1 = Some(b.key());
    assert!(!a.dp.has_link(&ub));

    // A packet for b makes the link; it waits in the link's queue for the session.
    let packet = udp(a.dp.address_book().own_address(), b_at_a, b"early");
    a.send_ip(now, &packet);
    assert!(a.dp.has_link(&ub));
    assert_eq!(a.dp.counters().drops.get(DropReason::NoLink), 0);
    // b's handshake finds that link; the session delivers what waited.
    b.dp.initiate(now, &ua, &mut b.wire);
    pump(now, &mut [&mut a, &mut b]);
    assert_eq!(b.tun.0.len(), 1, "the early packet arrives");
    assert!(b.tun.0[0].ends_with(b"early"));

    // c's handshake reaches a before a's data plane has any link to c (a's ICE has not
    // reported the path yet): a link is made for it and the handshake answered at once.
    let mut c = Node::new("100.66.0.0/16", 3);
    c.dp.address_book_mut().assign(ua).unwrap();
    a.dp.address_book_mut()
        .assign(Uid::from_public_key(&c.key()))
        .unwrap();
    c.dp.add_peer(now, a.key(), Some(a.addr), None).unwrap();
    c.dp.initiate(now, &ua, &mut c.wire);
    a.wire.1 = Some(c.key());
    pump(now, &mut [&mut a, &mut c]);
    assert!(a.dp.has_link(&Uid::from_public_key(&c.key())));
    assert_eq!(a.dp.counters().drops.get(DropReason::UnknownPeer), 0);
    let a_at_c = c.dp.address_book().address_of(&ua).unwrap();
    c.send_ip(
        now,
        &udp(c.dp.address_book().own_address(), a_at_c, b"from c"),
    );
    pump(now, &mut [&mut a, &mut c]);
    assert!(a.tun.0.iter().any(|p| p.ends_with(b"from c")));

    // A device the link layer is not connecting to still gets no link from a packet.
    a.wire.1 = None;
    let mut d = Node::new("100.67.0.0/16", 4);
    let ud = Uid::from_public_key(&d.key());
    let d_at_a = a.dp.address_book_mut().assign(ud).unwrap();
    a.send_ip(now, &udp(a.dp.address_book().own_address(), d_at_a, b"x"));
    assert!(!a.dp.has_link(&ud));
    assert_eq!(a.dp.counters().drops.get(DropReason::NoLink), 1);
    // Nor does its handshake.
    d.dp.address_book_mut().assign(ua).unwrap();
    d.dp.add_peer(now, a.key(), Some(a.addr), None).unwrap();
    d.dp.initiate(now, &ua, &mut d.wire);
    pump(now, &mut [&mut a, &mut d]);
    assert!(!a.dp.has_link(&ud));
    assert_eq!(a.dp.counters().drops.get(DropReason::UnknownPeer), 1);
}

#[test]
fn a_forged_handshake_for_a_connecting_device_leaves_no_link() {
    use blake2::digest::{consts::U16, FixedOutput, Mac};
    use blake2::{Blake2s256, Blake2sMac, Digest};
    let now = Instant::now();
    let mut a = Node::new("100.64.0.0/16", 1);
    let mut x = Node::new("100.65.0.0/16", 2);
    let (ua, ux) = (
        Uid::from_public_key(&a.key()),
        Uid::from_public_key(&x.key()),
    );
    a.dp.address_book_mut().assign(ux).unwrap();
    x.dp.address_book_mut().assign(ua).unwrap();
    x.dp.add_peer(now, a.key(), Some(a.addr), None).unwrap();
    x.dp.initiate(now, &ua, &mut x.wire);
    let (_, init) = x.wire.0.pop().unwrap();
    assert_eq!((init[0], init.len()), (1, 148), "a handshake initiation");
    // Anyone who knows a's public key (it is in a's presence) can claim x's key in the
    // initiation's static field, and compute its MAC; not the timestamp only x can encrypt.
    let mut forged = init.clone();
    forged[100] ^= 0x55; // inside the encrypted timestamp (bytes 88..116)
    let mac1_key = Blake2s256::new()
        .chain_update(b"mac1----")
        .chain_update(a.key())
        .finalize();
    let mut mac1 = <Blake2sMac<U16> as Mac>::new_from_slice(&mac1_key).unwrap();
    Mac::update(&mut mac1, &forged[..116]);
    forged[116..132].copy_from_slice(&mac1.finalize_fixed());
    a.wire.1 = Some(x.key());
    a.dp.handle_net_datagram(now, x.addr, &forged, &mut a.wire, &mut a.tun);
    assert!(
        !a.dp.has_link(&ux),
        "a forged handshake left WireGuard state"
    );
    assert_eq!(
        a.dp.counters().drops.get(DropReason::WireGuardRejected),
        1,
        "the forgery reached the handshake check (its MAC was right)"
    );
    assert!(a.wire.0.is_empty(), "a forgery is not answered");
    // x's own initiation still makes the link, and is answered.
    a.dp.handle_net_datagram(now, x.addr, &init, &mut a.wire, &mut a.tun);
    assert!(a.dp.has_link(&ux));
    assert_eq!(a.wire.0.len(), 1);
}
