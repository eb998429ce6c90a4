use super::*;
use crate::counters::{Counters, DropReason};

fn every_request() -> Vec<Request> {
    let mut all = vec![
        Request::Status,
        Request::Roster,
        Request::Links,
        Request::PinAddress {
            device: "ab".repeat(20),
            address: "100.64.0.9".parse().unwrap(),
        },
        Request::UnpinAddress {
            device: "ab".repeat(20),
        },
        Request::NetworkChanged,
        Request::Foreground,
        Request::Background,
        Request::SetLogLevel {
            level: LogLevel::Debug,
        },
        Request::AddPeer {
            public_key: "11".repeat(32),
            endpoint: "198.18.0.2:4500".parse().unwrap(),
            keepalive_secs: Some(25),
        },
        Request::SignOut,
        Request::Events {
            after: 281_474_976_710_655,
            wait_ms: 30_000,
        },
    ];
    for action in FriendAction::ALL {
        all.push(Request::Friend {
            action,
            jid: "bob@example.org".into(),
        });
    }
    all
}

#[test]
fn every_request_survives_the_wire() {
    for request in every_request() {
        let bytes = request.encode();
        assert_eq!(Request::decode(&bytes), Ok(request.clone()), "{request:?}");
        let mut line = bytes.clone();
        line.push(b'\n');
        assert_eq!(Request::decode(&line), Ok(request));
    }
    assert_eq!(
        Request::decode(br#"{"v":1,"cmd":"friend","action":"add","jid":"b@x.org"}"#),
        Ok(Request::Friend {
            action: FriendAction::Add,
            jid: "b@x.org".into()
        })
    );
}

#[test]
fn requests_decode_strictly() {
    for bad in [
        &br#"{"v":1,"cmd":"reboot"}"#[..],
        br#"{"v":1,"cmd":"friend","action":"befriend","jid":"b@x.org"}"#,
        br#"{"v":1,"cmd":"friend","jid":"b@x.org"}"#,
        br#"{"v":1,"cmd":"friend","action":"add","jid":"b@x.org","as":"root"}"#,
        br#"{"v":1,"cmd":"sign_out","keep_credentials":true}"#,
        br#"{"v":1,"cmd":"status","verbose":true}"#,
        br#"{"v":1,"cmd":"pin_address","device":"ab","address":"300.1.1.1"}"#,
        br#"{"v":"1","cmd":"status"}"#,
        br#"{"cmd":"status"}"#,
        br#"[{"v":1,"cmd":"status"}]"#,
        b"",
        b"\xff\xfe",
    ] {
        let e = Request::decode(bad).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::BadRequest,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let e = Request::decode(br#"{"v":2,"cmd":"teleport"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
    let long = format!(
        r#"{{"v":1,"cmd":"friend","action":"add","jid":"{}"}}"#,
        "a".repeat(MAX_REQUEST)
    );
    assert_eq!(
        Request::decode(long.as_bytes()).unwrap_err().kind,
        ErrorKind::BadRequest
    );
}

#[test]
fn friend_actions_have_one_spelling() {
    for action in FriendAction::ALL {
        assert_eq!(action.name().parse::<FriendAction>(), Ok(action));
        let json = serde_json::to_string(&action).unwrap();
        assert_eq!(json, format!("\"{}\"", action.name()));
    }
    assert!("befriend".parse::<FriendAction>().is_err());
    for level in LogLevel::ALL {
        assert_eq!(level.name().parse::<LogLevel>(), Ok(level));
        assert_eq!(
            serde_json::to_string(&level).unwrap(),
            format!("\"{}\"", level.name())
        );
    }
}

#[test]
fn replies_and_events_round_trip_and_tolerate_additions() {
    let mut counters = Counters::default();
    counters.drops.add(DropReason::NoLink);
    counters.tun_rx.add(60);
    let status = StatusView {
        uid: "ab".repeat(20),
        ipv4: "100.64.0.1".parse().unwrap(),
        ipv6: "fd00::1".parse().unwrap(),
        subnet: "100.64.0.0/16".into(),
        tunnel: true,
        foreground: false,
        xmpp: Some(XmppStatus::Offline {
            reason: "connection refused".into(),
            retry_in_secs: 4,
        }),
        counters,
        social: Some(Default::default()),
        links: Some(Default::default()),
        candidates: Some(vec!["host 198.18.0.10:4500".into()]),
    };
    let friend = FriendView {
        jid: "bob@example.org".into(),
        name: None,
        subscription: Subscription::Both,
        mutual: true,
        pending_in: false,
        pending_out: false,
        enabled: true,
        own: false,
        devices: vec![DeviceView {
            resource: "phone".into(),
            socialvpn: true,
            uid: Some("cd".repeat(20)),
            overlay_address: Some("100.64.0.7".parse().unwrap()),
            pinned: true,
            link: Some(LinkPhase::Connected {
                relayed: true,
                rtt_ms: Some(12.5),
            }),
            traffic: Some(Default::default()),
        }],
    };
    for response in [
        Response::Done,
        Response::Status {
            status: Box::new(status),
        },
        Response::Roster {
            friends: vec![friend],
        },
        Response::Links { links: vec![] },
        Response::PeerAdded { uid: "ab".into() },
        Response::Events {
            events: vec![Event::RosterChanged, Event::Missed { count: 2 }],
            next: 7,
        },
        Response::error(ErrorKind::BadJid, "'x' is not a valid JID"),
    ] {
        assert_eq!(Response::decode(&response.encode()), Ok(response));
    }
    for event in [
        Event::Xmpp {
            status: XmppStatus::Online,
        },
        Event::RosterChanged,
        Event::FriendRequest {
            jid: "carol@example.org".into(),
        },
        Event::Link {
            uid: "ab".into(),
            device: "bob@example.org/phone".into(),
            change: LinkChange::Up { relayed: false },
        },
        Event::TunnelLost {
            reason: "gone".into(),
        },
        Event::Missed { count: 3 },
        Event::Stopped { error: None },
    ] {
        assert_eq!(Event::decode(&event.encode()), Ok(event));
    }
    // A newer engine's extra fields and version do not stop an older front end.
    assert_eq!(
        Response::decode(br#"{"v":1,"reply":"done","took_ms":3}"#),
        Ok(Response::Done)
    );
    assert_eq!(
        Response::decode(br#"{"v":2,"reply":"done"}"#),
        Ok(Response::Done)
    );
    assert_eq!(
        Event::decode(br#"{"v":2,"event":"roster_changed","why":"x"}"#),
        Ok(Event::RosterChanged)
    );
    assert_eq!(
        Response::decode(br#"{"v":2,"reply":"events","next":9,"events":[{"event":"teleported"},{"event":"roster_changed","why":"x"}]}"#),
        Ok(Response::Events {
            events: vec![Event::Unknown, Event::RosterChanged],
            next: 9
        })
    );
    // The app's first call: both fields may be left out.
    assert_eq!(
        Request::decode(br#"{"v":1,"cmd":"events"}"#),
        Ok(Request::Events {
            after: 0,
            wait_ms: 0
        })
    );
    // New events, error kinds, XMPP states and link phases of a newer engine are read.
    assert_eq!(
        Event::decode(br#"{"v":1,"event":"battery_low","percent":5}"#),
        Ok(Event::Unknown)
    );
    assert_eq!(
        Event::decode(br#"{"v":1,"event":"xmpp","status":{"state":"resuming"}}"#),
        Ok(Event::Xmpp {
            status: XmppStatus::Unknown
        })
    );
    let phase: LinkPhase = serde_json::from_str(r#"{"state":"migrating","to":"x"}"#).unwrap();
    assert_eq!(phase, LinkPhase::Unknown);
    let error =
        Response::decode(br#"{"v":1,"reply":"error","error":{"kind":"quota","message":"full"}}"#)
            .unwrap()
            .into_result()
            .unwrap_err();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::Unknown, "full")
    );
    assert_eq!(
        Response::decode(br#"{"v":0,"reply":"done"}"#)
            .unwrap_err()
            .kind,
        ErrorKind::UnsupportedVersion
    );
    let counters: Counters = serde_json::from_str(
        r#"{"tun_rx":{"packets":1,"bytes":2},"tun_tx":{"packets":0,"bytes":0},
            "net_rx":{"packets":0,"bytes":0},"net_tx":{"packets":0,"bytes":0},
            "drops":{"no_link":4,"a_reason_from_the_future":1}}"#,
    )
    .unwrap();
    assert_eq!(counters.drops.get(DropReason::NoLink), 4);
    assert_eq!(counters.drops.total(), 4);
}

#[test]
fn a_message_is_written_as_one_object_with_the_version_first() {
    assert_eq!(Response::Done.encode(), br#"{"v":1,"reply":"done"}"#);
    assert_eq!(
        Event::RosterChanged.encode(),
        br#"{"v":1,"event":"roster_changed"}"#
    );
    // What the encoder does with a value that is not an object (never one of ours): the
    // version alone, still one object.
    assert_eq!(super::encode(&3), br#"{"v":1}"#);
    assert_eq!(super::encode(&serde_json::json!({})), br#"{"v":1}"#);
}
