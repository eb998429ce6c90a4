//! Bytes of the control protocol (the daemon's socket, the iOS app↔extension channel): a
//! request decodes or is refused with a typed error, never a panic, and whatever decodes
//! says the same after a round trip; replies and events decode without panicking too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialvpn_core::api::{ErrorKind, Event, Request, Response};

fuzz_target!(|data: &[u8]| {
    match Request::decode(data) {
        Ok(request) => {
            assert_eq!(Request::decode(&request.encode()), Ok(request.clone()));
            match &request {
                // What the engine does first with the JID and the device id.
                Request::Friend { jid, .. } => {
                    let _ = jid.parse::<xmpp_parsers::jid::BareJid>();
                }
                Request::PinAddress { device, .. } | Request::UnpinAddress { device } => {
                    let _ = device.parse::<socialvpn_core::Uid>();
                }
                _ => {}
            }
        }
        Err(e) => assert!(matches!(
            e.kind,
            ErrorKind::BadRequest | ErrorKind::UnsupportedVersion
        )),
    }
    if let Ok(response) = Response::decode(data) {
        assert_eq!(Response::decode(&response.encode()), Ok(response));
    }
    if let Ok(event) = Event::decode(data) {
        assert_eq!(Event::decode(&event.encode()), Ok(event));
    }
});
