//! STUN messages as a stranger on the network can make them (RFC 8489, with the ICE
//! attributes of RFC 8445): every attribute is what the sender chooses to put in, the
//! MESSAGE-INTEGRITY included. Built with rtc-stun's encoder.

use rtc_stun::attributes::{
    AttrType, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY,
    ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    Message, MessageType, Setter, TransactionId, BINDING_REQUEST, CLASS_SUCCESS_RESPONSE,
    METHOD_BINDING,
};
use rtc_stun::xoraddr::XorMappedAddress;

/// The ICE role attribute a request carries, with its tie-breaker.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Controlling(u64),
    Controlled(u64),
    None,
}

/// A binding request: every field is what the sender chooses to put in.
#[derive(Clone, Debug)]
pub struct BindingRequest {
    pub transaction: [u8; 12],
    pub username: Option<String>,
    pub priority: Option<u32>,
    pub role: Role,
    pub use_candidate: bool,
    /// A MESSAGE-INTEGRITY attribute with these bytes (anything but the real HMAC).
    pub integrity: Option<[u8; 20]>,
    pub fingerprint: bool,
}

impl BindingRequest {
    /// A request with a random transaction id and nothing else.
    pub fn new() -> BindingRequest {
        BindingRequest {
            transaction: super::random_bytes::<12>(),
            username: None,
            priority: None,
            role: Role::None,
            use_candidate: false,
            integrity: None,
            fingerprint: false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut attrs: Vec<(AttrType, Vec<u8>)> = Vec::new();
        if let Some(username) = &self.username {
            attrs.push((ATTR_USERNAME, username.as_bytes().to_vec()));
        }
        if let Some(priority) = self.priority {
            attrs.push((ATTR_PRIORITY, priority.to_be_bytes().to_vec()));
        }
        match self.role {
            Role::Controlling(tie) => {
                attrs.push((ATTR_ICE_CONTROLLING, tie.to_be_bytes().to_vec()))
            }
            Role::Controlled(tie) => attrs.push((ATTR_ICE_CONTROLLED, tie.to_be_bytes().to_vec())),
            Role::None => {}
        }
        if self.use_candidate {
            attrs.push((ATTR_USE_CANDIDATE, Vec::new()));
        }
        if let Some(mac) = self.integrity {
            attrs.push((ATTR_MESSAGE_INTEGRITY, mac.to_vec()));
        }
        message(BINDING_REQUEST, self.transaction, &attrs, self.fingerprint)
    }
}

impl Default for BindingRequest {
    fn default() -> Self {
        Self::new()
    }
}

/// A binding success response nobody asked for, naming `mapped` as our address.
pub fn unsolicited_success(mapped: std::net::SocketAddrV4) -> Vec<u8> {
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId(super::random_bytes::<12>())),
        Box::new(MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE)),
        Box::new(XorMappedAddress {
            ip: (*mapped.ip()).into(),
            port: mapped.port(),
        }),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).expect("a binding response");
    m.raw
}

/// A message with the STUN magic cookie whose header claims more attribute bytes than it
/// carries: it looks like STUN but cannot be decoded.
pub fn undecodable() -> Vec<u8> {
    let mut m = message(
        BINDING_REQUEST,
        super::random_bytes::<12>(),
        &[(ATTR_USERNAME, b"evil:evil".to_vec())],
        false,
    );
    m[2..4].copy_from_slice(&400u16.to_be_bytes());
    m
}

fn message(
    typ: MessageType,
    transaction: [u8; 12],
    attrs: &[(AttrType, Vec<u8>)],
    fingerprint: bool,
) -> Vec<u8> {
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![Box::new(TransactionId(transaction)), Box::new(typ)];
    m.build(&setters).expect("a STUN header");
    for (t, v) in attrs {
        m.add(*t, v);
    }
    if fingerprint {
        FINGERPRINT.add_to(&mut m).expect("a fingerprint");
    }
    m.raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_as_what_they_claim_and_the_broken_one_does_not() {
        let request = BindingRequest {
            username: Some("abcd:efgh".into()),
            priority: Some(1),
            role: Role::Controlling(7),
            use_candidate: true,
            integrity: Some([0x55; 20]),
            fingerprint: true,
            ..BindingRequest::new()
        };
        let mut m = Message::new();
        m.raw = request.encode();
        m.decode().expect("a STUN message");
        assert_eq!(m.typ, BINDING_REQUEST);
        assert_eq!(m.get(ATTR_USERNAME).unwrap(), b"abcd:efgh");
        assert_eq!(m.get(ATTR_ICE_CONTROLLING).unwrap(), 7u64.to_be_bytes());
        assert!(rtc_stun::fingerprint::FINGERPRINT.check(&m).is_ok());
        let mut bad = Message::new();
        bad.raw = undecodable();
        assert!(bad.decode().is_err());
    }
}
