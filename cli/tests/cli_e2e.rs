//! The Linux client end to end (root): two `socialvpn up` daemons in the social test world,
//! driven only through the `socialvpn` command line, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use socialvpn_tests::cli_daemon::CliDaemon;
use socialvpn_tests::social_world::SocialWorld;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn");

fn up(w: &SocialWorld, host: &str, user: &str, subnet: &str) -> CliDaemon {
    socialvpn_tests::cli_daemon::up(Path::new(BIN), w, host, user, subnet)
}

/// The overlay address in `status` output on the row for `jid` (4th column from the right…
/// found as the first 100.x token on that row).
fn address_in(status: &str, jid: &str) -> Option<String> {
    status
        .lines()
        .find(|l| l.starts_with(jid))?
        .split_whitespace()
        .find(|t| t.starts_with("100."))
        .map(str::to_string)
}

fn ping(w: &SocialWorld, host: &str, target: &str) -> bool {
    w.host(host)
        .output(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "1", "-w", "5", target],
        )
        .status
        .success()
}

#[test]
fn two_daemons_link_show_status_and_obey_friend_disable() {
    let w = SocialWorld::new("cli");
    for user in ["alice", "carol"] {
        w.register(user, &format!("pw-{user}"));
    }
    // carol's machine has IPv6 switched off: her daemon runs IPv4 only, and says so.
    w.disable_ipv6("carol");
    let alice = up(&w, "alice", "alice", "100.64.0.0/16");
    let carol = up(&w, "carol", "carol", "100.66.0.0/16");
    let carol_log = std::fs::read_to_string(&carol.log).unwrap();
    assert!(carol_log.contains("running IPv4 only"), "{carol_log}");

    alice.text(&["friend", "add", "carol@svpn.test"]);
    // The request names the command that accepts it; the socket may come from the config.
    assert!(
        carol.wait(Duration::from_secs(15), &["friends"], |o| o.contains(
            "asks to be your friend: socialvpn friend accept alice@svpn.test"
        ))
    );
    let out = carol.cli_by_config(&["friend", "accept", "alice@svpn.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `status` shows the link with its path.
    assert!(
        alice.wait(Duration::from_secs(30), &["status"], |o| {
            o.lines()
                .any(|l| l.starts_with("carol@svpn.test") && l.contains("direct"))
        }),
        "no link in status: {}",
        alice.text(&["status"])
    );
    let carol_at_alice = address_in(&alice.text(&["status"]), "carol@svpn.test").unwrap();
    // The daemon reported its progress as it happened.
    let log = std::fs::read_to_string(&alice.log).unwrap();
    for line in [
        "logging in as alice@svpn.test",
        "logged in",
        "link to carol@svpn.test/socialvpn-",
    ] {
        assert!(log.contains(line), "missing progress line '{line}': {log}");
    }
    // A log written to a file has no colour codes, and no other crate's chatter.
    for unwanted in ["\x1b[", "rtc_ice", "boringtun", "ErrMismatchUsername"] {
        assert!(!log.contains(unwanted), "'{unwanted}' in the log: {log}");
    }
    let by_config = alice.cli_by_config(&["status"]);
    assert!(
        String::from_utf8_lossy(&by_config.stdout).contains("carol@svpn.test"),
        "status --config: {}",
        String::from_utf8_lossy(&by_config.stderr)
    );
    assert!(
        ping(&w, "alice", &carol_at_alice),
        "no traffic over the link"
    );

    // `friend disable` stops traffic; `enable` brings it back.
    alice.text(&["friend", "disable", "carol@svpn.test"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!ping(&w, "alice", &carol_at_alice), "traffic after disable");
    let friends = alice.text(&["friends"]);
    assert!(
        friends
            .lines()
            .any(|l| l.starts_with("carol@svpn.test") && l.contains("off")),
        "{friends}"
    );
    // carol sees why: alice's device closed the link.
    assert!(
        carol.wait(Duration::from_secs(10), &["status"], |o| {
            o.lines()
                .any(|l| l.starts_with("alice@svpn.test") && l.contains("closed by friend"))
        }),
        "{}",
        carol.text(&["status"])
    );
    let log = std::fs::read_to_string(&alice.log).unwrap();
    let closed: Vec<&str> = log.lines().filter(|l| l.contains(": closed")).collect();
    assert!(
        closed.len() == 1 && closed[0].contains("link to carol@svpn.test/socialvpn-"),
        "{log}"
    );
    let log = std::fs::read_to_string(&carol.log).unwrap();
    assert!(log.contains("closed by the friend's device"), "{log}");
    alice.text(&["friend", "enable", "carol@svpn.test"]);
    assert!(alice.wait(Duration::from_secs(30), &["status"], |o| {
        o.lines()
            .any(|l| l.starts_with("carol@svpn.test") && l.contains("direct"))
    }));
    assert!(ping(&w, "alice", &carol_at_alice), "traffic did not resume");

    // `pin` gives carol's device the address alice chooses, at once and for good; `unpin`
    // keeps it but lets it move again.
    let status = alice.text(&["status"]);
    let row = status
        .lines()
        .find(|l| l.starts_with("carol@svpn.test"))
        .unwrap_or_default();
    let resource = row.split_whitespace().nth(1).unwrap_or_default();
    let device = format!("carol@svpn.test/{resource}");
    assert!(
        alice
            .text(&["pin", &device, "100.64.77.7"])
            .contains("pinned"),
        "{status}"
    );
    let status = alice.text(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("carol@svpn.test") && l.contains("100.64.77.7 (pinned)")),
        "{status}"
    );
    assert!(
        ping(&w, "alice", "100.64.77.7"),
        "no traffic at the pinned address"
    );
    assert!(
        !ping(&w, "alice", &carol_at_alice),
        "the old address still answers"
    );
    let refused = alice.cli(&["pin", &device, "100.99.0.1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a host address of the subnet"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    alice.text(&["unpin", &device]);
    let status = alice.text(&["status"]);
    assert!(
        status.lines().any(|l| l.starts_with("carol@svpn.test")
            && l.contains("100.64.77.7")
            && !l.contains("pinned")),
        "{status}"
    );
    let carol_at_alice = "100.64.77.7".to_string();

    // `log-level` changes what the running daemon logs.
    let before = std::fs::read_to_string(&alice.log).unwrap().len();
    alice.text(&["log-level", "debug"]);
    alice.text(&["network-changed"]);
    assert!(
        alice.wait(Duration::from_secs(10), &["status"], |_| {
            std::fs::read_to_string(&alice.log).unwrap_or_default()[before..]
                .contains("XMPP reconnecting after a network change")
        }),
        "no debug records after log-level debug"
    );
    alice.text(&["log-level", "warn"]);
    assert!(alice.wait(Duration::from_secs(20), &["status"], |o| {
        o.starts_with("device") && o.contains("XMPP: online")
    }));
    assert!(
        ping(&w, "alice", &carol_at_alice),
        "no traffic after the reconnection"
    );

    // SIGTERM: links closed (carol is told at once), interface and socket removed.
    let pid = alice.process.pid() as i32;
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut process = alice.process;
    while Instant::now() < deadline && process.0.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = process
        .0
        .try_wait()
        .ok()
        .flatten()
        .expect("daemon did not stop on SIGTERM");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&alice.log).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&alice.log).unwrap();
    assert!(log.contains("stopped; svpn0 removed"), "{log}");
    assert!(!alice.socket.exists());
    let link = w.host("alice").output("ip", &["link", "show", "svpn0"]);
    assert!(!link.status.success(), "svpn0 still exists");
    assert!(
        carol.wait(Duration::from_secs(5), &["status"], |o| {
            o.lines()
                .filter(|l| l.starts_with("alice@svpn.test"))
                .all(|l| !l.contains("direct"))
        }),
        "carol still shows the link"
    );
}

#[test]
fn a_trace_log_carries_no_password() {
    let w = SocialWorld::new("clt");
    w.register("alice", "pw-alice");
    let alice = socialvpn_tests::cli_daemon::up_with_log(
        Path::new(BIN),
        &w,
        "alice",
        "alice",
        "100.64.0.0/16",
        Some("trace"),
    );
    alice.text(&["status"]);
    let log = std::fs::read_to_string(&alice.log).unwrap();
    assert!(
        log.contains("tokio_xmpp::stanzastream"),
        "not a trace log of the XMPP client"
    );
    // PLAIN would carry "\0alice\0pw-alice" in base64; SCRAM its proof; both in <auth>.
    for secret in [
        "pw-alice",
        "AGFsaWNlAHB3LWFsaWNl",
        "<auth",
        "<response",
        "SEND ",
    ] {
        assert!(!log.contains(secret), "'{secret}' in the trace log");
    }
}

#[test]
fn the_daemon_stops_when_its_interface_is_removed() {
    let w = SocialWorld::new("cli");
    w.register("alice", "pw-alice");
    let mut alice = up(&w, "alice", "alice", "100.64.0.0/16");
    let deleted = w
        .host("alice")
        .command("ip")
        .args(["link", "del", "svpn0"])
        .status()
        .unwrap();
    assert!(deleted.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = alice.process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon kept running without its interface"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&alice.log).unwrap();
    assert!(!status.success(), "{log}");
    assert!(log.contains("the tunnel failed"), "{log}");
}

/// `socialvpn up` with this configuration (and `RUST_LOG`, if given): (success, stderr).
fn up_once(config: &str, rust_log: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socialvpn.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let out = command
        .args(["up", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const MTU_TOO_LARGE: &str = "[account]\njid = \"alice@example.org\"\n\n[network]\nmtu = 99999\n";

#[test]
fn bad_configuration_names_the_key_and_the_line() {
    let (ok, err) = up_once(MTU_TOO_LARGE, None);
    assert!(
        !ok && err.contains("mtu") && err.contains("line 5"),
        "{err}"
    );
    let (ok, err) = up_once(
        "[account]\njid = \"alice@example.org\"\nresourse = \"x\"\n",
        None,
    );
    assert!(
        !ok && err.contains("resourse") && err.contains("line 3"),
        "{err}"
    );
}

#[test]
fn the_client_users_install_carries_no_test_world() {
    // The demo (and with it the test suite's world builder) is only in `--features demo`.
    let out = Command::new(BIN).arg("demo").output().unwrap();
    assert!(!out.status.success());
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("status") && !help.contains("demo"), "{help}");
}

#[test]
fn a_log_filter_it_cannot_read_is_named_and_the_daemon_goes_on() {
    // A level that does not exist, a field-value match (EnvFilter's, not offered) and an
    // empty piece: the daemon says what it ignored and goes on (to the configuration's
    // error here). That the default filter is then kept is `logging`'s unit test.
    for asked in [
        "warn,socialvpn_core=verbose",
        "socialvpn_core[{peer=alice}]=debug",
        "warn,",
    ] {
        let (ok, err) = up_once(MTU_TOO_LARGE, Some(asked));
        assert!(!ok && err.contains("RUST_LOG ignored"), "{asked}: {err}");
        assert!(
            err.contains("mtu") && err.contains("line 5"),
            "{asked}: {err}"
        );
    }
}
