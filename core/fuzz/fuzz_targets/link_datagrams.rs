//! What anyone who knows the UDP port, or the TURN server's path, can send a linked device:
//! raw datagrams from the server, from the friend, from anywhere; mutated copies of real STUN
//! checks; TURN Data indications and ChannelData carrying anything, including WireGuard that
//! the data plane then opens (the TURN relayed-data path end to end); mutated signals; time.
//! Never a panic, and the link manager keeps answering.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;
mod links_world;

use boringtun::noise::TunnResult;
use libfuzzer_sys::fuzz_target;
use links_world::World;
use rtc_stun::message::{Message, MessageType, Setter, CLASS_INDICATION, METHOD_DATA};
use rtc_turn::proto::chandata::ChannelData;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::peeraddr::PeerAddress;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// A data plane with a WireGuard session to bob's mapped address.
static PAIR: Mutex<Option<common::Pair>> = Mutex::new(None);

/// Reads the fuzz input as a sequence of operations.
struct Ops<'a>(&'a [u8]);

impl<'a> Ops<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    /// A length-prefixed chunk (what is left if shorter).
    fn chunk(&mut self) -> &'a [u8] {
        let len = self.u16().unwrap_or(0) as usize % 1600;
        let (chunk, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        chunk
    }
}

fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(rtc_stun::message::TransactionId::new()),
        Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
        Box::new(PeerAddress {
            ip: peer.ip(),
            port: peer.port(),
        }),
        Box::new(Data(data.to_vec())),
    ];
    let mut m = Message::new();
    m.build(&setters).expect("a Data indication");
    m.raw
}

fuzz_target!(|data: &[u8]| {
    let mut w = World::new();
    let mut guard = PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let pair = guard.get_or_insert_with(common::Pair::new);
    let mut ops = Ops(data);
    let mut sealed = vec![0u8; 2048];
    for _ in 0..32 {
        let Some(op) = ops.byte() else { break };
        let (server, a_host, b_host, b_mapped) = (w.a.server, w.a.host, w.b.host, w.b.mapped);
        let relayed = |w: &mut World, bytes: Vec<u8>| {
            w.a.m.handle_datagram(w.now, a_host, server, &bytes);
        };
        match op % 9 {
            0 => relayed(&mut w, ops.chunk().to_vec()),
            1 => {
                let peer = if ops.byte().unwrap_or(0) & 1 == 0 {
                    b_mapped
                } else {
                    w.b.relay
                };
                relayed(&mut w, data_indication(peer, ops.chunk()));
            }
            2 => {
                // WireGuard from the friend, relayed: the data plane must open it.
                let plain = ops.chunk();
                if let TunnResult::WriteToNetwork(d) = pair.peer.encapsulate(plain, &mut sealed) {
                    let d = d.to_vec();
                    relayed(&mut w, data_indication(b_mapped, &d));
                }
            }
            3 => {
                let number = ChannelNumber(0x4000 | (ops.u16().unwrap_or(0) & 0x3fff));
                let mut cd = ChannelData {
                    data: ops.chunk().to_vec(),
                    number,
                    raw: Vec::new(),
                };
                cd.encode();
                relayed(&mut w, cd.raw);
            }
            4 => {
                let bytes = ops.chunk();
                w.a.m.handle_datagram(w.now, a_host, b_host, bytes);
            }
            5 => {
                let ip = [198, 18, ops.byte().unwrap_or(0), ops.byte().unwrap_or(0)];
                let from = SocketAddr::from((ip, ops.u16().unwrap_or(0)));
                let bytes = ops.chunk();
                w.a.m.handle_datagram(w.now, a_host, from, bytes);
            }
            6 => {
                // A real check from bob, with bytes flipped.
                if w.b_to_a.is_empty() {
                    continue;
                }
                let pick = ops.byte().unwrap_or(0) as usize % w.b_to_a.len();
                let mut copy = w.b_to_a[pick].clone();
                for _ in 0..(ops.byte().unwrap_or(0) % 8) {
                    let at = ops.u16().unwrap_or(0) as usize;
                    let x = ops.byte().unwrap_or(0);
                    let len = copy.len().max(1);
                    if let Some(b) = copy.get_mut(at % len) {
                        *b ^= x;
                    }
                }
                w.a.m.handle_datagram(w.now, a_host, b_host, &copy);
            }
            7 => {
                // A signal of bob's, replayed with other candidates or session.
                if w.b.signals.is_empty() {
                    continue;
                }
                let pick = ops.byte().unwrap_or(0) as usize % w.b.signals.len();
                let mut signal = w.b.signals[pick].clone();
                match ops.byte().unwrap_or(0) % 3 {
                    0 => signal.session ^= u64::from(ops.u16().unwrap_or(0)),
                    1 => {
                        let text = String::from_utf8_lossy(ops.chunk()).into_owned();
                        signal.candidates = text.lines().map(str::to_string).collect();
                    }
                    _ => signal.credentials = None,
                }
                let from = w.b.jid.clone();
                w.a.m.handle_signal(w.now, from, signal);
            }
            _ => {
                let ms = ops.u16().unwrap_or(0);
                w.run_for(Duration::from_millis(u64::from(ms) * 4));
                continue;
            }
        }
        while let Some((peer, bytes)) = w.a.m.poll_relayed_data() {
            let mut tun = common::Sizes::default();
            let mut net = common::Sizes::default();
            let from = if peer == b_mapped {
                pair.peer_endpoint
            } else {
                peer
            };
            pair.dp
                .handle_net_datagram(w.now, from, &bytes, &mut net, &mut tun);
        }
        w.pump();
    }
    // Still answering: time moves on without a panic, and the state is reported.
    w.run_for(Duration::from_secs(1));
    let _ = w.a.m.counters();
});
