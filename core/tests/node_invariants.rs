//! Random sequences of what users and networks do — switches flipped on either side, traffic
//! both ways, moves, restarts, the XMPP and TURN servers going away, loss — driven through
//! whole nodes in the simulated world, checking after every step what must always hold:
//! no packet crosses between friends while either has switched the other off, no link is
//! shown connected by a side that switched its friend off (nor, once consent checks had
//! time to lapse, by the friend), and no node spins. That the friends link again once all
//! is well is checked too, but not in the suite yet: see `after_it_all_the_friends_link_again`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use proptest::prelude::*;
use sim::World;
use socialvpn_core::api::{FriendAction, LinkPhase, Request, Response};
use std::net::Ipv4Addr;
use std::time::Duration;

const ALICE: &str = "alice@example.net/phone";
const BOB: &str = "bob@example.net/laptop";

#[derive(Debug, Clone)]
enum Op {
    /// `who` switches the other off or on.
    Switch {
        who: usize,
        on: bool,
    },
    /// `who` sends a packet to the other.
    Send {
        who: usize,
    },
    /// alice moves behind another NAT (telling her node, or not).
    Move {
        tell: bool,
    },
    /// `who` is killed and started again from its state directory.
    Restart {
        who: usize,
    },
    /// The XMPP server stops (cleanly or not) or starts again.
    Xmpp {
        up: bool,
        clean: bool,
    },
    /// The TURN server restarts (forgets every allocation).
    TurnRestart,
    /// Loss on the underlay, in percent.
    Loss {
        percent: u8,
    },
    Wait {
        ms: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..2, any::<bool>()).prop_map(|(who, on)| Op::Switch { who, on }),
        4 => (0usize..2).prop_map(|who| Op::Send { who }),
        1 => any::<bool>().prop_map(|tell| Op::Move { tell }),
        1 => (0usize..2).prop_map(|who| Op::Restart { who }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(up, clean)| Op::Xmpp { up, clean }),
        1 => Just(Op::TurnRestart),
        1 => (0u8..20).prop_map(|percent| Op::Loss { percent }),
        4 => (0u32..20_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

struct Run {
    w: World,
    nodes: [usize; 2],
    /// Whether each side has the other switched on.
    on: [bool; 2],
    /// Since when each side has had the other off.
    off_since: [Option<std::time::Instant>; 2],
    /// Packets sent so far, by sender; received ones are matched by payload.
    sent: u64,
    /// Next NAT number for moves.
    next_nat: u8,
}

impl Run {
    fn new(seed: u64, symmetric: bool) -> Run {
        let mut w = World::new(seed);
        let n1 = w.add_nat(1);
        let n2 = if symmetric {
            w.add_symmetric_nat(2)
        } else {
            w.add_nat(2)
        };
        w.xmpp
            .befriend(&sim::jid(ALICE).to_bare(), &sim::jid(BOB).to_bare());
        let a = w.add_node("alice", ALICE, Ipv4Addr::new(198, 18, 1, 10), Some(n1));
        let b = w.add_node("bob", BOB, Ipv4Addr::new(198, 18, 2, 10), Some(n2));
        Run {
            w,
            nodes: [a, b],
            on: [true, true],
            off_since: [None, None],
            sent: 0,
            next_nat: 3,
        }
    }

    fn jid_of_other(who: usize) -> &'static str {
        if who == 0 {
            "bob@example.net"
        } else {
            "alice@example.net"
        }
    }

    fn switch(&mut self, who: usize, on: bool) {
        let action = if on {
            FriendAction::Enable
        } else {
            FriendAction::Disable
        };
        let request = Request::Friend {
            action,
            jid: Self::jid_of_other(who).into(),
        };
        assert_eq!(self.w.ask(self.nodes[who], request), Response::Done);
        self.on[who] = on;
        self.off_since[who] = match (on, self.off_since[who]) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(self.w.now),
        };
    }

    fn both_on(&self) -> bool {
        self.on[0] && self.on[1]
    }

    /// Sends one packet from `who`; while either side has the other off it must not arrive.
    fn send(&mut self, who: usize) -> Result<(), TestCaseError> {
        let (from, to) = (self.nodes[who], self.nodes[1 - who]);
        self.sent += 1;
        let payload = format!("{who} {}", self.sent);
        let forbidden = !self.both_on();
        self.w.send_packet(from, to, payload.as_bytes());
        self.w.run_for(Duration::from_millis(300));
        let arrived = self.w.received(to).iter().any(|p| p == payload.as_bytes());
        prop_assert!(
            !(forbidden && arrived),
            "a packet crossed while a switch was off ({:?})",
            self.on
        );
        Ok(())
    }

    /// A side that switched its friend off never shows the link connected; the friend's
    /// side stops showing it once it could have noticed: at once when the close reached it,
    /// at the latest when its consent checks went unanswered (the close is lost when the
    /// XMPP server is away: an idle link checks every 25 s, and rtc-ice gives a path up
    /// 5 + 25 s after its last answer — two minutes covers a restart in between).
    fn check_links(&mut self) -> Result<(), TestCaseError> {
        if self.both_on() {
            return Ok(());
        }
        self.w.run_for(Duration::from_secs(2));
        for who in 0..2 {
            let Some(since) = self.off_since[who] else {
                continue;
            };
            let (x, y) = (self.nodes[who], self.nodes[1 - who]);
            let ours = self.w.phase(x, y);
            prop_assert!(
                !matches!(ours, Some(LinkPhase::Connected { .. })),
                "{} switched its friend off and shows a link: {:?}",
                self.w.nodes[x].name,
                ours
            );
            if self.w.now - since >= Duration::from_secs(120) {
                let theirs = self.w.phase(y, x);
                prop_assert!(
                    !matches!(theirs, Some(LinkPhase::Connected { .. })),
                    "{} still shows a link {:?} after its friend switched it off",
                    self.w.nodes[y].name,
                    self.w.now - since
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Switch { who, on } => self.switch(who, on),
            Op::Send { who } => return self.send(who),
            Op::Move { tell } => {
                let n = self.next_nat;
                self.next_nat = self.next_nat.wrapping_add(1).max(3);
                let nat = self.w.add_nat(n);
                let a = self.nodes[0];
                self.w
                    .move_host(a, Ipv4Addr::new(198, 18, n, 10), Some(nat));
                if tell {
                    assert_eq!(self.w.ask(a, Request::NetworkChanged), Response::Done);
                }
            }
            Op::Restart { who } => {
                let n = self.nodes[who];
                self.w.crash(n);
                self.w.run_for(Duration::from_millis(500));
                self.w.boot(n);
            }
            Op::Xmpp { up: true, .. } => self.w.xmpp.start(),
            Op::Xmpp { up: false, clean } => {
                if self.w.xmpp.up {
                    let now = self.w.now;
                    self.w.xmpp.stop(now, clean);
                }
            }
            Op::TurnRestart => self.w.turn.restart(),
            Op::Loss { percent } => self.w.loss = f64::from(percent) / 100.0,
            Op::Wait { ms } => self.w.run_for(Duration::from_millis(u64::from(ms))),
        }
        self.check_links()
    }

    /// Everything on, a clean network, the servers up: the friends link and traffic flows.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        for who in 0..2 {
            if !self.on[who] {
                self.switch(who, true);
            }
        }
        self.w.loss = 0.0;
        self.w.xmpp.start();
        let [a, b] = self.nodes;
        let linked = self.w.run_until(Duration::from_secs(180), |w| {
            w.connected(a, b) && w.connected(b, a)
        });
        prop_assert!(
            linked,
            "no link after healing: {:?} / {:?}",
            self.w.phase(a, b),
            self.w.phase(b, a)
        );
        // A link shown connected may still stand on a path a move killed unannounced: only
        // traffic finds that out (suspect after 1.5 s, dead after 4 s, then ICE again). A
        // packet every half second for 20 s: the last five arrive.
        let mut arrived = Vec::new();
        for k in 0..40 {
            let payload = format!("healed {k}");
            self.w.send_packet(a, b, payload.as_bytes());
            self.w.run_for(Duration::from_millis(500));
            arrived.push(self.w.received(b).iter().any(|p| p == payload.as_bytes()));
        }
        prop_assert!(
            arrived[35..].iter().all(|x| *x),
            "traffic does not flow after healing: {:?}",
            arrived
        );
        Ok(())
    }
}

/// Runs `ops` from two linked friends, checking the rules after every step.
fn run_ops(seed: u64, symmetric: bool, ops: Vec<Op>) -> Result<Run, TestCaseError> {
    let mut run = Run::new(seed, symmetric);
    let [a, b] = run.nodes;
    prop_assert!(run
        .w
        .run_until(Duration::from_secs(30), |w| w.connected(a, b)
            && w.connected(b, a)));
    for op in ops {
        run.apply(op)?;
    }
    // No node asked to be woken without a reason, and none spun (the world also stops one
    // that wakes 10 000 times at one instant): at most 20 wake-ups a second on average.
    for n in [a, b] {
        let wakeups = &run.w.nodes[n].wakeups;
        if let (Some(first), Some(last)) = (wakeups.first(), wakeups.last()) {
            let secs = (last.0 - first.0).as_secs_f64().max(1.0);
            let rate = wakeups.len() as f64 / secs;
            prop_assert!(
                rate <= 20.0,
                "{} woke {:.1} times a second",
                run.w.nodes[n].name,
                rate
            );
        }
    }
    Ok(run)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The rules hold whatever users and networks do.
    #[test]
    fn what_users_and_networks_do_never_breaks_the_rules(
        seed in any::<u64>(),
        symmetric in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_ops(seed, symmetric, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Once everything is on again and the network is fine, the friends link and traffic
    /// flows. Not in the suite yet: it still finds sequences the node does not recover from
    /// within the 20 s it allows. Two it found are fixed (a WireGuard livelock, see the test
    /// below; answers through our relay to a new port of a symmetric NAT). Left: after an
    /// unannounced move of a device whose friend is behind a symmetric NAT (the link is
    /// relayed), traffic does not come back in 20 s (seed 0, symmetric, one move).
    /// `cargo test --test node_invariants -- --ignored` runs it; failing seeds are written to
    /// the regressions file beside it.
    #[test]
    #[ignore = "open finding: a relayed link after an unannounced move (see the comment)"]
    fn after_it_all_the_friends_link_again(
        seed in any::<u64>(),
        symmetric in any::<bool>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        let mut run = run_ops(seed, symmetric, ops)?;
        run.heal()?;
    }
}

/// Both friends hold packets for each other while their link is down; when it comes back
/// their WireGuard initiations cross. Answering an initiation used to flush the queue, which
/// made boringtun start a handshake of its own and forget the one in flight, so every
/// response met a forgotten handshake on both sides and no session ever became current
/// (found by `after_it_all_the_friends_link_again`; this seed and these steps reproduce it).
#[test]
fn crossing_handshakes_with_packets_queued_on_both_sides_settle() {
    use Op::*;
    let ops = vec![
        Move { tell: false },
        Wait { ms: 10873 },
        Send { who: 1 },
        Send { who: 0 },
        Switch { who: 1, on: false },
        Xmpp {
            up: true,
            clean: true,
        },
        Wait { ms: 10488 },
        Move { tell: false },
        Wait { ms: 12962 },
        TurnRestart,
        Send { who: 0 },
        Switch { who: 1, on: true },
        Wait { ms: 1215 },
        Move { tell: false },
        Send { who: 1 },
        Wait { ms: 1517 },
        TurnRestart,
        Send { who: 0 },
        Send { who: 1 },
        Switch { who: 1, on: true },
        Move { tell: false },
        Send { who: 1 },
        Switch { who: 1, on: true },
        Send { who: 1 },
        Wait { ms: 3551 },
        TurnRestart,
        Send { who: 0 },
        Wait { ms: 7088 },
    ];
    let mut run = run_ops(9246574269979243412, true, ops).expect("the rules hold");
    run.heal().expect("linked and carrying traffic");
}
