//! Proof that a link signal comes from the holder of the device key it names, meant for this
//! device, from this account, and recent.
//!
//! Presence is public: anyone who sees a friend's `<device/>` announcement can copy it into
//! their own. What only the device can do is use its key. Every signal therefore carries an
//! HMAC-SHA256 over its content, both full JIDs and a timestamp, keyed with the X25519 secret
//! the two devices share (our key with theirs): a friend or a server cannot make one for a
//! device whose key they lack, move one to another sender or receiver, or change it. A
//! signal older or newer than [`MAX_SKEW`] is refused (replays of recent ones meet the link
//! manager's session checks).

use super::payload::Signal;
use crate::identity::DeviceIdentity;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use xmpp_parsers::jid::FullJid;

/// Label of the key derived from the devices' shared X25519 secret.
const KEY_LABEL: &[u8] = b"socialvpn-signal-key-v1";
/// Label that starts every signed transcript.
const TRANSCRIPT_LABEL: &[u8] = b"socialvpn-signal-v1";
/// How far a signal's time may be from ours (clocks of phones drift; a replay must be recent).
pub const MAX_SKEW: u64 = 600;
/// Length of a proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;

/// A signal's proof: its time (seconds since the epoch) and the MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    pub at: u64,
    pub mac: [u8; PROOF_LEN],
}

/// Why a proof was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofError {
    /// The signal carries no proof.
    Missing,
    /// Too old or too far in the future.
    Stale,
    /// The MAC does not match: not from the key holder, or not for this sender/receiver.
    Forged,
}

fn mac(
    own: &DeviceIdentity,
    peer_key: &[u8; 32],
    from: &FullJid,
    to: &FullJid,
    at: u64,
    signal: &Signal,
) -> Option<Hmac<Sha256>> {
    let key = own.shared_key(peer_key, KEY_LABEL)?;
    let mut m = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    // Every field length-prefixed, so no two different transcripts read the same.
    let mut field = |bytes: &[u8]| {
        m.update(&(bytes.len() as u64).to_be_bytes());
        m.update(bytes);
    };
    field(TRANSCRIPT_LABEL);
    field(from.as_str().as_bytes());
    field(to.as_str().as_bytes());
    field(&at.to_be_bytes());
    let wire = signal.to_wire();
    for text in [&wire.kind, &wire.session, &wire.uid, &wire.key] {
        field(text.as_bytes());
    }
    for text in [&wire.ufrag, &wire.pwd] {
        field(text.as_deref().unwrap_or("-").as_bytes());
    }
    field(&(wire.candidates.len() as u64).to_be_bytes());
    for c in &wire.candidates {
        field(c.line.as_bytes());
    }
    Some(m)
}

/// Signs `signal`, sent by `own` from `from` to the device with key `peer_key` at `to`.
/// None only for a peer key no exchange can be made with (low order).
pub fn sign(
    own: &DeviceIdentity,
    peer_key: &[u8; 32],
    from: &FullJid,
    to: &FullJid,
    at: u64,
    signal: &Signal,
) -> Option<Proof> {
    let m = mac(own, peer_key, from, to, at, signal)?;
    Some(Proof {
        at,
        mac: m.finalize().into_bytes().into(),
    })
}

/// Checks the proof of `signal` received by `own` at `to` from `from`, at time `now`
/// (seconds since the epoch).
pub fn verify(
    own: &DeviceIdentity,
    from: &FullJid,
    to: &FullJid,
    now: u64,
    signal: &Signal,
    proof: Option<&Proof>,
) -> Result<(), ProofError> {
    let proof = proof.ok_or(ProofError::Missing)?;
    if proof.at.abs_diff(now) > MAX_SKEW {
        return Err(ProofError::Stale);
    }
    let m =
        mac(own, &signal.from.public_key, from, to, proof.at, signal).ok_or(ProofError::Forged)?;
    // Constant time.
    m.verify_slice(&proof.mac).map_err(|_| ProofError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::social::payload::{DeviceInfo, IceCredentials, SignalKind};

    fn offer(from: &DeviceIdentity) -> Signal {
        Signal {
            kind: SignalKind::Offer,
            session: 7,
            from: DeviceInfo::new(*from.public_key().as_bytes()),
            credentials: Some(IceCredentials {
                ufrag: "abcd".into(),
                pwd: "abcdefghijklmnopqrstuvwxyz".into(),
            }),
            candidates: vec!["1 1 udp 2130706431 198.18.0.20 51820 typ host".into()],
        }
    }

    #[test]
    fn only_the_key_holder_proves_a_signal_for_these_jids_and_this_time() {
        let alice = DeviceIdentity::generate();
        let bob = DeviceIdentity::generate();
        let mallory = DeviceIdentity::generate();
        let a: FullJid = "alice@svpn.test/phone".parse().unwrap();
        let b: FullJid = "bob@svpn.test/laptop".parse().unwrap();
        let m: FullJid = "mallory@svpn.test/x".parse().unwrap();
        let t = 1_800_000_000;
        let signal = offer(&alice);
        let bob_key = *bob.public_key().as_bytes();
        let proof = sign(&alice, &bob_key, &a, &b, t, &signal).unwrap();
        assert_eq!(verify(&bob, &a, &b, t + 5, &signal, Some(&proof)), Ok(()));
        // Relayed by another sender, to another receiver, later, or altered: refused.
        assert_eq!(
            verify(&bob, &m, &b, t, &signal, Some(&proof)),
            Err(ProofError::Forged)
        );
        let b2: FullJid = "bob@svpn.test/phone".parse().unwrap();
        assert_eq!(
            verify(&bob, &a, &b2, t, &signal, Some(&proof)),
            Err(ProofError::Forged)
        );
        assert_eq!(
            verify(&bob, &a, &b, t + MAX_SKEW + 1, &signal, Some(&proof)),
            Err(ProofError::Stale)
        );
        let mut changed = signal.clone();
        changed
            .candidates
            .push("2 1 udp 1 198.18.0.66 9 typ host".into());
        assert_eq!(
            verify(&bob, &a, &b, t, &changed, Some(&proof)),
            Err(ProofError::Forged)
        );
        assert_eq!(
            verify(&bob, &a, &b, t, &signal, None),
            Err(ProofError::Missing)
        );
        // mallory copies alice's device (its public key) but not her secret.
        let forged = sign(&mallory, &bob_key, &m, &b, t, &signal).unwrap();
        assert_eq!(
            verify(&bob, &m, &b, t, &signal, Some(&forged)),
            Err(ProofError::Forged)
        );
        // A low-order "key" makes no exchange at all.
        let mut low = signal.clone();
        low.from = DeviceInfo::new([0; 32]);
        assert_eq!(
            verify(&bob, &m, &b, t, &low, Some(&proof)),
            Err(ProofError::Forged)
        );
        assert!(sign(&alice, &[0; 32], &a, &b, t, &signal).is_none());
    }
}
