//! What a hostile contact signs and sends: device keys it holds, link signals with real,
//! random or stale proofs, and randomness for ids and keys.

use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::social::payload::{
    DeviceInfo, IceCredentials, Signal, SignalKind, SignalWire, SignedSignal,
};
use socialvpn_core::social::proof::{self, Proof, PROOF_LEN};
use socialvpn_core::uid::Uid;
use std::io::Read;
use xmpp_parsers::jid::FullJid;

/// A device key the attacker really holds: what a friend who runs SocialVPN has, or one of
/// the keys a flood mints.
pub struct Forger {
    identity: DeviceIdentity,
}

impl Default for Forger {
    fn default() -> Self {
        Self::new()
    }
}

impl Forger {
    pub fn new() -> Forger {
        Forger {
            identity: DeviceIdentity::generate(),
        }
    }

    /// A key whose UID sorts below `uid`: the device with `uid` is then the ICE-controlled
    /// side of a link with this key, and answers its offers.
    pub fn below(uid: &Uid) -> Forger {
        for _ in 0..1_000_000 {
            let forger = Forger::new();
            if forger.identity.uid() < *uid {
                return forger;
            }
        }
        panic!("no key with a UID below {uid} in a million tries");
    }

    pub fn device(&self) -> DeviceInfo {
        DeviceInfo::new(*self.identity.public_key().as_bytes())
    }

    pub fn uid(&self) -> Uid {
        self.identity.uid()
    }

    /// The proof this key makes for `signal` from `from` to the device with `peer_key` at
    /// `to`, dated `at` (seconds since the epoch).
    pub fn prove(
        &self,
        peer_key: &[u8; 32],
        from: &FullJid,
        to: &FullJid,
        at: u64,
        signal: &Signal,
    ) -> Proof {
        proof::sign(&self.identity, peer_key, from, to, at, signal)
            .expect("a peer key an exchange can be made with (not of low order)")
    }

    /// `signal` with a proof of this key made now: what the key holder's node would send.
    pub fn signed(
        &self,
        signal: &Signal,
        peer_key: &[u8; 32],
        from: &FullJid,
        to: &FullJid,
    ) -> SignalWire {
        let proof = self.prove(peer_key, from, to, unix_now(), signal);
        wire(signal, Some(proof))
    }
}

/// A device announcement for a freshly minted key.
pub fn fresh_device() -> DeviceInfo {
    Forger::new().device()
}

/// The announcement of the device with this public key (hex, as the nodes print it): what
/// anyone who sees its presence can copy.
pub fn device_of(public_key_hex: &str) -> DeviceInfo {
    let mut key = [0u8; 32];
    hex::decode_to_slice(public_key_hex, &mut key).expect("a 32-byte hex public key");
    DeviceInfo::new(key)
}

/// An offer from `from` for ICE session `session` with fresh credentials and `candidates`
/// (lines as in SDP, without the `candidate:` prefix).
pub fn offer(from: DeviceInfo, session: u64, candidates: &[&str]) -> Signal {
    Signal {
        kind: SignalKind::Offer,
        session,
        from,
        credentials: Some(IceCredentials {
            ufrag: format!("atk{:08x}", random_u64() as u32),
            pwd: hex::encode(random_bytes::<16>()),
        }),
        candidates: candidates.iter().map(|c| c.to_string()).collect(),
    }
}

/// A request for a fresh offer from `from`.
pub fn restart(from: DeviceInfo, session: u64) -> Signal {
    Signal {
        kind: SignalKind::Restart,
        session,
        from,
        credentials: None,
        candidates: vec![],
    }
}

/// The wire form of `signal` with `proof` (or none).
pub fn wire(signal: &Signal, proof: Option<Proof>) -> SignalWire {
    SignedSignal {
        signal: signal.clone(),
        proof,
    }
    .to_wire()
}

/// A proof of random bytes dated `at`: what someone without the key can make.
pub fn random_proof(at: u64) -> Proof {
    Proof {
        at,
        mac: random_bytes::<PROOF_LEN>(),
    }
}

/// Seconds since the epoch (signal proofs carry wall-clock time).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom");
    bytes
}

pub fn random_u64() -> u64 {
    u64::from_be_bytes(random_bytes::<8>())
}
