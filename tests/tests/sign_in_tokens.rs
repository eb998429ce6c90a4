//! Sign-in tokens against the real servers (root): ejabberd's password grant and X-OAUTH2
//! login, expired and revoked tokens as `TokenRejected` without retries, the grant's typed
//! failures, and a server that offers no token login.

use socialvpn_core::config::Credentials;
use socialvpn_core::oauth::{password_grant, OAuthError, Reach};
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
                let reach = |trust| Reach {
                    trust,
                    dns: Default::default(),
                    connect_to: Some(server.clone()),
                };
                let trusted = reach(TlsTrust::CaFile(ca));
                let good = password_grant(&jid, "pw-alice", &url, &trusted).await;
                let platform = reach(TlsTrust::Platform);
                let untrusted = password_grant(&jid, "pw-alice", &url, &platform).await;
                let wrong = password_grant(&jid, "nope", &url, &trusted).await;
                // A page that is not a token endpoint (ejabberd's login form answers in HTML).
                let page = url.replace("/oauth/token", "/oauth/authorization_token");
                let html = password_grant(&jid, "pw-alice", &page, &trusted).await;
                (good, untrusted, wrong, html)
            })
        })
    };
    let (good, untrusted, wrong, html) = grant;
    assert!(
        matches!(&html, Err(OAuthError::BadAnswer(why)) if why.contains("HTML")),
        "{html:?}"
    );
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
            let value = attr(tag, "value").unwrap_or_default();
            Some((attr(tag, "name")?, unescape_html(&value)))
        })
        .collect();
    (action, fields)
}

/// Plays the browser from `host`: opens `url` (its host name served at `at`), fills in the
/// login form with `fill` (fields set, or added) and sends it; returns where the answer
/// redirects (not followed: the app's listener would receive it).
fn sign_in_in_browser(
    w: &SocialWorld,
    host: &str,
    url: &str,
    at: std::net::SocketAddr,
    fill: &[(&str, &str)],
) -> String {
    let ca = w.ca_cert_path();
    let url = url.to_string();
    let fill: Vec<(String, String)> = fill
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    w.host(host).block_on(move || {
        Box::pin(async move {
            let tls = socialvpn_core::xmpp::trust::tls_config(&TlsTrust::CaFile(ca)).unwrap();
            let name = reqwest::Url::parse(&url)
                .unwrap()
                .host_str()
                .unwrap()
                .to_string();
            let http = reqwest::Client::builder()
                .use_preconfigured_tls((*tls).clone())
                .redirect(reqwest::redirect::Policy::none())
                .resolve(&name, at)
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            let page = http.get(&url).send().await.unwrap().text().await.unwrap();
            let (action, mut fields) = form_fields(&page);
            let action = action.unwrap_or_else(|| panic!("no form in {page}"));
            fields.retain(|(name, _)| !name.is_empty());
            for (name, value) in fill {
                match fields.iter_mut().find(|(n, _)| *n == name) {
                    Some(field) => field.1 = value,
                    None => fields.push((name, value)),
                }
            }
            let target = reqwest::Url::parse(&url).unwrap().join(&action).unwrap();
            let answer = http
                .post(target.clone())
                .form(&fields)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {target}: {e:?}; form {page}"));
            let status = answer.status();
            answer
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| panic!("{status}: no redirect; form {page}; sent {fields:?}"))
        })
    })
}

/// An attribute's text as a browser reads it (the entities HTML escaping makes).
fn unescape_html(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

#[test]
fn ejabberds_browser_sign_in_hands_back_a_token_for_its_own_state_only() {
    use socialvpn_core::oauth::{browser_sign_in, token_from_redirect};
    let w = SocialWorld::with_server("tokb", XmppServerKind::Ejabberd);
    w.register("alice", "pw-alice");
    let start = browser_sign_in(
        &format!("https://{}:5443/oauth/authorization_token", w.domain()),
        "http://127.0.0.1:8765/callback",
        &socialvpn_core::oauth::BrowserFlow::Implicit,
    )
    .unwrap();
    let jid = format!("alice@{}", w.domain());
    // The token lifetime the form offers as a choice: an hour.
    let location = sign_in_in_browser(
        &w,
        "carol",
        &start.url,
        std::net::SocketAddr::new(w.xmpp_addr().ip(), 5443),
        &[
            ("username", &jid),
            ("password", "pw-alice"),
            ("ttl", "3600"),
        ],
    );
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

/// The browser sign-in against an authorization server of the deployment's own (its own
/// accounts and passwords), with the authorization code and PKCE; the XMPP server asks that
/// server about the token at login (ejabberd: X-OAUTH2; prosody: OAUTHBEARER). A redirect with another state, a code traded with the wrong
/// verifier and a code used twice are refused; a token bought with a code presented again is
/// revoked by the server (RFC 6749 4.1.2), and the next login says `TokenRejected`.
#[test]
fn an_authorization_servers_code_flow_with_pkce_signs_in_to_ejabberd() {
    code_flow_with_pkce_signs_in(XmppServerKind::Ejabberd);
}

#[test]
fn an_authorization_servers_code_flow_with_pkce_signs_in_to_prosody() {
    code_flow_with_pkce_signs_in(XmppServerKind::Prosody);
}

fn code_flow_with_pkce_signs_in(kind: XmppServerKind) {
    use socialvpn_core::oauth::{browser_sign_in, finish_browser_sign_in, BrowserFlow};
    use socialvpn_core::xmpp::discovery::Dns;
    use socialvpn_tests::auth_server::{AUTH_CLIENT_ID, AUTH_SERVER_ADDR, AUTH_SERVER_NAME};
    use socialvpn_tests::dns_server::DnsRecord;
    let tag = match kind {
        XmppServerKind::Ejabberd => "tokpe",
        XmppServerKind::Prosody => "tokpp",
    };
    let mut w = SocialWorld::with_authorization_server(tag, kind, &[("alice", "as-pw-alice")]);
    // The XMPP account's own password is never used: the authorization server signs in.
    // (prosody with OAUTHBEARER keeps no accounts of its own: every user exists.)
    if kind == XmppServerKind::Ejabberd {
        w.register("alice", "pw-alice");
    }
    // The app finds the authorization server by name, through the platform's DNS.
    w.serve_dns(&[DnsRecord::A {
        name: AUTH_SERVER_NAME.into(),
        addr: *AUTH_SERVER_ADDR.ip(),
    }]);
    let base = format!("https://{AUTH_SERVER_NAME}:{}", AUTH_SERVER_ADDR.port());
    let flow = BrowserFlow::CodeWithPkce {
        token_url: format!("{base}/token"),
        client_id: AUTH_CLIENT_ID.into(),
    };
    let redirect_uri = "http://127.0.0.1:8766/callback";
    let jid = format!("alice@{}", w.domain());
    let at = std::net::SocketAddr::V4(AUTH_SERVER_ADDR);
    let sign_in = || {
        let start = browser_sign_in(&format!("{base}/authorize"), redirect_uri, &flow).unwrap();
        let location = sign_in_in_browser(
            &w,
            "carol",
            &start.url,
            at,
            &[("username", &jid), ("password", "as-pw-alice")],
        );
        assert!(
            location.starts_with(redirect_uri) && location.contains("code="),
            "{location}"
        );
        (start, location)
    };
    let (first, first_back) = sign_in();
    let (second, second_back) = sign_in();
    let reach = Reach {
        trust: TlsTrust::CaFile(w.ca_cert_path()),
        dns: Dns {
            servers: vec![std::net::IpAddr::V4(w.dns_addr())],
        },
        connect_to: None,
    };
    let (token, foreign, tampered, replayed) = w.host("carol").block_on(move || {
        Box::pin(async move {
            // The first sign-in's answer is not the second's.
            let foreign = finish_browser_sign_in(&second, &first_back, &reach).await;
            // A verifier that is not the one the challenge was made from: the code is refused.
            let mut wrong = first.clone();
            if let Some(x) = wrong.exchange.as_mut() {
                x.verifier = "x".repeat(64);
            }
            let tampered = finish_browser_sign_in(&wrong, &first_back, &reach).await;
            let token = finish_browser_sign_in(&second, &second_back, &reach).await;
            (token, foreign, tampered, (second, second_back, reach))
        })
    });
    assert_eq!(foreign, Err(OAuthError::ForeignState));
    assert!(
        matches!(tampered, Err(OAuthError::Refused(_))),
        "{tampered:?}"
    );
    let token = token.expect("a token for the code");
    assert!(token.expires_at.is_some());

    // The XMPP server takes the token (it asks the authorization server).
    let account_with_token = account(&w, "alice", Credentials::Token(token.secret.clone()));
    let again = account_with_token.clone();
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(account_with_token);
            let state = first_state(&mut rx, Duration::from_secs(15)).await;
            assert!(matches!(state, Some(XmppState::Online { .. })), "{state:?}");
            s.shutdown().await;
        })
    });

    // The code a second time: refused, and the token it bought is revoked.
    let (second, second_back, reach) = replayed;
    let replay = w.host("carol").block_on(move || {
        Box::pin(async move { finish_browser_sign_in(&second, &second_back, &reach).await })
    });
    assert!(matches!(replay, Err(OAuthError::Refused(_))), "{replay:?}");
    w.host("carol").block_on(move || {
        Box::pin(async move {
            let (s, mut rx) = XmppSession::spawn(again);
            let state = first_state(&mut rx, Duration::from_secs(15)).await;
            assert_eq!(state, Some(XmppState::TokenRejected));
            s.shutdown().await;
        })
    });
}
