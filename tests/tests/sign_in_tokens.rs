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

/// The `name`/`value` pairs of a form's `<input>` fields (ejabberd's login page is simple
/// HTML; a browser would submit the same).
fn form_fields(html: &str) -> (Option<String>, Vec<(String, String)>) {
    let attr = |tag: &str, name: &str| {
        ['"', '\''].into_iter().find_map(|quote| {
            let key = format!(" {name}={quote}");
            tag.find(&key).map(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find(quote).unwrap_or(rest.len())].to_string()
            })
        })
    };
    let action = html
        .split("<form")
        .nth(1)
        .and_then(|form| attr(&form[..form.find('>').unwrap_or(form.len())], "action"));
    let fields = html
        .split("<input")
        .skip(1)
        .filter_map(|input| {
            let tag = &input[..input.find('>').unwrap_or(input.len())];
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect();
    (action, fields)
}

#[test]
fn ejabberds_browser_sign_in_hands_back_a_token_for_its_own_state_only() {
    use socialvpn_core::oauth::{browser_sign_in, token_from_redirect};
    let w = SocialWorld::with_server("tokb", XmppServerKind::Ejabberd);
    w.register("alice", "pw-alice");
    let start = browser_sign_in(
        &format!("https://{}:5443/oauth/authorization_token", w.domain()),
        "http://127.0.0.1:8765/callback",
    )
    .unwrap();
    let (ca, server, domain) = (w.ca_cert_path(), w.xmpp_addr().ip(), w.domain());
    let url = start.url.clone();
    // The browser: the login form, filled in and sent; the redirect is not followed, the
    // app's listener would receive it.
    let location = w.host("carol").block_on(move || {
        Box::pin(async move {
            let tls = socialvpn_core::xmpp::trust::tls_config(&TlsTrust::CaFile(ca)).unwrap();
            let http = reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                .redirect(reqwest::redirect::Policy::none())
                .resolve(domain, std::net::SocketAddr::new(server, 5443))
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let page = http.get(&url).send().await.unwrap().text().await.unwrap();
            let (action, mut fields) = form_fields(&page);
            let action = action.unwrap_or_else(|| panic!("no form in {page}"));
            fields.retain(|(name, _)| !name.is_empty());
            for (name, value) in fields.iter_mut() {
                match name.as_str() {
                    "username" => *value = format!("alice@{domain}"),
                    "password" => *value = "pw-alice".into(),
                    _ => {}
                }
            }
            // The token lifetime the form offers as a choice: an hour.
            fields.push(("ttl".into(), "3600".into()));
            let target = reqwest::Url::parse(&url).unwrap().join(&action).unwrap();
            let answer = http
                .post(target.clone())
                .form(&fields)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {target}: {e:?}; form {page}"));
            let status = answer.status();
            let location = answer
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            location
                .unwrap_or_else(|| panic!("{status}: no redirect; form {page}; sent {fields:?}"))
        })
    });
    assert!(
        location.starts_with("http://127.0.0.1:8765/callback"),
        "{location}"
    );
    assert_eq!(
        token_from_redirect(&location, "another-sign-ins-state"),
        Err(OAuthError::ForeignState)
    );
    let token = token_from_redirect(&location, &start.state).expect("a token");
    let account = account(&w, "alice", Credentials::Token(token.secret));
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(account);
            let state = first_state(&mut rx, Duration::from_secs(10)).await;
            assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");
            s.shutdown().await;
        })
    });
}
