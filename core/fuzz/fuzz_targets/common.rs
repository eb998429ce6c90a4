//! A data plane with real links for the fuzz targets, built once per process.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use socialvpn_core::addrbook::AddressBook;
use socialvpn_core::dataplane::{DataPlane, NetSink, TunSink};
use socialvpn_core::identity::DeviceIdentity;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

pub struct Discard;
impl NetSink for Discard {
    fn send_to(&mut self, _: SocketAddr, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}
impl TunSink for Discard {
    fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        // What reaches the tun must be a whole, valid IP packet.
        assert!(!packet.is_empty() && matches!(packet[0] >> 4, 4 | 6));
        Ok(())
    }
}

pub const PEER_ADDR: ([u8; 4], u16) = ([198, 18, 0, 2], 51820);

pub struct Fixture {
    pub dp: DataPlane,
    /// The friend's side of an established session with `dp`.
    pub peer: Tunn,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("svpn-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let identity = DeviceIdentity::from_secret(StaticSecret::from([1u8; 32]));
        let book = AddressBook::open(&dir, "100.64.0.0/24".parse().unwrap()).unwrap();
        let mut dp = DataPlane::new(identity, book);
        let now = Instant::now();
        let peer_secret = StaticSecret::from([2u8; 32]);
        let peer_public = PublicKey::from(&peer_secret);
        let endpoint = SocketAddr::from(PEER_ADDR);
        dp.add_peer(now, *peer_public.as_bytes(), Some(endpoint), None).unwrap();
        // A second friend so routing has a choice.
        let other = PublicKey::from(&StaticSecret::from([3u8; 32]));
        dp.add_peer(now, *other.as_bytes(), Some(SocketAddr::from(([198, 18, 0, 3], 1))), None)
            .unwrap();
        let mut peer = Tunn::new(peer_secret, *dp.identity().public_key(), None, None, 9, None);

        // Handshake: the friend initiates, the data plane answers.
        struct Capture(Vec<Vec<u8>>);
        impl NetSink for Capture {
            fn send_to(&mut self, _: SocketAddr, d: &[u8]) -> io::Result<()> {
                self.0.push(d.to_vec());
                Ok(())
            }
        }
        let mut out = vec![0u8; 2048];
        let TunnResult::WriteToNetwork(init) = peer.format_handshake_initiation(&mut out, false) else {
            panic!("no initiation");
        };
        let init = init.to_vec();
        let mut replies = Capture(Vec::new());
        dp.handle_net_datagram(now, endpoint, &init, &mut replies, &mut Discard);
        for reply in replies.0 {
            if let TunnResult::WriteToNetwork(k) = peer.decapsulate(None, &reply, &mut out) {
                let k = k.to_vec();
                dp.handle_net_datagram(now, endpoint, &k, &mut Discard, &mut Discard);
            }
        }
        Fixture { dp, peer }
    }
}
