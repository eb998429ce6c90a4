//! Arbitrary XML (as a friend's XMPP message payload would carry it) into the link signal
//! decoder: never a panic, and whatever is accepted survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialvpn_core::social::payload::{parse_signal, DeviceInfo, DeviceWire};
use xmpp_parsers::minidom::Element;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(element) = text.parse::<Element>() else {
        return;
    };
    if let Ok(wire) = DeviceWire::try_from(element.clone()) {
        if let Ok(info) = DeviceInfo::from_wire(&wire) {
            assert_eq!(DeviceInfo::from_wire(&info.to_wire()), Ok(info));
        }
    }
    if let Some(Ok(signal)) = parse_signal(element) {
        let again: Element = signal.to_wire().into();
        assert_eq!(parse_signal(again), Some(Ok(signal)));
    }
});
