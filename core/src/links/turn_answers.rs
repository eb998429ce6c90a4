//! What the TURN server's answers say — about our allocation, and the challenge (realm,
//! nonce) its long-term credentials are used with — and the one request we build
//! ourselves: the release of an allocation our TURN client does not know.
//!
//! That allocation exists after a crash and a quick restart on the same port: the server
//! still holds the old process's allocation for our address, refuses a new Allocate with
//! 437 (Allocation Mismatch) until it expires (up to ten minutes of no relay, and behind a
//! symmetric NAT no link at all), and the new client has no handle on it. A Refresh with
//! lifetime 0 from the same address, signed with our credentials, deletes it: allocations
//! belong to the address, not to a client's memory.

use bytes::BytesMut;
use rtc_stun::message::{Getter, Message};

/// What a datagram from the TURN server says about our allocation.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AllocationVerdict {
    /// A Refresh succeeded: the allocation exists.
    Confirmed,
    /// A Refresh came back with a new nonce (438): the server may have restarted.
    StaleNonce,
    /// A Refresh, CreatePermission or ChannelBind was refused in a way that means the server
    /// has no allocation for us (437 Allocation Mismatch after a server restart; coturn also
    /// answers 400 for requests on an allocation it lost).
    Lost(u16),
}

/// What one datagram from the TURN server says, read once.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) verdict: Option<AllocationVerdict>,
    pub(super) challenge: Option<Challenge>,
    /// An Allocate refused with 437: the server holds an allocation for our address.
    pub(super) held_elsewhere: bool,
}

/// Reads a datagram from the TURN server. Only responses say anything here: requests,
/// indications (relayed data arrives as Data indications) and channel data are passed over
/// without being decoded.
pub(super) fn read(data: &[u8]) -> Answer {
    // The class's high bit (C1, 0x0100 of the message type) is set for responses only.
    let is_response = data.len() >= 2 && u16::from_be_bytes([data[0], data[1]]) & 0x0100 != 0;
    let Some(m) = is_response.then(|| decode(data)).flatten() else {
        return Answer::default();
    };
    Answer {
        verdict: allocation_verdict(&m),
        challenge: challenge(&m),
        held_elsewhere: allocation_held_elsewhere(&m),
    }
}

fn allocation_verdict(m: &Message) -> Option<AllocationVerdict> {
    use rtc_stun::error_code::{
        ErrorCodeAttribute, CODE_ALLOC_MISMATCH, CODE_BAD_REQUEST, CODE_STALE_NONCE,
    };
    use rtc_stun::message::{
        CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, METHOD_CHANNEL_BIND,
        METHOD_CREATE_PERMISSION, METHOD_REFRESH,
    };
    let method = m.typ.method;
    if method == METHOD_REFRESH && m.typ.class == CLASS_SUCCESS_RESPONSE {
        return Some(AllocationVerdict::Confirmed);
    }
    if m.typ.class != CLASS_ERROR_RESPONSE
        || ![
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
    {
        return None;
    }
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).ok()?;
    if method == METHOD_REFRESH && code.code == CODE_STALE_NONCE {
        return Some(AllocationVerdict::StaleNonce);
    }
    (code.code == CODE_ALLOC_MISMATCH || code.code == CODE_BAD_REQUEST)
        .then_some(AllocationVerdict::Lost(code.code.0))
}

/// The realm and nonce a 401 or 438 answer carries (the server's current challenge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Challenge {
    realm: String,
    nonce: String,
}

fn decode(data: &[u8]) -> Option<Message> {
    if !rtc_stun::message::is_stun_message(data) {
        return None;
    }
    let mut m = Message::new();
    m.raw = data.to_vec();
    m.decode().ok()?;
    Some(m)
}

/// The challenge in an error answer, if it carries one.
fn challenge(m: &Message) -> Option<Challenge> {
    use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM};
    use rtc_stun::message::CLASS_ERROR_RESPONSE;
    use rtc_stun::textattrs::TextAttribute;
    if m.typ.class != CLASS_ERROR_RESPONSE {
        return None;
    }
    let realm = TextAttribute::get_from_as(m, ATTR_REALM).ok()?.text;
    let nonce = TextAttribute::get_from_as(m, ATTR_NONCE).ok()?.text;
    Some(Challenge { realm, nonce })
}

/// Whether this answers an Allocate with 437: the server holds an allocation for our address.
fn allocation_held_elsewhere(m: &Message) -> bool {
    use rtc_stun::error_code::{ErrorCodeAttribute, CODE_ALLOC_MISMATCH};
    use rtc_stun::message::{CLASS_ERROR_RESPONSE, METHOD_ALLOCATE};
    let mut code = ErrorCodeAttribute::default();
    m.typ.method == METHOD_ALLOCATE
        && m.typ.class == CLASS_ERROR_RESPONSE
        && code.get_from(m).is_ok()
        && code.code == CODE_ALLOC_MISMATCH
}

/// An unsigned Refresh with lifetime 0: the server answers it with its challenge (401 with
/// realm and nonce), which the signed release needs. (A server without authentication would
/// release the allocation on it, which is what it is for.)
pub(super) fn challenge_request() -> BytesMut {
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::message::{MessageType, Setter, TransactionId, CLASS_REQUEST, METHOD_REFRESH};
    use rtc_turn::proto::lifetime::Lifetime;
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
        Box::new(Lifetime(std::time::Duration::ZERO)),
        Box::new(FINGERPRINT),
    ];
    let mut m = Message::new();
    // Building these fixed attributes cannot fail; an empty datagram would only go unanswered.
    let _ = m.build(&setters);
    BytesMut::from(&m.raw[..])
}

/// A Refresh with lifetime 0 for whatever allocation the server holds for our address,
/// signed with the long-term credentials under `challenge`.
pub(super) fn release_request(
    username: &str,
    password: &str,
    challenge: &Challenge,
) -> Option<BytesMut> {
    use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
    use rtc_stun::fingerprint::FINGERPRINT;
    use rtc_stun::integrity::MessageIntegrity;
    use rtc_stun::message::{MessageType, Setter, TransactionId, CLASS_REQUEST, METHOD_REFRESH};
    use rtc_stun::textattrs::TextAttribute;
    use rtc_turn::proto::lifetime::Lifetime;
    let provider = rtc_ice::crypto::default_provider().ok()?;
    let integrity = MessageIntegrity::new_long_term_integrity_with_provider(
        username.to_string(),
        challenge.realm.clone(),
        password.to_string(),
        provider.crypto(),
    )
    .ok()?;
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_REFRESH, CLASS_REQUEST)),
        Box::new(Lifetime(std::time::Duration::ZERO)),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.to_string())),
        Box::new(TextAttribute::new(ATTR_REALM, challenge.realm.clone())),
        Box::new(TextAttribute::new(ATTR_NONCE, challenge.nonce.clone())),
        Box::new(integrity),
        Box::new(FINGERPRINT),
    ];
    let mut m = Message::new();
    m.build(&setters).ok()?;
    Some(BytesMut::from(&m.raw[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::error_code::ErrorCodeAttribute;
    use rtc_stun::message::{
        MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE,
        METHOD_BINDING,
    };

    #[test]
    fn what_the_server_says_about_our_allocation() {
        use rtc_stun::error_code::{CODE_ALLOC_MISMATCH, CODE_BAD_REQUEST, CODE_FORBIDDEN};
        use rtc_stun::message::{TransactionId, CLASS_INDICATION};
        use rtc_stun::message::{METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH};
        let message = |method, class, code: Option<rtc_stun::error_code::ErrorCode>| {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(method, class)),
            ];
            if let Some(code) = code {
                setters.push(Box::new(ErrorCodeAttribute {
                    code,
                    reason: b"x".to_vec(),
                }));
            }
            let mut m = Message::new();
            m.build(&setters).expect("a message");
            m.raw
        };
        let lost = |method, code| read(&message(method, CLASS_ERROR_RESPONSE, Some(code))).verdict;
        assert_eq!(
            lost(METHOD_REFRESH, CODE_ALLOC_MISMATCH),
            Some(AllocationVerdict::Lost(437))
        );
        assert_eq!(
            lost(METHOD_CHANNEL_BIND, CODE_BAD_REQUEST),
            Some(AllocationVerdict::Lost(400))
        );
        assert_eq!(
            lost(METHOD_CREATE_PERMISSION, CODE_ALLOC_MISMATCH),
            Some(AllocationVerdict::Lost(437))
        );
        // A peer address the server refuses says nothing about the allocation.
        assert_eq!(lost(METHOD_CREATE_PERMISSION, CODE_FORBIDDEN), None);
        // Allocation errors have their own retry; other methods and data are not verdicts.
        assert_eq!(lost(METHOD_ALLOCATE, CODE_ALLOC_MISMATCH), None);
        assert_eq!(
            read(&message(METHOD_REFRESH, CLASS_SUCCESS_RESPONSE, None)).verdict,
            Some(AllocationVerdict::Confirmed)
        );
        assert_eq!(
            read(&message(METHOD_BINDING, CLASS_INDICATION, None)).verdict,
            None
        );
        assert_eq!(read(b"\x40\x00\x00\x04data").verdict, None);
    }

    #[test]
    fn a_challenge_and_a_held_allocation_are_recognised_and_the_release_is_signed() {
        use rtc_stun::attributes::{ATTR_NONCE, ATTR_REALM};
        use rtc_stun::error_code::{CODE_ALLOC_MISMATCH, CODE_UNAUTHORIZED};
        use rtc_stun::message::TransactionId;
        use rtc_stun::textattrs::TextAttribute;
        let answer = |method, code, challenge: bool| {
            let mut setters: Vec<Box<dyn Setter>> = vec![
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
                Box::new(ErrorCodeAttribute {
                    code,
                    reason: b"x".to_vec(),
                }),
            ];
            if challenge {
                setters.push(Box::new(TextAttribute::new(ATTR_REALM, "sim".into())));
                setters.push(Box::new(TextAttribute::new(ATTR_NONCE, "n0nce".into())));
            }
            let mut m = Message::new();
            m.build(&setters).expect("a message");
            m.raw
        };
        let c = read(&answer(METHOD_ALLOCATE, CODE_UNAUTHORIZED, true))
            .challenge
            .expect("a challenge");
        assert_eq!(
            c,
            Challenge {
                realm: "sim".into(),
                nonce: "n0nce".into()
            }
        );
        assert_eq!(
            read(&answer(METHOD_ALLOCATE, CODE_UNAUTHORIZED, false)).challenge,
            None
        );
        assert!(read(&answer(METHOD_ALLOCATE, CODE_ALLOC_MISMATCH, false)).held_elsewhere);
        assert!(!read(&answer(METHOD_ALLOCATE, CODE_UNAUTHORIZED, true)).held_elsewhere);
        assert!(!read(b"not stun").held_elsewhere);
        let release = release_request("user", "secret", &c).expect("a request");
        let m = decode(&release).expect("STUN");
        assert_eq!(m.typ.method, rtc_stun::message::METHOD_REFRESH);
        let mut lifetime = rtc_turn::proto::lifetime::Lifetime::default();
        lifetime.get_from(&m).expect("a lifetime");
        assert_eq!(lifetime.0, std::time::Duration::ZERO);
        // The request that draws the challenge first: the same Refresh, unsigned.
        let ask = decode(&challenge_request()).expect("STUN");
        assert_eq!(ask.typ.method, rtc_stun::message::METHOD_REFRESH);
        assert!(ask
            .get(rtc_stun::attributes::ATTR_MESSAGE_INTEGRITY)
            .is_err());
        lifetime.get_from(&ask).expect("a lifetime");
        assert_eq!(lifetime.0, std::time::Duration::ZERO);
    }
}
