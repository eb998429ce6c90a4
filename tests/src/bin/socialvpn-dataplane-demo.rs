//! The data-plane demo: two users' devices in network namespaces link through SocialVPN and
//! ping each other, each seeing the other at an address from their own subnet.
//! Everything is torn down at the end, on failure, and on Ctrl-C.

use socialvpn_tests::two_hosts::{ping, TwoHosts, A_SUBNET, A_UNDERLAY, B_SUBNET, B_UNDERLAY};
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let node_bin = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("socialvpn-dpnode"),
        Err(e) => {
            eprintln!("demo: cannot locate myself: {e}");
            std::process::exit(1);
        }
    };
    install_interrupt_cleanup();
    let ok = std::panic::catch_unwind(|| run(node_bin)).unwrap_or(false);
    if !ok {
        eprintln!("\ndemo FAILED (the world has been torn down)");
        std::process::exit(1);
    }
}

fn run(node_bin: PathBuf) -> bool {
    say("Building the world: two hosts, alice and bob, in network namespaces joined by a cable");
    println!("   alice's underlay address {A_UNDERLAY}, bob's {B_UNDERLAY}");
    let mut w = TwoHosts::new("demo", &node_bin);
    say("Each device started SocialVPN on a fresh TUN and created its key");
    for (name, node, subnet) in [("alice", &w.node_a, A_SUBNET), ("bob", &w.node_b, B_SUBNET)] {
        println!(
            "   {name:<6} UID {}  own address {} in {subnet}, IPv6 {}",
            node.uid, node.ipv4, node.ipv6
        );
    }
    say("They are linked (WireGuard session per friend device); each picked the other's address");
    println!("   alice sees bob at   {}", w.b_at_a);
    println!("   bob   sees alice at {}", w.a_at_b);

    let mut all_ok = true;
    for (from, ns, target, what) in [
        ("alice", &w.a, w.b_at_a.clone(), "bob, IPv4"),
        ("bob", &w.b, w.a_at_b.clone(), "alice, IPv4"),
        ("alice", &w.a, w.node_b.ipv6.clone(), "bob, IPv6"),
    ] {
        let ok = ping(ns, &target);
        all_ok &= ok;
        println!(
            "   {from} pings {target} ({what}): {}",
            if ok { "replies" } else { "NO REPLY" }
        );
    }
    say("Link status at alice");
    let links = w.node_a.ask("links");
    for link in links.as_array().into_iter().flatten() {
        println!(
            "   friend {}  at {}  via {}  session {}  sent {} packets, received {}",
            &link["uid"].as_str().unwrap_or("?")[..12],
            link["overlay_address"].as_str().unwrap_or("?"),
            link["endpoint"].as_str().unwrap_or("-"),
            if link["session"] == true {
                "up"
            } else {
                "down"
            },
            link["counters"]["tx"]["packets"],
            link["counters"]["rx"]["packets"],
        );
    }
    let drops = w.node_a.ask("counters")["drops"].clone();
    println!("   drops at alice: {drops}");
    say("Tearing down");
    drop(w);
    println!("\n{}", if all_ok { "demo OK" } else { "demo FAILED" });
    all_ok
}

fn say(line: &str) {
    println!("\n== {line}");
}

/// On Ctrl-C the nodes (same process group) get the signal too; remove our namespaces.
fn install_interrupt_cleanup() {
    extern "C" fn on_interrupt(_: libc::c_int) {
        let marker = format!("-{}-", std::process::id());
        if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or("");
                if name.starts_with("svpn-") && name.contains(&marker) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
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
