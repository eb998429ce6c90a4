//! Phase 5 of the attacks: a stranger's bogus STUN.

use super::{wait_count, Attack};
use serde_json::Value;
use socialvpn_core::api::Request;
use socialvpn_tests::attacker::{self, random_u64, stun, Received};
use socialvpn_tests::social_nodes::counter;
use std::net::SocketAddrV4;
use std::time::Duration;

impl Attack {
    /// Phase 5: STUN from a stranger on alice's LAN (alice2's host) to alice's port:
    /// binding requests with a bogus USERNAME, alice's real ufrag (from her `answer` to
    /// mallory) with a bogus MESSAGE-INTEGRITY, none at all, undecodable STUN, and
    /// unsolicited binding responses. Every request is rejected and counted; alice's links
    /// stay up.
    pub(super) fn bogus_stun(&mut self, answer: &Received) {
        let status = self.alice.ask(Request::Status);
        let stun_rejected = counter(&status, "links.stun_rejected");
        let target = SocketAddrV4::new(self.w.host_addr("alice"), host_port(&status));
        let alice_ufrag = answer.wire.ufrag.clone().expect("ufrag in alice's answer");
        let mut datagrams = bogus_requests(&alice_ufrag);
        let requests = datagrams.len();
        let mapped = SocketAddrV4::new(self.w.host_addr("alice2"), 4444);
        for _ in 0..10 {
            datagrams.push(stun::unsolicited_success(mapped));
        }
        let sent = attacker::send_udp(
            self.w.host("alice2"),
            target,
            datagrams,
            Duration::from_millis(2),
        );
        assert_eq!(sent, requests + 10, "datagrams not sent");
        let stun_rejected = wait_count(
            &mut self.alice,
            "links.stun_rejected",
            stun_rejected + requests as u64,
            "bogus STUN",
        );
        self.intact("after the bogus STUN");
        self.assert_reaches(&self.bob_addr, "bob");
        self.assert_reaches(&self.alice2_addr, "alice2");
        eprintln!(
            "{}: 5. bogus STUN rejected (stun_rejected {stun_rejected})",
            self.kind
        );
    }
}

/// The port of the host candidate in a `status` answer.
fn host_port(status: &Value) -> u16 {
    status["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str()?.strip_prefix("host "))
        .find_map(|a| a.parse::<SocketAddrV4>().ok())
        .map(|a| a.port())
        .expect("alice's host candidate")
}

/// Binding requests alice must reject: a bogus USERNAME (with ICE role attributes),
/// `alice_ufrag` with a bogus MESSAGE-INTEGRITY, no USERNAME at all, and undecodable STUN.
fn bogus_requests(alice_ufrag: &str) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    for _ in 0..20 {
        datagrams.push(
            stun::BindingRequest {
                username: Some("evil:evil".into()),
                priority: Some(0x7eff_ffff),
                role: stun::Role::Controlling(random_u64()),
                use_candidate: true,
                ..stun::BindingRequest::new()
            }
            .encode(),
        );
        datagrams.push(
            stun::BindingRequest {
                username: Some(format!("{alice_ufrag}:atk")),
                role: stun::Role::Controlled(random_u64()),
                integrity: Some(attacker::random_bytes::<20>()),
                fingerprint: true,
                ..stun::BindingRequest::new()
            }
            .encode(),
        );
    }
    for _ in 0..10 {
        datagrams.push(
            stun::BindingRequest {
                role: stun::Role::Controlling(random_u64()),
                fingerprint: true,
                ..stun::BindingRequest::new()
            }
            .encode(),
        );
        datagrams.push(stun::undecodable());
    }
    datagrams
}
