//! The world for the JVM bindings tests: builds the social test world (prosody, coturn,
//! NATs), registers the accounts, starts two `socialvpn up` daemons as the Kotlin tests'
//! Rust peers, writes what the tests need to know into a properties file, runs the given
//! command (Maven) and tears everything down, whatever the command's outcome.
//!
//! Usage: socialvpn-jvm-world [--ejabberd] SOCIALVPN_BIN -- COMMAND [ARGS…]
//! (prosody serves the accounts unless `--ejabberd` asks for ejabberd).
//! The command runs in the host namespace (Maven needs the network for its downloads) with
//! `SOCIALVPN_WORLD` naming the properties file and `SOCIALVPN_JVM_NETNS` the namespace the
//! test JVM must run in (the `alice` host, behind the cone NAT).
//!
//! Peers: `carol@svpn.test` on the public host `carol` (the tests befriend her and ping her
//! through the tunnel) and `dave@svpn.test` on `dave`, who has asked alice to be her friend
//! before the tests start, and mia too, whom carol asked as well (so their first rosters hold
//! requests).

use socialvpn_tests::cli_daemon;
use socialvpn_tests::social_world::{SocialWorld, XmppServerKind, TURN_PASSWORD, TURN_USER};
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

/// Accounts the Kotlin tests sign in with (password `pw-NAME`): the bindings' suite uses
/// alice, kate and liam, the Android app's suite mia and noah.
const JVM_USERS: [&str; 5] = ["alice", "kate", "liam", "mia", "noah"];

extern "C" fn ignore(_: libc::c_int) {}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let server = if args.first().map(String::as_str) == Some("--ejabberd") {
        args.remove(0);
        XmppServerKind::Ejabberd
    } else {
        XmppServerKind::Prosody
    };
    let (bin, command) = match args.split_first() {
        Some((bin, rest)) if rest.len() >= 2 && rest[0] == "--" => {
            (bin.clone(), rest[1..].to_vec())
        }
        _ => {
            eprintln!("usage: socialvpn-jvm-world [--ejabberd] SOCIALVPN_BIN -- COMMAND [ARGS…]");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C reaches the command (same process group); we outlive it to clean up. A handler,
    // not SIG_IGN, so the command does not inherit the disposition.
    // SAFETY: installing a handler that does nothing is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, ignore as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, ignore as *const () as libc::sighandler_t);
    }
    // The apps' users type only their JID and password: the server is found by SRV records
    // from the network's DNS server, STUN/TURN come from it by XEP-0215.
    let mut world = SocialWorld::with_offered_turn("jvm", server);
    let records = world.srv_records();
    world.serve_dns(&records);
    for user in JVM_USERS.iter().chain(&["carol", "dave"]) {
        world.register(user, &format!("pw-{user}"));
    }
    let bin = Path::new(&bin);
    let carol = cli_daemon::up(bin, &world, "carol", "carol", "100.66.0.0/16");
    let dave = cli_daemon::up(bin, &world, "dave", "dave", "100.67.0.0/16");
    dave.text(&["friend", "add", "alice@svpn.test"]);
    // mia's requests: both ask before she ever signs in (the Android suite accepts carol's
    // and declines dave's from the list: one friendship, which ejabberd's presence counter
    // lets through at once, unlike a second within a minute).
    dave.text(&["friend", "add", "mia@svpn.test"]);
    carol.text(&["friend", "add", "mia@svpn.test"]);

    let work = world.state_dir().join("jvm");
    std::fs::create_dir_all(&work).expect("jvm work directory");
    let properties = world.state_dir().join("jvm-world.properties");
    let mut text = format!(
        "xmpp.server={}\nxmpp.domain={}\ndns={}\nca.file={}\nstun=stun:{}\nturn=turn:{}\n\
         turn.user={TURN_USER}\nturn.password={TURN_PASSWORD}\n\
         peer.jid=carol@svpn.test\npeer.socket={}\npeer.netns={}\nrequester.jid=dave@svpn.test\n\
         socialvpn.bin={}\nwork.dir={}\n",
        world.xmpp_addr(),
        world.domain(),
        world.dns_addr(),
        world.ca_cert_path().display(),
        world.stun_addr(),
        world.turn_addr(),
        carol.socket.display(),
        world.host("carol").name(),
        bin.display(),
        work.display(),
    );
    for user in JVM_USERS {
        text.push_str(&format!(
            "{user}.jid={user}@svpn.test\n{user}.password=pw-{user}\n"
        ));
    }
    std::fs::write(&properties, text).expect("properties file");

    // Give the request time to be stored for alice before her first login.
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("SOCIALVPN_WORLD", &properties)
        .env("SOCIALVPN_JVM_NETNS", world.host("alice").name())
        .status();
    let code = match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("socialvpn-jvm-world: {} ended with {s}", command[0]);
            for (name, daemon) in [("carol", &carol), ("dave", &dave)] {
                let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
                eprintln!("--- {name}'s daemon log\n{log}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("socialvpn-jvm-world: cannot run {}: {e}", command[0]);
            ExitCode::FAILURE
        }
    };
    let _ = std::io::stderr().flush();
    drop((carol, dave));
    drop(world);
    code
}
