//! Sign-in tokens against the real servers (root): ejabberd's password grant and X-OAUTH2
//! login, expired and revoked tokens as `TokenRejected` without retries, the grant's typed
//! failures, and a server that offers no token login.

use socialvpn_core::config::Credentials;
use socialvpn_core::oauth::{password_grant, OAuthError};
use socialvpn_core::xmpp::connect::{LoginFailure, TlsTrust, XmppAccount};
use socialvpn_core::xmpp::session::{XmppInput, XmppSession, XmppState};
use socialvpn_tests::social_world::SocialWorld;
use socialvpn_tests::xmpp_server::XmppServerKind;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

fn account(w: &SocialWorld, user: &str, credentials: Credentials) -> XmppAccount {
    XmppAccount {
        jid: format!("{user}@{}", w.domain()).parse().unwrap(),
        credentials,
        resource: "tok1".into(),
        server: Some((w.xmpp_addr().ip().to_string(), w.xmpp_addr().port())),
        trust: TlsTrust::CaFile(w.ca_cert_path()),
        dns: Default::default(),
        protect: None,
    }
}

/// The first state the session reports other than `Connecting`, within `within`.
async fn first_state(rx: &mut Receiver<XmppInput>, within: Duration) -> Option<XmppState> {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(input)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        match input {
            XmppInput::State(XmppState::Connecting) => {}
            XmppInput::State(state) => return Some(state),
            _ => {}
        }
    }
    None
}

#[test]
fn ejabberd_tokens_sign_in_and_refused_ones_are_never_retried() {
    let w = SocialWorld::with_server("tok", XmppServerKind::Ejabberd);
    w.register("alice", "pw-alice");
    let url = w.oauth_token_url();
    let server = w.xmpp_addr().ip().to_string();
    let ca = w.ca_cert_path();
    let jid: socialvpn_core::xmpp::BareJid = format!("alice@{}", w.domain()).parse().unwrap();

    // The password grant, as `socialvpn login` and the apps run it.
    let grant = {
        let (url, server, ca, jid) = (url.clone(), server.clone(), ca.clone(), jid.clone());
        w.host("carol").block_on(move || {
            Box::pin(async move {
                let trust = TlsTrust::CaFile(ca);
                let good = password_grant(&jid, "pw-alice", &url, &trust, Some(&server)).await;
                let untrusted =
                    password_grant(&jid, "pw-alice", &url, &TlsTrust::Platform, Some(&server))
                        .await;
                let wrong = password_grant(&jid, "nope", &url, &trust, Some(&server)).await;
                (good, untrusted, wrong)
            })
        })
    };
    let (good, untrusted, wrong) = grant;
    let token = good.expect("password grant").secret;
    assert!(
        matches!(untrusted, Err(OAuthError::Certificate(_))),
        "{untrusted:?}"
    );
    // ejabberd hangs up on a wrong password without an answer: said in words.
    assert_eq!(wrong, Err(OAuthError::NoAnswer));

    let granted = account(&w, "alice", Credentials::Token(token.clone()));
    let short_lived = w.issue_token("alice", 1);
    let revoked = w.issue_token("alice", 3600);
    w.revoke_token(&revoked);
    let expired = account(&w, "alice", Credentials::Token(short_lived));
    let revoked = account(&w, "alice", Credentials::Token(revoked));
    let bob_with_alices_token = account(&w, "bob", Credentials::Token(token));
    w.register("bob", "pw-bob");
    std::thread::sleep(Duration::from_secs(2)); // the 1 s token expires
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(granted);
            let state = first_state(&mut rx, Duration::from_secs(10)).await;
            assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");
            s.shutdown().await;
            for account in [expired, revoked, bob_with_alices_token] {
                let (s, mut rx) = XmppSession::spawn(account);
                let state = first_state(&mut rx, Duration::from_secs(10)).await;
                assert_eq!(state, Some(XmppState::TokenRejected));
                // Never retried: nothing more arrives.
                let more = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
                assert!(!matches!(more, Ok(Some(_))), "{more:?}");
                s.shutdown().await;
            }
        })
    });
}

#[test]
fn a_server_without_token_login_says_so_and_passwords_still_work() {
    // prosody (stock) offers SCRAM and PLAIN only.
    let w = SocialWorld::new("tokp");
    w.register("alice", "pw-alice");
    let with_token = account(&w, "alice", Credentials::Token("some-token".into()));
    let with_password = account(&w, "alice", Credentials::Password("pw-alice".into()));
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(with_token);
            let state = first_state(&mut rx, Duration::from_secs(10)).await;
            match state {
                Some(XmppState::Offline {
                    reason: LoginFailure::Unsupported(why),
                    ..
                }) => assert!(why.contains("no token login"), "{why}"),
                other => panic!("{other:?}"),
            }
            s.shutdown().await;
            let (s, mut rx) = XmppSession::spawn(with_password);
            let state = first_state(&mut rx, Duration::from_secs(10)).await;
            assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");
            s.shutdown().await;
        })
    });
}
