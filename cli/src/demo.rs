//! `socialvpn demo`: a small world in network namespaces — an XMPP server and a STUN/TURN
//! server on an "internet", a home router with a cone NAT and a carrier with a symmetric
//! NAT — with one `socialvpn up` daemon per device, driven through their control sockets
//! exactly as a user would. Everything is removed at the end, on failure, and on Ctrl-C.
//!
//! Built only with the `demo` feature, on the test suite's world: like the world builder, a
//! step that cannot be set up aborts the demo with its message (the world is still removed).
#![allow(clippy::expect_used)]

use crate::control;
use crate::table;
use socialvpn_core::api::{DeviceView, FriendAction, FriendView, LinkPhase, Request, XmppStatus};
use socialvpn_tests::netns::ChildGuard;
use socialvpn_tests::social_world::{SocialWorld, TURN_PASSWORD, TURN_USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages the world needs, by the command that shows they are there.
const TOOLS: [(&str, &str); 5] = [
    ("prosodyctl", "prosody"),
    ("turnserver", "coturn"),
    ("iptables", "iptables"),
    ("ping", "iputils-ping"),
    ("openssl", "openssl"),
];

pub fn run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the demo builds network namespaces: run it as root".into());
    }
    install_missing_tools()?;
    install_interrupt_cleanup();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ok = std::panic::catch_unwind(|| world(&exe)).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err("demo FAILED (the world has been torn down)".into())
    }
}

fn install_missing_tools() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "Installing {} from Debian (needed by the demo world)…",
        missing.join(", ")
    );
    let ok = {
        // Keep apt from starting prosody/coturn as host services, for the install only.
        let _policy = NoServiceStarts::install();
        Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    // The demo runs its own servers; the host's should neither run nor start at boot.
    for service in ["prosody", "coturn"] {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", service])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if ok {
        Ok(())
    } else {
        Err(format!("could not install {}", missing.join(", ")))
    }
}

/// A `policy-rc.d` that refuses service starts while it lives (only if the host has none).
struct NoServiceStarts(bool);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn install() -> NoServiceStarts {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(Self::PATH)
            .and_then(|mut f| f.write_all(b"#!/bin/sh\nexit 101\n"))
            .is_ok();
        NoServiceStarts(made)
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file(Self::PATH);
        }
    }
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

fn say(line: &str) {
    println!("\n== {line}");
}

/// One `socialvpn up` daemon in a host of the world; stopped with SIGTERM (so it tells its
/// friends), killed only if it does not exit within five seconds.
struct Daemon {
    process: ChildGuard,
    socket: PathBuf,
    uid: String,
}

impl Daemon {
    fn start(w: &SocialWorld, exe: &Path, host: &str, user: &str, subnet: &str) -> Daemon {
        let dir = w.state_dir().join(format!("cli-{host}"));
        std::fs::create_dir_all(&dir).expect("state dir");
        let socket = dir.join("control.sock");
        let password = dir.join("password");
        std::fs::write(&password, format!("pw-{user}\n")).expect("password file");
        let _ = std::fs::set_permissions(
            &password,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
        let config = dir.join("socialvpn.toml");
        let text = format!(
            "state_dir = \"{state}\"\ncontrol_socket = \"{socket}\"\n\n[account]\njid = \"{user}@{domain}\"\n\
             password_file = \"{password}\"\nresource = \"{host}\"\nserver = \"{server}\"\nca_file = \"{ca}\"\n\n\
             [network]\nsubnet = \"{subnet}\"\n\n[ice]\nstun = \"{stun}\"\nturn = \"{turn}\"\n\
             turn_user = \"{tu}\"\nturn_password = \"{tp}\"\n",
            state = dir.join("state").display(),
            socket = socket.display(),
            domain = w.domain(),
            password = password.display(),
            server = w.xmpp_addr(),
            ca = w.ca_cert_path().display(),
            stun = w.stun_addr(),
            turn = w.turn_addr(),
            tu = TURN_USER,
            tp = TURN_PASSWORD,
        );
        std::fs::write(&config, text).expect("config");
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
        let process = w
            .host(host)
            .command(exe.to_str().unwrap_or("socialvpn"))
            .args(["up", "--config", config.to_str().unwrap_or("")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start socialvpn up");
        let mut daemon = Daemon {
            process: ChildGuard(process),
            socket,
            uid: String::new(),
        };
        let online = daemon.wait(Duration::from_secs(20), control::status, |s| {
            s.xmpp == Some(XmppStatus::Online)
        });
        assert!(
            online.is_some(),
            "{host}: the daemon did not log in (see {})",
            dir.join("daemon.log").display()
        );
        daemon.uid = online.map(|s| s.uid).unwrap_or_default();
        daemon
    }

    /// What `ask` returns once it satisfies `pred`, asked every 250 ms for `within`.
    fn wait<T>(
        &self,
        within: Duration,
        ask: impl Fn(&Path) -> Result<T, String>,
        pred: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(v) = ask(&self.socket) {
                if pred(&v) {
                    return Some(v);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }

    fn wait_roster(&self, within: Duration, pred: impl Fn(&[FriendView]) -> bool) -> bool {
        self.wait(within, control::roster, |r| pred(r)).is_some()
    }

    fn friend(&self, action: FriendAction, jid: &str) {
        let request = Request::Friend {
            action,
            jid: jid.to_string(),
        };
        if let Err(e) = control::done(&self.socket, &request) {
            panic!("friend {action:?} {jid}: {e}");
        }
    }

    /// The device with `uid` in the roster, once it satisfies `pred`.
    fn device(
        &self,
        uid: &str,
        within: Duration,
        pred: impl Fn(&DeviceView) -> bool,
    ) -> Option<DeviceView> {
        let find = |r: &[FriendView]| -> Option<DeviceView> {
            r.iter()
                .flat_map(|e| e.devices.iter())
                .find(|d| d.uid.as_deref() == Some(uid))
                .cloned()
        };
        self.wait(within, control::roster, |r| {
            find(r).is_some_and(|d| pred(&d))
        })
        .and_then(|r| find(&r))
    }

    fn print_status(&self, who: &str) {
        if let (Ok(s), Ok(r)) = (control::status(&self.socket), control::roster(&self.socket)) {
            println!("\n   $ socialvpn status   (on {who}'s laptop)");
            for line in table::status(&s, &r).lines() {
                println!("   {line}");
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(self.process.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.process.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // ChildGuard kills it if it is still there.
    }
}

fn befriend(a: &Daemon, a_jid: &str, b: &Daemon, b_jid: &str) {
    a.friend(FriendAction::Add, b_jid);
    let asked = b.wait_roster(Duration::from_secs(15), |r| {
        r.iter().any(|e| e.jid == a_jid && e.pending_in)
    });
    assert!(asked, "{b_jid} never saw {a_jid}'s request");
    b.friend(FriendAction::Accept, a_jid);
    for (d, other) in [(a, b_jid), (b, a_jid)] {
        let mutual = d.wait_roster(Duration::from_secs(15), |r| {
            r.iter().any(|e| e.jid == other && e.mutual)
        });
        assert!(mutual, "not friends with {other}");
    }
    println!("   {a_jid} ↔ {b_jid}: friends");
}

fn ping(w: &SocialWorld, host: &str, target: &str, count: &str) -> bool {
    w.host(host)
        .output(
            "ping",
            &["-c", count, "-i", "0.2", "-W", "1", "-w", "10", target],
        )
        .status
        .success()
}

fn world(exe: &Path) -> bool {
    say("Building the world in network namespaces");
    println!(
        "   the internet (198.18.0.0/24): prosody (XMPP) and coturn (STUN/TURN) at 198.18.0.1"
    );
    println!("   a home router with a cone NAT: alice's laptop and tablet behind it");
    println!("   a carrier with a symmetric NAT: bob's laptop behind it");
    println!("   carol's server: a public address, no NAT");
    let w = SocialWorld::new("demo");
    for user in ["alice", "bob", "carol"] {
        w.register(user, &format!("pw-{user}"));
    }

    say("Starting `socialvpn up` on every device");
    let alice = Daemon::start(&w, exe, "alice", "alice", "100.64.0.0/16");
    let tablet = Daemon::start(&w, exe, "alice2", "alice", "100.64.0.0/16");
    let bob = Daemon::start(&w, exe, "bob", "bob", "100.65.0.0/16");
    let carol = Daemon::start(&w, exe, "carol", "carol", "100.66.0.0/16");
    println!("   four daemons logged in (alice's laptop and tablet, bob, carol)");

    say("Making friends: `socialvpn friend add`, then `socialvpn friend accept` on the other side");
    befriend(&alice, "alice@svpn.test", &bob, "bob@svpn.test");
    befriend(&alice, "alice@svpn.test", &carol, "carol@svpn.test");
    befriend(&bob, "bob@svpn.test", &carol, "carol@svpn.test");

    say("Links form by themselves (ICE through the NATs; TURN where no direct path exists)");
    let connected = |d: &DeviceView| matches!(d.link, Some(LinkPhase::Connected { .. }));
    let within = Duration::from_secs(30);
    let mut ok = true;
    let mut addresses = Vec::new();
    for (uid, what, expect) in [
        (&carol.uid, "carol", "direct"),
        (&bob.uid, "bob", "relayed"),
        (&tablet.uid, "her tablet", "direct"),
    ] {
        let device = alice.device(uid, within, connected);
        let (path, rtt) = device
            .as_ref()
            .map_or(("NOT LINKED".into(), "-".into()), |d| {
                table::link(d.link.as_ref())
            });
        ok &= path == expect;
        println!("   alice → {what:<10} {path}, rtt {rtt}");
        addresses.push((
            what,
            device.and_then(|d| d.overlay_address.map(|a| a.to_string())),
        ));
    }
    ok &= bob.device(&carol.uid, within, connected).is_some();
    alice.print_status("alice");
    bob.print_status("bob");

    say("Pinging through SocialVPN (each user chose the addresses friends have in their view)");
    for (what, addr) in &addresses {
        let addr = addr.clone().unwrap_or_default();
        let replies = !addr.is_empty() && ping(&w, "alice", &addr, "3");
        ok &= replies;
        println!(
            "   alice$ ping {addr:<15} ({what}): {}",
            if replies { "replies" } else { "NO REPLY" }
        );
    }
    let alice_at_bob = bob
        .device(&alice.uid, within, connected)
        .and_then(|d| d.overlay_address.map(|a| a.to_string()))
        .unwrap_or_default();
    let replies = ping(&w, "bob", &alice_at_bob, "3");
    ok &= replies;
    println!(
        "   bob$   ping {alice_at_bob:<15} (alice, in bob's own subnet): {}",
        if replies { "replies" } else { "NO REPLY" }
    );

    say("alice switches bob off: `socialvpn friend disable bob@svpn.test`");
    let bob_at_alice = addresses[1].1.clone().unwrap_or_default();
    alice.friend(FriendAction::Disable, "bob@svpn.test");
    std::thread::sleep(Duration::from_secs(1));
    let cut = !ping(&w, "alice", &bob_at_alice, "2") && !ping(&w, "bob", &alice_at_bob, "2");
    ok &= cut;
    println!(
        "   traffic between alice and bob: {}",
        if cut {
            "stopped, both ways"
        } else {
            "STILL FLOWING"
        }
    );
    alice.friend(FriendAction::Enable, "bob@svpn.test");
    let back = alice.device(&bob.uid, within, connected).is_some()
        && ping(&w, "alice", &bob_at_alice, "3");
    ok &= back;
    println!(
        "   `socialvpn friend enable bob@svpn.test`: {}",
        if back {
            "bob replies again"
        } else {
            "NO REPLY"
        }
    );

    say("Stopping the daemons (friends are told) and tearing the world down");
    drop((alice, tablet, bob, carol));
    drop(w);
    println!("\n{}", if ok { "demo OK" } else { "demo FAILED" });
    ok
}

/// On Ctrl-C the daemons and servers (same process group) get the signal too; remove our
/// namespaces and their files.
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
