//! The demo world: friends' devices link through SocialVPN across NATs and ping each other.
//! Real prosody and coturn, a cone NAT and a symmetric NAT, all in network namespaces that
//! are torn down at the end, on failure, and on Ctrl-C.

use serde_json::Value;
use socialvpn_tests::node::DpNode;
use socialvpn_tests::social_nodes::{address_of, befriend, start_node, wait_linked};
use socialvpn_tests::social_world::SocialWorld;
use socialvpn_tests::two_hosts::ping;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn main() {
    let node_bin = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("socialvpn-dpnode"),
        Err(e) => {
            eprintln!("demo: cannot locate myself: {e}");
            std::process::exit(1);
        }
    };
    install_interrupt_cleanup();
    let ok = std::panic::catch_unwind(|| run(&node_bin)).unwrap_or(false);
    if !ok {
        eprintln!("\ndemo FAILED (the world has been torn down)");
        std::process::exit(1);
    }
}

fn say(line: &str) {
    println!("\n== {line}");
}

fn jid(user: &str) -> String {
    format!("{user}@svpn.test")
}

fn run(bin: &Path) -> bool {
    say("Building the world in network namespaces");
    println!(
        "   the internet (198.18.0.0/24): prosody (XMPP) and coturn (STUN/TURN) at 198.18.0.1"
    );
    println!("   a home router with a cone NAT: alice's laptop and alice's tablet behind it");
    println!("   a carrier with a symmetric NAT: bob's laptop behind it");
    println!("   carol's server: a public address, no NAT");
    let w = SocialWorld::new("demo");
    for user in ["alice", "bob", "carol"] {
        w.register(user, &format!("pw-{user}"));
    }
    println!("   accounts alice, bob and carol registered on the XMPP server");

    say("Starting SocialVPN on every device (each logs in with its own XMPP resource)");
    let mut alice = started(&w, bin, "alice", "alice");
    let tablet = started(&w, bin, "alice2", "alice");
    let mut bob = started(&w, bin, "bob", "bob");
    let mut carol = started(&w, bin, "carol", "carol");
    for (who, n) in [
        ("alice", &alice),
        ("alice's tablet", &tablet),
        ("bob", &bob),
        ("carol", &carol),
    ] {
        println!(
            "   {who:<15} own address {:<12} device id {}…",
            n.ipv4,
            &n.uid[..12]
        );
    }

    say("Making friends: a request through the app, accepted on the other side");
    befriend(&mut alice, &jid("alice"), &mut bob, &jid("bob"));
    println!("   alice ↔ bob are friends");
    befriend(&mut alice, &jid("alice"), &mut carol, &jid("carol"));
    println!("   alice ↔ carol are friends");
    befriend(&mut bob, &jid("bob"), &mut carol, &jid("carol"));
    println!("   bob ↔ carol are friends");

    say("Links form by themselves (ICE through the NATs; TURN where no direct path exists)");
    let within = Duration::from_secs(30);
    let mut ok = true;
    for (uid, what) in [
        (&carol.uid, "carol"),
        (&bob.uid, "bob"),
        (&tablet.uid, "her tablet"),
    ] {
        let link = wait_linked(&mut alice, uid, within);
        ok &= link.is_some();
        println!("   alice → {what:<10} {}", describe(link.as_ref()));
    }
    ok &= wait_linked(&mut bob, &carol.uid, within).is_some();
    status_table("alice", &mut alice);
    status_table("bob", &mut bob);

    say("Pinging through SocialVPN (each user sees friends at addresses of their own choosing)");
    let targets = [
        ("carol, direct", address_of(&mut alice, &carol.uid)),
        ("bob, relayed by TURN", address_of(&mut alice, &bob.uid)),
        ("her tablet", address_of(&mut alice, &tablet.uid)),
    ];
    for (what, addr) in &targets {
        let addr = addr.clone().unwrap_or_default();
        let replies = !addr.is_empty() && ping(w.host("alice"), &addr);
        ok &= replies;
        println!(
            "   alice pings {addr:<15} ({what}): {}",
            if replies { "replies" } else { "NO REPLY" }
        );
    }
    let alice_at_bob = address_of(&mut bob, &alice.uid).unwrap_or_default();
    let replies = ping(w.host("bob"), &alice_at_bob);
    ok &= replies;
    println!(
        "   bob pings   {alice_at_bob:<15} (alice, in bob's own subnet): {}",
        if replies { "replies" } else { "NO REPLY" }
    );

    say("alice switches bob off in her friends list");
    let bob_at_alice = targets[1].1.clone().unwrap_or_default();
    alice.ask(&format!("friend disable {}", jid("bob")));
    std::thread::sleep(Duration::from_secs(1));
    let cut = !quick_ping(&w, "alice", &bob_at_alice) && !quick_ping(&w, "bob", &alice_at_bob);
    ok &= cut;
    println!(
        "   traffic between alice and bob: {}",
        if cut {
            "stopped, both ways"
        } else {
            "STILL FLOWING"
        }
    );
    alice.ask(&format!("friend enable {}", jid("bob")));
    let back =
        wait_linked(&mut alice, &bob.uid, within).is_some() && ping(w.host("alice"), &bob_at_alice);
    ok &= back;
    println!(
        "   switched on again: {}",
        if back {
            "bob replies again"
        } else {
            "NO REPLY"
        }
    );

    say("Tearing down");
    drop((alice, tablet, bob, carol));
    drop(w);
    println!("\n{}", if ok { "demo OK" } else { "demo FAILED" });
    ok
}

fn started(w: &SocialWorld, bin: &Path, host: &str, user: &str) -> DpNode {
    let mut n = start_node(w, bin, host, user);
    let online = n.wait_until("status", Duration::from_secs(15), |s| s["xmpp"] == "online");
    assert!(online, "{host} could not log in");
    n
}

fn quick_ping(w: &SocialWorld, host: &str, target: &str) -> bool {
    w.host(host)
        .output("ping", &["-c", "2", "-i", "0.2", "-W", "1", target])
        .status
        .success()
}

fn describe(link: Option<&Value>) -> String {
    match link {
        None => "NOT LINKED".into(),
        Some(l) => {
            let path = if l["relayed"] == true {
                "relayed via TURN"
            } else {
                "direct"
            };
            match l["rtt_ms"].as_f64() {
                Some(rtt) => format!("connected, {path}, rtt {rtt:.2} ms"),
                None => format!("connected, {path}"),
            }
        }
    }
}

fn status_table(user: &str, node: &mut DpNode) {
    println!("\n   {user}'s friends:");
    println!(
        "   {:<18} {:<8} {:<7} {:<9} {:<15} link",
        "friend", "device", "online", "switch", "address"
    );
    let roster = node.ask("roster");
    for entry in roster.as_array().into_iter().flatten() {
        let name = if entry["own"] == true {
            format!("(own) {}", entry["jid"].as_str().unwrap_or(""))
        } else {
            entry["jid"].as_str().unwrap_or("").to_string()
        };
        let switch = if entry["enabled"] == true {
            "on"
        } else {
            "off"
        };
        let devices = entry["devices"].as_array().cloned().unwrap_or_default();
        if devices.is_empty() {
            println!(
                "   {name:<18} {:<8} {:<7} {switch:<9} {:<15} -",
                "-", "no", "-"
            );
        }
        for d in devices {
            println!(
                "   {name:<18} {:<8} {:<7} {switch:<9} {:<15} {}",
                d["resource"].as_str().unwrap_or(""),
                "yes",
                d["overlay_address"].as_str().unwrap_or("-"),
                describe(Some(&d["link"]).filter(|l| l["state"] == "connected")),
            );
        }
    }
}

/// On Ctrl-C the nodes and servers (same process group) get the signal too; remove our
/// namespaces and per-namespace files.
fn install_interrupt_cleanup() {
    extern "C" fn on_interrupt(_: libc::c_int) {
        let marker = format!("-{}-", std::process::id());
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with("svpn-") && name.contains(&marker) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                    let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
                }
            }
        }
        std::process::exit(130);
    }
    // SAFETY: installing a handler; it runs only process-level cleanup before exiting.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}
