//! Bytes on the daemon's control socket: a request decodes or is refused, never a panic,
//! and whatever decodes says the same after a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialvpn_core::control::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        let line = request.to_line();
        assert_eq!(Request::parse(line.as_bytes()), Ok(request.clone()));
        if let Request::Friend { jid, .. } = &request {
            // What the engine does first with the JID.
            let _ = jid.parse::<xmpp_parsers::jid::BareJid>();
        }
    }
});
