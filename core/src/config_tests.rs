use super::*;

fn settings() -> Settings {
    Settings {
        state_dir: "/tmp/x".into(),
        subnet: "100.64.0.0/16".into(),
        listen: "0.0.0.0:0".parse().unwrap(),
        account: Some(AccountSettings {
            jid: "alice@example.org".into(),
            credentials: Credentials::Password("pw".into()),
            resource: None,
            server: None,
            dns_servers: vec![],
            ca_file: None,
        }),
        ice_servers: vec![
            IceServerSettings {
                url: "stun:198.18.0.1".into(),
                username: None,
                password: None,
            },
            IceServerSettings {
                url: "turn:198.18.0.1:3479".into(),
                username: Some("u".into()),
                password: Some("p".into()),
            },
        ],
        link_policy: LinkPolicy::Proactive { max_links: 8 },
        watch_network: false,
        protect: None,
    }
}

fn account(s: &mut Settings) -> &mut AccountSettings {
    s.account.as_mut().unwrap()
}

#[test]
fn full_settings_translate() {
    let engine = settings().check("0123456789").unwrap();
    let social = engine.social.unwrap();
    assert_eq!(social.account.resource, "socialvpn-01234567");
    assert_eq!(social.account.server, None);
    assert_eq!(
        social.servers.stun,
        Some("198.18.0.1:3478".parse().unwrap())
    );
    assert_eq!(
        social.servers.turn.unwrap().addr,
        "198.18.0.1:3479".parse().unwrap()
    );
    assert_eq!(social.policy, LinkPolicy::Proactive { max_links: 8 });
    let mut s = settings();
    account(&mut s).server = Some("xmpp.example.org:5223".into());
    account(&mut s).resource = Some("laptop".into());
    let social = s.check("00").unwrap().social.unwrap();
    assert_eq!(
        social.account.server,
        Some(("xmpp.example.org".to_string(), 5223))
    );
    assert_eq!(social.account.resource, "laptop");
    let mut s = settings();
    s.account = None;
    assert!(s.check("00").unwrap().social.is_none());
}

#[test]
fn bad_fields_are_named() {
    let field = |s: Settings| match s.check("00") {
        Err(ConfigError::Invalid { field, reason }) => format!("{field}: {reason}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    };
    let mut s = settings();
    s.subnet = "192.0.2.0/40".into();
    assert!(field(s).starts_with("subnet:"));
    let mut s = settings();
    s.ice_servers[0].url = "turns:198.18.0.1".into();
    assert!(field(s).contains("turns"));
    let mut s = settings();
    s.ice_servers[1].password = None;
    assert!(field(s).contains("username and a password"));
    let mut s = settings();
    s.ice_servers.push(s.ice_servers[0].clone());
    assert!(field(s).contains("more than one STUN"));
    let mut s = settings();
    account(&mut s).server = Some("xmpp.example.org".into());
    assert!(field(s).starts_with("server:"));
    let mut s = settings();
    account(&mut s).resource = Some("a/b\u{0}".into());
    assert!(field(s).starts_with("resource:"));
    let mut s = settings();
    account(&mut s).resource = Some(String::new());
    assert!(field(s).starts_with("resource:"));
    let mut s = settings();
    account(&mut s).credentials = Credentials::Password(String::new());
    assert!(field(s).starts_with("password:"));
    for bad in ["", "two words", "tab\there"] {
        let mut s = settings();
        account(&mut s).credentials = Credentials::Token(bad.into());
        assert!(field(s).starts_with("token:"), "{bad:?}");
    }
    let mut s = settings();
    account(&mut s).credentials = Credentials::Token("eyJ0-._~+/=".into());
    assert!(s.check("00112233").is_ok());
    let mut s = settings();
    s.state_dir = PathBuf::new();
    assert!(field(s).starts_with("state_dir:"));
    for jid in ["example.org", "not a jid@@", ""] {
        let mut s = settings();
        account(&mut s).jid = jid.into();
        assert_eq!(s.check("00").unwrap_err(), ConfigError::Jid(jid.into()));
    }
}

#[test]
fn host_port_forms() {
    let hp = |h: &str, p: u16| Some((h.to_string(), p));
    assert_eq!(parse_host_port("h:5", None), hp("h", 5));
    assert_eq!(parse_host_port("h", Some(7)), hp("h", 7));
    assert_eq!(parse_host_port("h", None), None);
    assert_eq!(parse_host_port("[::1]:9", None), hp("::1", 9));
    assert_eq!(parse_host_port("[::1]", Some(9)), hp("::1", 9));
    assert_eq!(parse_host_port("[::1]", None), None);
    assert_eq!(parse_host_port("2001:db8::1", Some(9)), None);
    assert_eq!(parse_host_port("[::1]x", Some(9)), None);
    assert_eq!(parse_host_port("[::1", Some(9)), None);
    assert_eq!(parse_host_port(":9", None), None);
    assert_eq!(parse_host_port("h:99999", None), None);
    assert_eq!(parse_host_port("", Some(1)), None);
}
