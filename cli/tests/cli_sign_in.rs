//! `socialvpn login` end to end against the world's ejabberd (root): the password is traded
//! once for an OAuth token, only the token is kept, `up` signs in with it (X-OAUTH2), and a
//! revoked token ends in "run `socialvpn login`" without a retry loop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use socialvpn_tests::cli_daemon;
use socialvpn_tests::social_world::SocialWorld;
use socialvpn_tests::xmpp_server::XmppServerKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_socialvpn");

#[test]
fn login_keeps_only_a_token_and_up_signs_in_with_it_until_it_is_revoked() {
    let w = SocialWorld::with_server("cls", XmppServerKind::Ejabberd);
    w.register("alice", "pw-alice");
    let (config, socket, log) = cli_daemon::config(&w, "alice", "alice", "100.64.0.0/16");

    // A wrong password: a clear error (ejabberd hangs up without answering).
    let dir = config.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("password"), "not-her-password\n").unwrap();
    let out = w
        .host("alice")
        .output(BIN, &["login", "--config", config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a wrong password signed in");
    assert!(
        text.contains("sign-in at https://svpn.test:5443/oauth/token failed")
            && text.contains("wrong user name or password"),
        "{text}"
    );
    assert!(!text.contains("not-her-password"), "{text}");

    std::fs::write(dir.join("password"), "pw-alice\n").unwrap();
    let out = w
        .host("alice")
        .output(BIN, &["login", "--config", config.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("signed in as alice@svpn.test"), "{said}");
    let token_file = dir.join("state").join("xmpp-token.json");
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let stored = std::fs::read_to_string(&token_file).unwrap();
    assert!(!stored.contains("pw-alice"), "the password was kept");
    let token = serde_json::from_str::<serde_json::Value>(&stored).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    // The password leaves the configuration: `up` has only the token.
    std::fs::remove_file(dir.join("password")).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("password_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, without).unwrap();
    let paths = (config.clone(), socket.clone(), log.clone());
    let d = cli_daemon::start(Path::new(BIN), &w, "alice", paths, None);
    assert!(
        d.wait(Duration::from_secs(20), &["status"], |o| o
            .contains("XMPP: online")),
        "no login with the token: {}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    drop(d);

    // Revoked: the next start says what to do and does not try again.
    w.revoke_token(&token);
    let d = cli_daemon::start(Path::new(BIN), &w, "alice", (config, socket, log), None);
    assert!(
        d.wait(Duration::from_secs(20), &["status"], |o| o
            .contains("XMPP: token_rejected")),
        "{}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    let attempts = w.xmpp_connection_attempts(w.host_addr("alice"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.xmpp_connection_attempts(w.host_addr("alice")),
        attempts,
        "a refused token is tried again"
    );
    let said = std::fs::read_to_string(&d.log).unwrap();
    assert!(said.contains("run `socialvpn login`"), "{said}");
    assert!(!said.contains(&token), "the token reached the log");
}
