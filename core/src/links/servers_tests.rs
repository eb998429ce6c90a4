//! Tests of the STUN/TURN gatherer (`servers.rs`).

use super::*;
use rtc_stun::error_code::{ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::message::{
    Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE,
    METHOD_ALLOCATE, METHOD_BINDING,
};
use rtc_stun::xoraddr::XorMappedAddress;

fn turn_addr() -> SocketAddr {
    SocketAddr::from(([198, 18, 10, 1], 3478))
}

fn srflx() -> SocketAddr {
    SocketAddr::from(([198, 18, 10, 10], 40000))
}

fn gatherer(now: Instant) -> Gatherer {
    let servers = IceServers {
        stun: None,
        turn: Some(TurnServer {
            addr: turn_addr(),
            username: "svpn".into(),
            password: "turnpass".into(),
        }),
    };
    Gatherer::start(
        now,
        servers,
        vec![SocketAddr::from(([198, 18, 0, 2], 50000))],
    )
}

/// Plays the server for everything the gatherer sent: a binding gets the reflexive
/// address, an allocation is refused as coturn refuses it while it still holds a crashed
/// predecessor's allocation (quota reached). Returns the number of Allocate requests.
fn answer_refusing(g: &mut Gatherer, now: Instant) -> usize {
    let mut allocates = 0;
    while let Some((to, bytes)) = g.poll_transmit() {
        assert_eq!(to, turn_addr());
        let mut request = Message::new();
        request.raw = bytes.to_vec();
        request.decode().expect("a STUN message");
        assert_eq!(request.typ.class, CLASS_REQUEST);
        let setters: [Box<dyn Setter>; 4] = if request.typ.method == METHOD_ALLOCATE {
            allocates += 1;
            [
                Box::new(request.transaction_id),
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_ERROR_RESPONSE)),
                Box::new(ErrorCodeAttribute {
                    code: CODE_ALLOC_QUOTA_REACHED,
                    reason: b"Allocation Quota Reached".to_vec(),
                }),
                Box::new(FINGERPRINT),
            ]
        } else {
            assert_eq!(request.typ.method, METHOD_BINDING);
            [
                Box::new(request.transaction_id),
                Box::new(MessageType::new(METHOD_BINDING, CLASS_SUCCESS_RESPONSE)),
                Box::new(XorMappedAddress {
                    ip: srflx().ip(),
                    port: srflx().port(),
                }),
                Box::new(FINGERPRINT),
            ]
        };
        let mut response = Message::new();
        response.build(&setters).expect("a response");
        g.handle_server_datagram(now, turn_addr(), &response.raw);
    }
    allocates
}

#[test]
fn a_refused_allocation_is_asked_for_again_with_growing_waits() {
    let t0 = Instant::now();
    let mut g = gatherer(t0);
    assert_eq!(answer_refusing(&mut g, t0), 1);
    assert_eq!(g.candidates().srflx, Some(srflx()));
    assert_eq!(g.candidates().relay, None);
    assert!(g.is_complete(t0), "links go on without a relay meanwhile");

    // 2 s, 4 s, 8 s, ... up to 300 s between attempts; nothing is sent in between.
    let mut at = t0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let next = g.poll_timeout().expect("a retry is scheduled");
        g.handle_timeout(next - Duration::from_millis(1));
        assert!(
            g.poll_transmit().is_none(),
            "nothing before the retry is due"
        );
        waits.push((next - at).as_secs());
        g.handle_timeout(next);
        assert_eq!(answer_refusing(&mut g, next), 1, "one Allocate per retry");
        at = next;
    }
    assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);

    // A retry nobody answers is repeated only after its transaction gave up.
    let g = &mut gatherer(t0);
    answer_refusing(g, t0);
    let due = g.poll_timeout().expect("a retry is scheduled");
    g.handle_timeout(due);
    let decode = |bytes: BytesMut| {
        let mut m = Message::new();
        m.raw = bytes.to_vec();
        m.decode().expect("a STUN message");
        m
    };
    let (_, first) = g.poll_transmit().expect("the retry's Allocate");
    let first = decode(first).transaction_id;
    let mut now = due;
    let mut new_request_at = None;
    while now < due + 2 * ALLOCATE_ANSWER_WAIT && new_request_at.is_none() {
        now += Duration::from_millis(100);
        g.handle_timeout(now);
        while let Some((_, bytes)) = g.poll_transmit() {
            let m = decode(bytes);
            // Retransmissions keep the request's transaction id.
            if m.typ.method == METHOD_ALLOCATE && m.transaction_id != first {
                new_request_at.get_or_insert(now);
            }
        }
    }
    let at = new_request_at.expect("asked again in the end");
    assert!(
        at >= due + ALLOCATE_ANSWER_WAIT,
        "asked again after {:?}",
        at - due
    );
}

#[test]
fn no_retry_without_a_turn_server() {
    let t0 = Instant::now();
    let mut g = Gatherer::start(t0, IceServers::default(), vec![]);
    assert!(g.poll_transmit().is_none());
    assert_eq!(
        g.poll_timeout(),
        None,
        "an engine without servers never wakes for them"
    );
}

#[test]
fn offered_servers_fill_in_what_is_not_configured_and_new_credentials_reallocate() {
    let t0 = Instant::now();
    let offered = |user: &str| IceServers {
        stun: Some(SocketAddr::from(([198, 18, 10, 2], 3479))),
        turn: Some(TurnServer {
            addr: SocketAddr::from(([198, 18, 10, 2], 3479)),
            username: user.into(),
            password: "temporary".into(),
        }),
    };
    // Nothing configured: the offered servers are asked at once.
    let mut g = Gatherer::start(t0, IceServers::default(), vec![]);
    g.use_offered(t0, offered("1700000000"));
    let sent: Vec<SocketAddr> = std::iter::from_fn(|| g.poll_transmit().map(|t| t.0)).collect();
    assert!(
        sent.contains(&SocketAddr::from(([198, 18, 10, 2], 3479))),
        "{sent:?}"
    );
    // The same answer again changes nothing; new credentials mean a new allocation.
    g.use_offered(t0, offered("1700000000"));
    assert!(g.poll_transmit().is_none());
    g.use_offered(t0, offered("1700086400"));
    assert!(g.poll_transmit().is_some());
    // Configured servers win; only the STUN server this configuration lacks is added.
    let mut g = gatherer(t0);
    while g.poll_transmit().is_some() {}
    g.use_offered(t0, offered("1700000000"));
    assert_eq!(g.servers.turn.as_ref().map(|t| t.addr), Some(turn_addr()));
    assert_eq!(g.servers.stun, offered("x").stun);
    while g.poll_transmit().is_some() {}
    g.use_offered(t0, offered("1700086400"));
    assert!(
        g.poll_transmit().is_none(),
        "configured TURN credentials replaced"
    );
}

#[test]
fn the_offered_turn_server_stands_in_for_a_configured_one_that_does_not_answer() {
    let t0 = Instant::now();
    let offered_addr = SocketAddr::from(([198, 18, 10, 2], 3479));
    let offered = |user: &str| IceServers {
        stun: None,
        turn: Some(TurnServer {
            addr: offered_addr,
            username: user.into(),
            password: "temporary".into(),
        }),
    };
    let mut g = gatherer(t0);
    while g.poll_transmit().is_some() {}
    g.use_offered(t0, offered("1700000000"));
    assert!(
        g.poll_transmit().is_none(),
        "the configured server is tried first"
    );
    // It never answers: once gathering gives up on it, the offered one is asked.
    g.handle_timeout(t0 + GATHER_TIMEOUT);
    let sent: Vec<SocketAddr> = std::iter::from_fn(|| g.poll_transmit().map(|t| t.0)).collect();
    assert!(sent.contains(&offered_addr), "{sent:?}");
    // Standing in, its renewed credentials are taken (the configured server is not
    // asked again until the next network change).
    while g.poll_transmit().is_some() {}
    g.use_offered(t0 + GATHER_TIMEOUT, offered("1700086400"));
    assert_eq!(
        g.servers.turn.as_ref().map(|t| t.username.as_str()),
        Some("1700086400")
    );
    // Without an offer, nothing stands in.
    let mut alone = gatherer(t0);
    while alone.poll_transmit().is_some() {}
    alone.handle_timeout(t0 + GATHER_TIMEOUT);
    assert_eq!(
        alone.servers.turn.as_ref().map(|t| t.addr),
        Some(turn_addr())
    );
}
