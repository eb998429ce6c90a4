//! SocialVPN's XMPP payloads: the device announcement carried in presence, and the link
//! signalling carried in IQs (or, for devices before version 2, headline messages) to a
//! device's full JID.
//!
//! Wire types (xso) only hold text; [`DeviceInfo::from_wire`] and [`Signal::from_wire`]
//! validate them into typed values, so nothing malformed reaches the state machines.

use super::proof::{Proof, PROOF_LEN};
use crate::uid::Uid;
use xso::{AsXml, FromXml};

/// Namespace of the device announcement (versioned).
pub const NS_DEVICE: &str = "urn:socialvpn:device:0";
/// Namespace of link signalling (versioned).
pub const NS_LINK: &str = "urn:socialvpn:link:0";
/// Protocol version this build speaks (announced with the device).
pub const PROTOCOL_VERSION: u32 = 2;
/// From this version on, devices send link signals as IQs (before: headline messages, which
/// servers hold for a client in the background); a device still takes both, and signals an
/// older device the way it understands.
pub const SIGNALS_AS_IQ_SINCE: u32 = 2;
/// Most ICE candidates accepted in one signal (a host has a handful).
pub const MAX_CANDIDATES: usize = 16;
/// Longest ICE candidate line accepted.
pub const MAX_CANDIDATE_LEN: usize = 256;

#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_DEVICE, name = "device", discard(text))]
pub struct DeviceWire {
    #[xml(attribute)]
    pub uid: String,
    #[xml(attribute)]
    pub key: String,
    #[xml(attribute)]
    pub version: u32,
}

impl xmpp_parsers::presence::PresencePayload for DeviceWire {}

/// What a device announces about itself: its UID and the key the UID derives from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub uid: Uid,
    pub public_key: [u8; 32],
    pub version: u32,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("bad UID")]
    Uid,
    #[error("bad public key")]
    Key,
    #[error("the UID does not derive from the key")]
    UidKeyMismatch,
    #[error("unknown signal kind")]
    Kind,
    #[error("bad session id")]
    Session,
    #[error("too many or too long candidates")]
    Candidates,
    #[error("bad ICE credentials")]
    Credentials,
    /// A link element that does not have the shape of one (missing or unknown attributes
    /// or children).
    #[error("not a well-formed link signal")]
    Shape,
    #[error("bad signal proof")]
    Proof,
}

impl DeviceInfo {
    pub fn new(public_key: [u8; 32]) -> DeviceInfo {
        DeviceInfo {
            uid: Uid::from_public_key(&public_key),
            public_key,
            version: PROTOCOL_VERSION,
        }
    }

    pub fn to_wire(&self) -> DeviceWire {
        DeviceWire {
            uid: self.uid.to_string(),
            key: hex::encode(self.public_key),
            version: self.version,
        }
    }

    /// Accepts the announcement only if the UID derives from the key.
    pub fn from_wire(wire: &DeviceWire) -> Result<DeviceInfo, PayloadError> {
        let (uid, public_key) = parse_identity(&wire.uid, &wire.key)?;
        Ok(DeviceInfo {
            uid,
            public_key,
            version: wire.version,
        })
    }
}

fn parse_identity(uid: &str, key: &str) -> Result<(Uid, [u8; 32]), PayloadError> {
    let uid: Uid = uid.parse().map_err(|_| PayloadError::Uid)?;
    let mut public_key = [0u8; 32];
    hex::decode_to_slice(key, &mut public_key).map_err(|_| PayloadError::Key)?;
    if Uid::from_public_key(&public_key) != uid {
        return Err(PayloadError::UidKeyMismatch);
    }
    Ok((uid, public_key))
}

#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_LINK, name = "candidate")]
pub struct CandidateWire {
    #[xml(text)]
    pub line: String,
}

#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_LINK, name = "link", discard(text))]
pub struct SignalWire {
    #[xml(attribute)]
    pub kind: String,
    #[xml(attribute)]
    pub session: String,
    #[xml(attribute)]
    pub uid: String,
    #[xml(attribute)]
    pub key: String,
    #[xml(attribute(default))]
    pub ufrag: Option<String>,
    #[xml(attribute(default))]
    pub pwd: Option<String>,
    /// When the sender made the signal (seconds since the epoch), for its proof.
    #[xml(attribute(default))]
    pub at: Option<String>,
    /// The sender's proof (hex HMAC, see `proof`).
    #[xml(attribute(default))]
    pub proof: Option<String>,
    #[xml(child(n = ..))]
    pub candidates: Vec<CandidateWire>,
}

impl xmpp_parsers::message::MessagePayload for SignalWire {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// Start (or retry) a link: the sender's ICE credentials and candidates.
    Offer,
    /// Accept an offer: the answerer's credentials and candidates.
    Answer,
    /// A request for a fresh offer (the sender roamed, or wants a link and has none).
    Restart,
    /// The sender closed the link.
    Close,
}

impl SignalKind {
    fn as_str(self) -> &'static str {
        match self {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::Restart => "restart",
            SignalKind::Close => "close",
        }
    }
}

/// ICE username fragment and password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

/// A validated link signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    pub kind: SignalKind,
    /// Identifies one ICE session between two devices; a restart gets a new one.
    pub session: u64,
    pub from: DeviceInfo,
    pub credentials: Option<IceCredentials>,
    pub candidates: Vec<String>,
}

impl Signal {
    pub fn to_wire(&self) -> SignalWire {
        SignalWire {
            kind: self.kind.as_str().to_string(),
            session: format!("{:016x}", self.session),
            uid: self.from.uid.to_string(),
            key: hex::encode(self.from.public_key),
            ufrag: self.credentials.as_ref().map(|c| c.ufrag.clone()),
            pwd: self.credentials.as_ref().map(|c| c.pwd.clone()),
            at: None,
            proof: None,
            candidates: self
                .candidates
                .iter()
                .map(|line| CandidateWire { line: line.clone() })
                .collect(),
        }
    }

    pub fn from_wire(wire: &SignalWire) -> Result<Signal, PayloadError> {
        let kind = match wire.kind.as_str() {
            "offer" => SignalKind::Offer,
            "answer" => SignalKind::Answer,
            "restart" => SignalKind::Restart,
            "close" => SignalKind::Close,
            _ => return Err(PayloadError::Kind),
        };
        if wire.session.len() != 16 {
            return Err(PayloadError::Session);
        }
        let session = u64::from_str_radix(&wire.session, 16).map_err(|_| PayloadError::Session)?;
        let (uid, public_key) = parse_identity(&wire.uid, &wire.key)?;
        let credentials = match (&wire.ufrag, &wire.pwd) {
            (Some(ufrag), Some(pwd))
                if valid_ice_text(ufrag, 4, 256) && valid_ice_text(pwd, 22, 256) =>
            {
                Some(IceCredentials {
                    ufrag: ufrag.clone(),
                    pwd: pwd.clone(),
                })
            }
            (None, None) => None,
            _ => return Err(PayloadError::Credentials),
        };
        // Offers and answers carry credentials; a restart request and a close do not.
        if matches!(kind, SignalKind::Offer | SignalKind::Answer) && credentials.is_none() {
            return Err(PayloadError::Credentials);
        }
        if wire.candidates.len() > MAX_CANDIDATES
            || wire
                .candidates
                .iter()
                .any(|c| c.line.len() > MAX_CANDIDATE_LEN || c.line.chars().any(char::is_control))
        {
            return Err(PayloadError::Candidates);
        }
        Ok(Signal {
            kind,
            session,
            from: DeviceInfo {
                uid,
                public_key,
                version: PROTOCOL_VERSION,
            },
            credentials,
            candidates: wire.candidates.iter().map(|c| c.line.clone()).collect(),
        })
    }
}

/// ICE ufrag/pwd characters (RFC 8445 ice-char: ALPHA / DIGIT / "+" / "/").
fn valid_ice_text(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A signal with the sender's proof (see `proof`), as it travels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSignal {
    pub signal: Signal,
    pub proof: Option<Proof>,
}

impl SignedSignal {
    pub fn to_wire(&self) -> SignalWire {
        SignalWire {
            at: self.proof.map(|p| p.at.to_string()),
            proof: self.proof.map(|p| hex::encode(p.mac)),
            ..self.signal.to_wire()
        }
    }

    pub fn from_wire(wire: &SignalWire) -> Result<SignedSignal, PayloadError> {
        let signal = Signal::from_wire(wire)?;
        let proof = match (&wire.at, &wire.proof) {
            (None, None) => None,
            (Some(at), Some(mac)) => {
                let at = at.parse().map_err(|_| PayloadError::Proof)?;
                let mut bytes = [0u8; PROOF_LEN];
                hex::decode_to_slice(mac, &mut bytes).map_err(|_| PayloadError::Proof)?;
                Some(Proof { at, mac: bytes })
            }
            _ => return Err(PayloadError::Proof),
        };
        Ok(SignedSignal { signal, proof })
    }
}

/// Parses the signal in an XML payload element, if it is one (an element of our namespace
/// is one, well-formed or not, so that a broken signal is counted, not ignored).
pub fn parse_signal(
    element: xmpp_parsers::minidom::Element,
) -> Option<Result<SignedSignal, PayloadError>> {
    if !element.is("link", NS_LINK) {
        return None;
    }
    Some(match SignalWire::try_from(element) {
        Ok(wire) => SignedSignal::from_wire(&wire),
        Err(_) => Err(PayloadError::Shape),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::minidom::Element;

    fn device() -> DeviceInfo {
        DeviceInfo::new([9u8; 32])
    }

    fn offer() -> Signal {
        Signal {
            kind: SignalKind::Offer,
            session: 0x0123_4567_89ab_cdef,
            from: device(),
            credentials: Some(IceCredentials {
                ufrag: "abcd".into(),
                pwd: "abcdefghijklmnopqrstuvwxyz".into(),
            }),
            candidates: vec!["1 1 udp 2130706431 198.18.0.20 51820 typ host".into()],
        }
    }

    #[test]
    fn signal_round_trips_through_xml() {
        let signed = SignedSignal {
            signal: offer(),
            proof: Some(Proof {
                at: 1_800_000_000,
                mac: [7; PROOF_LEN],
            }),
        };
        let element: Element = signed.to_wire().into();
        let text = String::from(&element);
        let parsed: Element = text.parse().unwrap();
        assert_eq!(parse_signal(parsed), Some(Ok(signed)));
        let unsigned: Element = offer().to_wire().into();
        let parsed = parse_signal(unsigned).unwrap().unwrap();
        assert_eq!((parsed.signal, parsed.proof), (offer(), None));
    }

    #[test]
    fn device_round_trips_and_checks_the_uid() {
        let element: Element = device().to_wire().into();
        let wire = DeviceWire::try_from(element).unwrap();
        assert_eq!(DeviceInfo::from_wire(&wire), Ok(device()));
        let mut forged = wire.clone();
        forged.uid = DeviceInfo::new([8u8; 32]).uid.to_string();
        assert_eq!(
            DeviceInfo::from_wire(&forged),
            Err(PayloadError::UidKeyMismatch)
        );
    }

    #[test]
    fn malformed_signals_are_rejected() {
        let good = offer().to_wire();
        let cases: Vec<(SignalWire, PayloadError)> = vec![
            (
                SignalWire {
                    kind: "hug".into(),
                    ..good.clone()
                },
                PayloadError::Kind,
            ),
            (
                SignalWire {
                    session: "xyz".into(),
                    ..good.clone()
                },
                PayloadError::Session,
            ),
            (
                SignalWire {
                    key: "00".into(),
                    ..good.clone()
                },
                PayloadError::Key,
            ),
            (
                SignalWire {
                    pwd: None,
                    ..good.clone()
                },
                PayloadError::Credentials,
            ),
            (
                SignalWire {
                    ufrag: Some("a b".into()),
                    ..good.clone()
                },
                PayloadError::Credentials,
            ),
            (
                SignalWire {
                    candidates: vec![CandidateWire { line: "x".into() }; MAX_CANDIDATES + 1],
                    ..good.clone()
                },
                PayloadError::Candidates,
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(Signal::from_wire(&wire), Err(expected));
        }
        let other: Element = "<body xmlns='jabber:client'>hi</body>".parse().unwrap();
        assert_eq!(parse_signal(other), None);
        let broken: Element = format!("<link xmlns='{NS_LINK}' kind='offer'/>")
            .parse()
            .unwrap();
        assert_eq!(parse_signal(broken), Some(Err(PayloadError::Shape)));
    }
}
