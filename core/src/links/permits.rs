//! Which peers our TURN relay lets through: the permissions ICE sessions ask for, bounded.
//!
//! rtc-turn keeps every permission it was ever asked for on an allocation and refreshes them
//! all in one CreatePermission every few minutes; it cannot forget one. Addresses come from
//! candidates friends name, so without bounds a hostile friend could grow that request until
//! it no longer fits a datagram and every relayed link dies. Here an allocation takes at most
//! `CAP` permissions, one account at most `PER_ACCOUNT` of them; when the cap is reached while
//! fewer are in use, the link manager renews the allocation with only those in use (at most
//! once per `RENEW_EVERY`, since paths through the relay must be found again).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use xmpp_parsers::jid::BareJid;

/// Permissions one allocation holds at most.
pub const CAP: usize = 64;
/// Permissions one account's devices may hold of one allocation.
pub const PER_ACCOUNT: usize = 16;
/// Least time between two renewals of a full allocation.
pub const RENEW_EVERY: Duration = Duration::from_secs(600);
/// First and longest wait before asking again for refused permissions.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);

/// What to do about a peer an ICE session wants to reach through the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Permitted or asked for already.
    Already,
    /// Ask the server.
    Ask,
    /// Over a cap: not asked (counted).
    Refused,
}

#[derive(Debug)]
pub struct Permits {
    /// Permissions asked of the current allocation (granted, pending or refused by the
    /// server): at least what rtc-turn refreshes. The account each was asked for.
    asked: HashMap<SocketAddr, BareJid>,
    permitted: HashSet<SocketAddr>,
    pending: HashSet<SocketAddr>,
    /// Peers ICE sessions asked for, most recent last: asked again after a refusal and
    /// for every new allocation.
    wanted: VecDeque<(SocketAddr, BareJid)>,
    /// When to ask again for wanted permissions not granted yet.
    retry: Option<Instant>,
    /// The wait after the next refusal (grows while refusals go on).
    wait: Duration,
    /// A permission was refused for the cap since the link manager last asked.
    full: bool,
    last_renewal: Option<Instant>,
    /// Permissions not asked for because of a cap.
    pub refused: u64,
    /// Allocations renewed to shed permissions no longer used.
    pub renewals: u64,
}

impl Default for Permits {
    fn default() -> Self {
        Permits {
            asked: HashMap::new(),
            permitted: HashSet::new(),
            pending: HashSet::new(),
            wanted: VecDeque::new(),
            retry: None,
            wait: RETRY_FIRST,
            full: false,
            last_renewal: None,
            refused: 0,
            renewals: 0,
        }
    }
}

impl Permits {
    /// An ICE session of `owner`'s device wants to reach `peer` through the relay.
    pub fn admit(&mut self, peer: SocketAddr, owner: &BareJid) -> Admit {
        if self.permitted.contains(&peer) || self.pending.contains(&peer) {
            return Admit::Already;
        }
        if !self.asked.contains_key(&peer) {
            let theirs = self.asked.values().filter(|o| *o == owner).count();
            if theirs >= PER_ACCOUNT {
                self.refused += 1;
                return Admit::Refused;
            }
            if self.asked.len() >= CAP {
                self.refused += 1;
                self.full = true;
                self.want(peer, owner);
                return Admit::Refused;
            }
        }
        self.want(peer, owner);
        self.asked.insert(peer, owner.clone());
        self.pending.insert(peer);
        Admit::Ask
    }

    fn want(&mut self, peer: SocketAddr, owner: &BareJid) {
        if self.wanted.iter().any(|(p, _)| *p == peer) {
            return;
        }
        if self.wanted.len() >= CAP {
            self.wanted.pop_front();
        }
        self.wanted.push_back((peer, owner.clone()));
    }

    /// The request for `peer` could not be sent.
    pub fn not_sent(&mut self, peer: SocketAddr) {
        self.pending.remove(&peer);
    }

    pub fn granted(&mut self, peer: SocketAddr) {
        self.pending.remove(&peer);
        self.permitted.insert(peer);
        self.wait = RETRY_FIRST;
    }

    /// The server refused a permission (a stale nonce, a server that just allocated): ask
    /// for whatever is missing again after a growing wait.
    pub fn refused_by_server(&mut self, now: Instant) -> Duration {
        let wait = self.wait;
        self.pending.clear();
        self.retry = Some(now + wait);
        self.wait = (wait * 2).min(RETRY_CAP);
        wait
    }

    /// Requests that will get no answer.
    pub fn timed_out(&mut self) {
        self.pending.clear();
    }

    /// The allocation is gone or new: it holds no permission. Those wanted are asked of the
    /// next one (`retry_now`).
    pub fn forget_allocation(&mut self) {
        self.asked.clear();
        self.permitted.clear();
        self.pending.clear();
    }

    pub fn retry_now(&mut self, now: Instant) {
        self.retry = Some(now);
    }

    pub fn is_permitted(&self, peer: &SocketAddr) -> bool {
        self.permitted.contains(peer)
    }

    /// For an address not asked for whose IP another permission covers (a friend behind a
    /// symmetric NAT reaches the relay from a new port for every destination): the account
    /// that permission was asked for. The server permits by IP, so the friend's checks get
    /// in; rtc-turn sends only to addresses it holds a permission for, so ours would not get
    /// out until one is asked for this exact address.
    pub fn covered_by_ip(&self, peer: &SocketAddr) -> Option<BareJid> {
        if self.asked.contains_key(peer) {
            return None;
        }
        self.asked
            .iter()
            .find(|(p, _)| p.ip() == peer.ip() && self.permitted.contains(p))
            .map(|(_, owner)| owner.clone())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry
    }

    /// The wanted permissions to ask for again, once their retry is due.
    pub fn due(&mut self, now: Instant) -> Vec<(SocketAddr, BareJid)> {
        if self.retry.is_none_or(|at| at > now) {
            return Vec::new();
        }
        // A refusal schedules the next retry.
        self.retry = None;
        self.wanted
            .iter()
            .filter(|(p, _)| !self.permitted.contains(p) && !self.pending.contains(p))
            .cloned()
            .collect()
    }

    /// Whether a permission was refused for the cap since the last call.
    pub fn take_full(&mut self) -> bool {
        std::mem::take(&mut self.full)
    }

    /// Whether to renew the allocation so that it holds only `in_use` (which then become
    /// the wanted permissions): when that sheds some, and the last renewal is long enough ago.
    pub fn renew(&mut self, now: Instant, in_use: Vec<(SocketAddr, BareJid)>) -> bool {
        if self
            .last_renewal
            .is_some_and(|at| now.saturating_duration_since(at) < RENEW_EVERY)
            || in_use.len() >= self.asked.len()
        {
            return false;
        }
        self.last_renewal = Some(now);
        self.renewals += 1;
        self.wanted = in_use.into_iter().take(CAP).collect();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([198, 18, (i / 250) as u8, (i % 250) as u8 + 1], 4000))
    }

    fn jid(s: &str) -> BareJid {
        BareJid::new(s).unwrap()
    }

    #[test]
    fn one_account_holds_at_most_its_share() {
        let mut p = Permits::default();
        let mallory = jid("mallory@example.org");
        for i in 0..PER_ACCOUNT {
            assert_eq!(p.admit(addr(i), &mallory), Admit::Ask);
        }
        assert_eq!(p.admit(addr(999), &mallory), Admit::Refused);
        assert_eq!(p.refused, 1);
        // Asked already: no new permission.
        assert_eq!(p.admit(addr(3), &mallory), Admit::Already);
        // Others still get theirs, and the cap is not what refused mallory.
        assert_eq!(p.admit(addr(500), &jid("bob@example.org")), Admit::Ask);
        assert!(!p.take_full());
    }

    #[test]
    fn a_full_allocation_is_renewed_with_what_is_in_use_at_most_every_ten_minutes() {
        let now = Instant::now();
        let mut p = Permits::default();
        for i in 0..CAP {
            let owner = jid(&format!("f{}@example.org", i / PER_ACCOUNT));
            assert_eq!(p.admit(addr(i), &owner), Admit::Ask);
            p.granted(addr(i));
        }
        let carol = jid("carol@example.org");
        assert_eq!(p.admit(addr(700), &carol), Admit::Refused);
        assert!(p.take_full());
        assert!(!p.take_full());
        // Everything still in use: renewing would shed nothing.
        let all: Vec<_> = (0..CAP).map(|i| (addr(i), jid("x@example.org"))).collect();
        assert!(!p.renew(now, all));
        let in_use = vec![(addr(1), jid("f0@example.org")), (addr(700), carol.clone())];
        assert!(p.renew(now, in_use.clone()));
        p.forget_allocation();
        p.retry_now(now);
        let mut due = p.due(now);
        due.sort_by_key(|(a, _)| *a);
        assert_eq!(due.len(), 2);
        for (peer, owner) in due {
            assert_eq!(p.admit(peer, &owner), Admit::Ask);
        }
        assert_eq!(p.renewals, 1);
        // Full again soon after: not renewed before RENEW_EVERY.
        assert!(!p.renew(now + Duration::from_secs(60), in_use[..1].to_vec()));
        assert!(p.renew(now + RENEW_EVERY, in_use[..1].to_vec()));
    }

    #[test]
    fn refused_permissions_are_asked_again_after_a_growing_wait() {
        let now = Instant::now();
        let mut p = Permits::default();
        let bob = jid("bob@example.org");
        assert_eq!(p.admit(addr(1), &bob), Admit::Ask);
        assert_eq!(p.refused_by_server(now), RETRY_FIRST);
        assert!(p.due(now).is_empty());
        assert_eq!(p.due(now + RETRY_FIRST), vec![(addr(1), bob.clone())]);
        assert_eq!(p.admit(addr(1), &bob), Admit::Ask);
        assert_eq!(p.refused_by_server(now), RETRY_FIRST * 2);
        assert_eq!(p.admit(addr(1), &bob), Admit::Ask);
        p.granted(addr(1));
        assert!(p.is_permitted(&addr(1)));
        assert_eq!(p.refused_by_server(now), RETRY_FIRST);
    }

    #[test]
    fn a_new_port_of_a_permitted_address_is_covered_for_its_account() {
        let mut p = Permits::default();
        let first: SocketAddr = "198.19.0.2:20002".parse().unwrap();
        let other_port: SocketAddr = "198.19.0.2:20005".parse().unwrap();
        let stranger: SocketAddr = "198.19.0.9:20005".parse().unwrap();
        assert_eq!(p.admit(first, &jid("bob@example.net")), Admit::Ask);
        // Not yet granted: nothing is covered.
        assert_eq!(p.covered_by_ip(&other_port), None);
        p.granted(first);
        assert_eq!(p.covered_by_ip(&other_port), Some(jid("bob@example.net")));
        assert_eq!(p.covered_by_ip(&stranger), None);
        // The address itself needs nothing more.
        assert_eq!(p.covered_by_ip(&first), None);
    }
}
