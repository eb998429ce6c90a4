//! A data plane with an established session to one friend, shared by the allocation test,
//! the benchmark and the fuzz targets. The friend's side is a raw boringtun `Tunn`.

#![allow(dead_code)]

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use socialvpn_core::addrbook::AddressBook;
use socialvpn_core::dataplane::{DataPlane, NetSink, TunSink};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::packet::uid_header;
use socialvpn_core::Uid;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Sinks that only record sizes: they must not allocate themselves.
#[derive(Default)]
pub struct Sizes {
    pub sent: usize,
    pub written: usize,
}
impl NetSink for Sizes {
    fn send_to(&mut self, _: SocketAddr, d: &[u8]) -> io::Result<()> {
        self.sent += d.len();
        Ok(())
    }
}
impl TunSink for Sizes {
    fn write_packet(&mut self, p: &[u8]) -> io::Result<()> {
        // What reaches the tun must be an IP packet (checked here for the fuzz targets).
        assert!(!p.is_empty() && matches!(p[0] >> 4, 4 | 6));
        self.written += p.len();
        Ok(())
    }
}

/// A socket sink that builds datagrams in place in a fixed buffer, as the engine's send
/// batch does, and records sizes only: it must not allocate either.
pub struct InPlace {
    buf: Box<[u8]>,
    pub sent: usize,
    pub built: usize,
}
impl Default for InPlace {
    fn default() -> InPlace {
        InPlace {
            buf: vec![0u8; 65_000].into_boxed_slice(),
            sent: 0,
            built: 0,
        }
    }
}
impl NetSink for InPlace {
    fn send_to(&mut self, _: SocketAddr, d: &[u8]) -> io::Result<()> {
        self.sent += d.len();
        Ok(())
    }

    fn send_built_to(
        &mut self,
        _dst: SocketAddr,
        _expect: usize,
        room: usize,
        build: &mut dyn FnMut(&mut [u8]) -> usize,
    ) -> Option<io::Result<usize>> {
        let len = build(self.buf.get_mut(..room)?);
        self.sent += len;
        self.built += usize::from(len > 0);
        Some(Ok(len))
    }
}

struct Capture(Vec<Vec<u8>>);
impl NetSink for Capture {
    fn send_to(&mut self, _: SocketAddr, d: &[u8]) -> io::Result<()> {
        self.0.push(d.to_vec());
        Ok(())
    }
}

pub struct Pair {
    pub dp: DataPlane,
    pub peer: Tunn,
    pub peer_uid: Uid,
    pub peer_endpoint: SocketAddr,
    /// The friend's address in our view.
    pub peer_overlay: Ipv4Addr,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub fn new() -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let identity = DeviceIdentity::load_or_create(dir.path()).unwrap();
        let book = AddressBook::open(dir.path(), "100.64.0.0/16".parse().unwrap()).unwrap();
        let mut dp = DataPlane::new(identity, book);
        let now = Instant::now();
        let secret = StaticSecret::from([5u8; 32]);
        let public = PublicKey::from(&secret);
        let peer_endpoint = SocketAddr::from(([198, 18, 0, 2], 51820));
        let peer_uid = dp
            .add_peer(now, *public.as_bytes(), Some(peer_endpoint), None)
            .unwrap();
        let peer_overlay = dp.address_book().address_of(&peer_uid).unwrap();
        let mut peer = Tunn::new(secret, *dp.identity().public_key(), None, None, 4, None);
        let mut out = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(init) = peer.format_handshake_initiation(&mut out, false)
        else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        let mut replies = Capture(Vec::new());
        dp.handle_net_datagram(
            now,
            peer_endpoint,
            &init,
            &mut replies,
            &mut Sizes::default(),
        );
        for reply in replies.0 {
            if let TunnResult::WriteToNetwork(k) = peer.decapsulate(None, &reply, &mut out) {
                let k = k.to_vec();
                dp.handle_net_datagram(
                    now,
                    peer_endpoint,
                    &k,
                    &mut Sizes::default(),
                    &mut Sizes::default(),
                );
            }
        }
        assert!(dp.links()[0].session, "handshake did not complete");
        Pair {
            dp,
            peer,
            peer_uid,
            peer_endpoint,
            peer_overlay,
            _dir: dir,
        }
    }

    /// A UDP packet of `len` bytes from us to the friend, as the tun would deliver it.
    pub fn outbound_udp(&self, len: usize) -> Vec<u8> {
        udp(self.dp.address_book().own_address(), self.peer_overlay, len)
    }

    /// A datagram from the friend carrying a UDP packet of `len` bytes, sealed by its session.
    pub fn inbound_datagram(&mut self, len: usize, out: &mut [u8]) -> usize {
        let mut plain = udp(
            Ipv4Addr::new(100, 99, 0, 7),
            Ipv4Addr::new(100, 99, 0, 1),
            len,
        );
        let ip_len = plain.len();
        plain.resize(ip_len + uid_header::UID_HEADER_LEN, 0);
        uid_header::write(&mut plain[ip_len..], &self.peer_uid, &self.dp.uid());
        match self.peer.encapsulate(&plain, out) {
            TunnResult::WriteToNetwork(d) => d.len(),
            _ => panic!("friend session not up"),
        }
    }
}

pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let payload = vec![0xa5u8; len.saturating_sub(28)];
    let mut out = Vec::new();
    etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(4000, 5000)
        .write(&mut out, &payload)
        .unwrap();
    out
}
