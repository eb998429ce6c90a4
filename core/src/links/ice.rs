//! One ICE session with one friend device (rtc-ice's sans-IO agent), on the engine's shared
//! socket and the shared TURN allocation.

use super::servers::LocalCandidates;
use crate::idle_grid::IdleGrid;
use crate::social::payload::IceCredentials;
use bytes::BytesMut;
use rtc_ice::candidate::candidate_host::CandidateHostConfig;
use rtc_ice::candidate::candidate_relay::CandidateRelayConfig;
use rtc_ice::candidate::candidate_server_reflexive::CandidateServerReflexiveConfig;
use rtc_ice::candidate::{unmarshal_candidate, CandidateConfig, CandidateType};
use rtc_ice::mdns::MulticastDnsMode;
use rtc_ice::state::ConnectionState;
use rtc_ice::{Agent, AgentConfig, Event};
use rtc_shared::{TransportContext, TransportMessage, TransportProtocol};
use sansio::Protocol;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ICE keepalives double as NAT keepalives: one every 25 s on the selected path, on the
/// grid every idle timer of the node shares (`crate::idle_grid`).
const KEEPALIVE: Duration = crate::idle_grid::IDLE_TICK;
/// A keepalive moved onto the grid still comes at least this long after the last tick: the
/// agent only checks consent again after `PROBE_INTERVAL`.
const KEEPALIVE_MIN_GAP: Duration = Duration::from_secs(2);
/// An idle link keeps alive with one-way indications (see [`IceLink::handle_timeout`]) while
/// the peer's own arrive at least this often; when they stop, with consent checks again.
const HEARD_RECENTLY: Duration = Duration::from_secs(30);
/// While a path is suspect (see `crate::liveness`), a consent check this often.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A selected path silent for this long counts as disconnected; this much more, failed.
const DISCONNECTED_AFTER: Duration = Duration::from_secs(60);
const FAILED_AFTER: Duration = Duration::from_secs(30);

/// The path ICE selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectedPath {
    pub remote: SocketAddr,
    /// Traffic crosses a TURN relay (ours or the peer's).
    pub relayed: bool,
    /// We send through our own TURN allocation (our candidate is the relayed one).
    pub via_our_relay: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("ICE: {0}")]
pub struct IceError(String);

fn err(e: impl std::fmt::Display) -> IceError {
    IceError(e.to_string())
}

/// What the ICE session asks of the engine.
pub enum IceOutput {
    /// Send `data` to `dst` from the host socket, or through the relay if `via_relay`.
    Transmit {
        dst: SocketAddr,
        via_relay: bool,
        data: BytesMut,
    },
}

pub struct IceLink {
    agent: Agent,
    /// For checking requests before the agent sees them.
    crypto: Arc<dyn rtc_ice::crypto::RTCCryptoProvider>,
    last_tick: Instant,
    /// Where idle keepalives are placed (shared by every link of the node).
    grid: IdleGrid,
    controlling: bool,
    relay_addr: Option<SocketAddr>,
    state: ConnectionState,
    selected: Option<SelectedPath>,
    /// Consent checks at `PROBE_INTERVAL` until this instant (the path is suspect).
    probe_until: Option<Instant>,
    /// Our host addresses: a peer's private address is used only on a LAN we share.
    local_hosts: Vec<SocketAddr>,
    /// An idle keepalive of ours waiting to be sent.
    keepalive: Option<IceOutput>,
}

/// What [`IceLink::start`] made of the peer's candidates.
pub struct Started {
    /// The addresses of the peer's server-reflexive and relayed candidates: the ones the
    /// relay may be asked to reach (never the peer's private host addresses).
    pub permit: Vec<SocketAddr>,
    /// Candidates refused (see [`usable_remote`]) or unparsable.
    pub dropped: usize,
}

/// Whether a candidate address a peer names may be checked: never loopback, unspecified,
/// link-local, multicast, broadcast or reserved addresses, nor IPv6 (our socket is IPv4);
/// a private one (RFC 1918, shared address space) only on a LAN one of our host addresses
/// is on (the same /24). Checks are sent from our address to wherever a peer says: they must
/// not reach into our own machine or into networks we are not part of.
pub fn usable_remote(addr: SocketAddr, local_hosts: &[SocketAddr]) -> bool {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    let [a, b, _, _] = ip.octets();
    if ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a == 0
        || a >= 240
        || addr.port() == 0
    {
        return false;
    }
    let shared_space = a == 100 && (64..128).contains(&b);
    if ip.is_private() || shared_space {
        let lan = |h: &SocketAddr| match h.ip() {
            std::net::IpAddr::V4(h) => h.octets()[..3] == ip.octets()[..3],
            std::net::IpAddr::V6(_) => false,
        };
        return local_hosts.iter().any(lan);
    }
    true
}

impl IceLink {
    pub fn new(
        now: Instant,
        controlling: bool,
        local: &LocalCandidates,
        grid: IdleGrid,
    ) -> Result<IceLink, IceError> {
        let config = AgentConfig {
            is_controlling: controlling,
            multicast_dns_mode: MulticastDnsMode::Disabled,
            // The agent may check consent this often; `poll_timeout` holds it to KEEPALIVE
            // unless the path is being probed.
            keepalive_interval: Some(PROBE_INTERVAL),
            disconnected_timeout: Some(DISCONNECTED_AFTER),
            failed_timeout: Some(FAILED_AFTER),
            ..Default::default()
        };
        let provider = rtc_ice::crypto::default_provider().map_err(err)?;
        let mut agent = Agent::new(now, Arc::new(config), Arc::clone(&provider)).map_err(err)?;
        // Host first: inbound checks are matched to the first local candidate whose address
        // (or related address) fits.
        for host in &local.host {
            let c = CandidateHostConfig {
                base_config: base(*host),
                ..Default::default()
            }
            .new_candidate_host()
            .map_err(err)?;
            agent.add_local_candidate(c).map_err(err)?;
        }
        let related = local.host.first().copied();
        if let (Some(srflx), Some(base_addr)) = (local.srflx, related) {
            let c = CandidateServerReflexiveConfig {
                base_config: base(srflx),
                rel_addr: base_addr.ip().to_string(),
                rel_port: base_addr.port(),
                url: None,
            }
            .new_candidate_server_reflexive()
            .map_err(err)?;
            agent.add_local_candidate(c).map_err(err)?;
        }
        if let Some(relay) = local.relay {
            let rel = local.srflx.or(related).unwrap_or(relay);
            let c = CandidateRelayConfig {
                base_config: base(relay),
                rel_addr: rel.ip().to_string(),
                rel_port: rel.port(),
                url: None,
            }
            .new_candidate_relay()
            .map_err(err)?;
            agent.add_local_candidate(c).map_err(err)?;
        }
        Ok(IceLink {
            agent,
            crypto: provider,
            last_tick: now,
            grid,
            controlling,
            relay_addr: local.relay,
            state: ConnectionState::New,
            selected: None,
            probe_until: None,
            local_hosts: local.host.clone(),
            keepalive: None,
        })
    }

    pub fn credentials(&self) -> IceCredentials {
        let c = self.agent.get_local_credentials();
        IceCredentials {
            ufrag: c.ufrag.clone(),
            pwd: c.pwd.clone(),
        }
    }

    /// Our candidates as signalling lines.
    pub fn candidate_lines(&self) -> Vec<String> {
        self.agent
            .get_local_candidates()
            .iter()
            .map(|c| c.marshal())
            .collect()
    }

    /// Takes the peer's credentials and candidates and starts the checks.
    pub fn start(
        &mut self,
        now: Instant,
        remote: &IceCredentials,
        candidates: &[String],
    ) -> Result<Started, IceError> {
        let mut permit = Vec::new();
        let mut dropped = 0;
        for line in candidates {
            let line = line.strip_prefix("candidate:").unwrap_or(line);
            match unmarshal_candidate(line) {
                Ok(c) if usable_remote(c.addr(), &self.local_hosts) => {
                    if c.candidate_type() != CandidateType::Host {
                        permit.push(c.addr());
                    }
                    if let Err(e) = self.agent.add_remote_candidate(c) {
                        tracing::debug!(error = %e, "remote candidate refused");
                        dropped += 1;
                    }
                }
                Ok(c) => {
                    tracing::debug!(addr = %c.addr(), "remote candidate not used");
                    dropped += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "unparsable remote candidate");
                    dropped += 1;
                }
            }
        }
        self.agent
            .start_connectivity_checks(
                now,
                self.controlling,
                remote.ufrag.clone(),
                remote.pwd.clone(),
            )
            .map_err(err)?;
        Ok(Started { permit, dropped })
    }

    /// A STUN message from `from`, received on the host socket or (`via_relay`) through the
    /// relay.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        local_host: SocketAddr,
        from: SocketAddr,
        via_relay: bool,
        data: &[u8],
    ) {
        let local_addr = match (via_relay, self.relay_addr) {
            (true, Some(relay)) => relay,
            _ => local_host,
        };
        let msg = TransportMessage {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = self.agent.handle_read(msg) {
            tracing::trace!(error = %e, "STUN message not for this session");
        }
        self.drain_events();
    }

    pub fn poll_output(&mut self) -> Option<IceOutput> {
        if let Some(keepalive) = self.keepalive.take() {
            return Some(keepalive);
        }
        let t = self.agent.poll_write()?;
        let via_relay = Some(t.transport.local_addr) == self.relay_addr;
        Some(IceOutput::Transmit {
            dst: t.transport.peer_addr,
            via_relay,
            data: t.message,
        })
    }

    /// The agent's next deadline. Once connected, rtc-ice would still tick every 200 ms (its
    /// check interval bounds every timer); a connected session only needs its keepalive, so
    /// it is woken once per keepalive interval (the idle engine sleeps), unless its path is
    /// being probed.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let deadline = self.agent.poll_timeout()?;
        let probing = self.probe_until.is_some_and(|until| deadline < until);
        Some(match self.state {
            ConnectionState::Connected | ConnectionState::Disconnected if !probing => {
                let keepalive = self.grid.keepalive(
                    self.last_tick,
                    self.last_tick + KEEPALIVE,
                    KEEPALIVE_MIN_GAP,
                );
                deadline.max(keepalive)
            }
            _ => deadline,
        })
    }

    /// The path looks dead: check consent now and every `PROBE_INTERVAL` until `until`.
    pub fn probe(&mut self, until: Instant) {
        self.probe_until = Some(until);
    }

    /// The peer answered: the path works, and the agent goes back to its idle keepalives
    /// (probing, it ticks every 200 ms).
    pub fn end_probe(&mut self) {
        self.probe_until = None;
    }

    /// When the peer was last heard on the selected path (a check or a response).
    pub fn last_heard(&self) -> Option<Instant> {
        let (_, remote) = self.agent.get_selected_candidate_pair()?;
        remote.last_received()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| t > now) {
            return;
        }
        self.last_tick = now;
        if self.probe_until.is_some_and(|until| until <= now) {
            self.probe_until = None;
        }
        if self.idle_keepalive(now) {
            return;
        }
        if let Err(e) = self.agent.handle_timeout(now) {
            tracing::trace!(error = %e, "ICE timer");
        }
        self.drain_events();
    }

    /// An idle, healthy link's keepalive: one authenticated Binding Indication to the peer,
    /// which answers nothing, instead of the agent's consent check. Each side sends its own on
    /// the shared grid, so one datagram each way per interval keeps both NAT bindings open and
    /// tells each side the other is there (the agent counts an indication from the selected
    /// remote as hearing from it). A check instead draws an answer, and rtc-ice's controlled
    /// agent answers every check with a check of its own: four datagrams where two do, and
    /// answers that come back one by one, each a wake-up, after the devices would have gone
    /// back to sleep. Consent checks come back once the peer's indications stop (nothing heard
    /// for `HEARD_RECENTLY`), and whenever the path is probed.
    fn idle_keepalive(&mut self, now: Instant) -> bool {
        let heard = self
            .last_heard()
            .is_some_and(|at| now.saturating_duration_since(at) <= HEARD_RECENTLY);
        if self.state != ConnectionState::Connected || self.probe_until.is_some() || !heard {
            return false;
        }
        let (Some(path), Some(remote)) = (self.selected, self.agent.get_remote_credentials())
        else {
            return false;
        };
        use rtc_stun::attributes::ATTR_USERNAME;
        use rtc_stun::fingerprint::FINGERPRINT;
        use rtc_stun::integrity::MessageIntegrity;
        use rtc_stun::message::{
            Message, MessageType, Setter, TransactionId, CLASS_INDICATION, METHOD_BINDING,
        };
        use rtc_stun::textattrs::Username;
        let ours = &self.agent.get_local_credentials().ufrag;
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(MessageType::new(METHOD_BINDING, CLASS_INDICATION)),
            Box::new(TransactionId::new()),
            Box::new(Username::new(
                ATTR_USERNAME,
                format!("{}:{}", remote.ufrag, ours),
            )),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                remote.pwd.clone(),
                self.crypto.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        let mut msg = Message::new();
        if let Err(e) = msg.build(&setters) {
            tracing::debug!(error = %e, "cannot build a keepalive; checking consent instead");
            return false;
        }
        self.keepalive = Some(IceOutput::Transmit {
            dst: path.remote,
            via_relay: path.via_our_relay,
            data: BytesMut::from(&msg.raw[..]),
        });
        true
    }

    fn drain_events(&mut self) {
        while let Some(tagged) = self.agent.poll_event() {
            match tagged.event {
                Event::ConnectionStateChange(state) => {
                    tracing::debug!(?state, "ICE state");
                    self.state = state;
                }
                Event::SelectedCandidatePairChange(local, remote) => {
                    // Relayed if either side's candidate is a TURN allocation.
                    let ours = local.candidate_type() == CandidateType::Relay;
                    let path = SelectedPath {
                        remote: remote.addr(),
                        relayed: ours || remote.candidate_type() == CandidateType::Relay,
                        via_our_relay: ours,
                    };
                    tracing::debug!(?path, "ICE selected a path");
                    self.selected = Some(path);
                }
                _ => {}
            }
        }
    }

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// The selected path while the session is usable.
    pub fn selected(&self) -> Option<SelectedPath> {
        match self.state {
            ConnectionState::Connected => self.selected,
            _ => None,
        }
    }

    pub fn has_failed(&self) -> bool {
        matches!(
            self.state,
            ConnectionState::Failed | ConnectionState::Closed
        )
    }

    /// Round-trip time of the selected pair's last check.
    pub fn rtt(&self, now: Instant) -> Option<Duration> {
        let (local, remote) = self.agent.get_selected_candidate_pair()?;
        let (l, r) = (local.id().to_string(), remote.id().to_string());
        self.agent
            .get_candidate_pairs_stats(now)
            .into_iter()
            .find(|s| s.local_candidate_id == l && s.remote_candidate_id == r)
            .map(|s| Duration::from_secs_f64(s.current_round_trip_time.max(0.0)))
            .filter(|d| !d.is_zero())
    }

    /// Whether a STUN request (or keepalive indication) is for this session and authentic:
    /// its USERNAME starts with our username fragment and its MESSAGE-INTEGRITY matches our
    /// password. rtc-ice acts on a request's role attributes before it checks these, and
    /// counts any indication from a known address as hearing from the peer, so nothing else
    /// reaches it.
    pub fn authenticates(&self, request: &mut rtc_stun::message::Message) -> bool {
        use rtc_stun::attributes::ATTR_USERNAME;
        use rtc_stun::integrity::MessageIntegrity;
        use rtc_stun::textattrs::TextAttribute;
        let credentials = self.agent.get_local_credentials();
        let for_us = TextAttribute::get_from_as(request, ATTR_USERNAME).is_ok_and(|u| {
            u.text
                .split_once(':')
                .is_some_and(|(ours, _)| ours == credentials.ufrag)
        });
        for_us
            && MessageIntegrity::check(request, credentials.pwd.as_bytes(), self.crypto.crypto())
                .is_ok()
    }

    /// Our username fragment in this session.
    pub fn local_ufrag(&self) -> &str {
        &self.agent.get_local_credentials().ufrag
    }

    /// The relay address this session offered as ours (if any).
    pub fn relay(&self) -> Option<SocketAddr> {
        self.relay_addr
    }

    /// Whether `from` is one of this session's remote candidates (to route STUN responses).
    pub fn knows_remote(&self, from: SocketAddr) -> bool {
        self.agent
            .get_remote_candidates()
            .iter()
            .any(|c| c.addr() == from)
    }

    pub fn close(&mut self) {
        let _ = self.agent.close();
    }
}

fn base(addr: SocketAddr) -> CandidateConfig {
    CandidateConfig {
        network: "udp".into(),
        address: addr.ip().to_string(),
        port: addr.port(),
        component: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_into_our_machine_or_foreign_lans_are_not_used() {
        // Our host on a carrier-grade NAT's LAN (shared address space, which the private
        // ranges share a code path with).
        let hosts: Vec<SocketAddr> = vec!["100.100.1.20:5000".parse().unwrap()];
        let usable = |s: &str| usable_remote(s.parse().unwrap(), &hosts);
        for bad in [
            "127.0.0.1:22",
            "0.0.0.0:1",
            "169.254.1.1:5000",
            "224.0.0.251:5353",
            "255.255.255.255:9",
            "240.0.0.1:9",
            "100.100.2.7:5000",
            "100.64.0.2:5000",
            "[::1]:5000",
            "203.0.113.9:0",
        ] {
            assert!(!usable(bad), "{bad}");
        }
        for good in ["100.100.1.33:5000", "203.0.113.9:5000", "198.18.0.20:40005"] {
            assert!(usable(good), "{good}");
        }
    }
}
