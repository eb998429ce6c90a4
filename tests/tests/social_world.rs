//! The social test world (DESIGN.md §8) checked with real tools: prosody over STARTTLS with the
//! world's own CA, coturn's STUN through both NATs, a TURN allocation relaying to a peer,
//! prosody going away and coming back, a host roaming on its LAN, and a clean teardown; the
//! same world with ejabberd.
//! Run as root.

use socialvpn_tests::netns::{ChildGuard, Namespace};
use socialvpn_tests::social_world::{
    stun_binding, stun_mapped, wait_port, SocialWorld, XmppServerKind, CONE_WAN, DOMAIN, HOST_IF,
    SERVER_ALT_IP, STUN_ADDR, SYM_WAN, TURN_PASSWORD, TURN_USER, XMPP_ADDR,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// `openssl s_client -starttls xmpp` from `ns`, verifying prosody's certificate against the
/// world's CA only, with `input` written on the TLS stream; bounded by timeout(1) at 10 s.
fn s_client(ns: &Namespace, ca: &Path, input: &str) -> Output {
    use std::io::Write;
    let mut child = ns
        .command("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(XMPP_ADDR.to_string())
        .args(["-starttls", "xmpp", "-xmpphost", DOMAIN])
        .args(["-servername", DOMAIN, "-verify_hostname", DOMAIN])
        .args(["-no-CApath", "-no-CAstore", "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-ign_eof", "-nocommands"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    // If s_client already gave up, its output says why.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// Logs in over STARTTLS with SASL PLAIN; returns s_client's output.
fn xmpp_login(ns: &Namespace, ca: &Path, user: &str, password: &str) -> Output {
    let auth = base64(format!("\0{user}\0{password}").as_bytes());
    let input = format!(
        "<stream:stream to='{DOMAIN}' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n\
         <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>\n\
         </stream:stream>\n"
    );
    s_client(ns, ca, &input)
}

#[test]
fn social_world_with_real_servers() {
    let started = Instant::now();
    let mut w = SocialWorld::new("sw");
    eprintln!("world up in {:?}", started.elapsed());
    let names = w.namespace_names();
    let state = w.state_dir().to_path_buf();
    let ca = w.ca_cert_path();
    let carol = w.host("carol");

    // XMPP: registration, STARTTLS verified against the world's CA, SCRAM offered, login.
    w.register("alice", "alicepw");
    w.register("bob", "bobpw");
    let out = xmpp_login(carol, &ca, "alice", "alicepw");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("Verify return code: 0 (ok)"), "{t}");
    assert!(t.contains("<mechanism>SCRAM-SHA-1</mechanism>"), "{t}");
    assert!(t.contains("<success"), "{t}");
    let out = xmpp_login(carol, &ca, "alice", "wrong");
    assert!(text(&out).contains("<failure"), "{}", text(&out));

    // STUN through each NAT, with coturn's own client (bounded: behind a NAT its RFC 5780
    // change-request probes never come back, so it runs until `timeout` stops it).
    let probes: Vec<_> = ["carol", "alice", "bob"]
        .iter()
        .map(|h| {
            w.host(h)
                .command("timeout")
                .args(["5", "turnutils_stunclient", &STUN_ADDR.ip().to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("turnutils_stunclient")
        })
        .collect();
    let reflexive: Vec<String> = probes
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let t = text(&out);
            t.lines()
                .find_map(|l| l.split("UDP reflexive addr: ").nth(1))
                .unwrap_or_else(|| panic!("no reflexive address\n{t}"))
                .trim()
                .to_string()
        })
        .collect();
    assert!(reflexive[0].starts_with("198.18.0.20:"), "{reflexive:?}");
    assert!(
        reflexive[1].starts_with(&format!("{CONE_WAN}:")),
        "{reflexive:?}"
    );
    assert!(
        reflexive[2].starts_with(&format!("{SYM_WAN}:")),
        "{reflexive:?}"
    );

    // The mapping types: one socket, two server addresses.
    let pair = |h: &str| {
        w.host(h)
            .run(|| {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                let t = Duration::from_secs(2);
                let a = stun_mapped(&sock, STUN_ADDR.into(), t).expect("no STUN answer");
                let alt = SocketAddr::from((SERVER_ALT_IP, STUN_ADDR.port()));
                let b = stun_mapped(&sock, alt, t).expect("no STUN answer (alt)");
                (a, b)
            })
            .join()
            .unwrap()
    };
    let (a, b) = pair("alice");
    assert_eq!(a, b, "cone NAT must map endpoint-independently");
    assert_eq!(a.ip(), IpAddr::V4(CONE_WAN));
    let (a, b) = pair("bob");
    assert_ne!(a, b, "symmetric NAT must map per destination");
    assert_eq!(a.ip(), IpAddr::V4(SYM_WAN));
    assert_eq!(b.ip(), IpAddr::V4(SYM_WAN));
    let (a, b) = pair("carol");
    assert_eq!((a, a.ip()), (b, "198.18.0.20".parse::<IpAddr>().unwrap()));

    // TURN: bob (symmetric NAT) allocates a relay and reaches an echo peer on carol through it.
    let carol_ip = w.host_addr("carol").to_string();
    let _peer = ChildGuard(
        w.host("carol")
            .command("turnutils_peer")
            .args(["-L", &carol_ip, "-p", "3480"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(200));
    let out = w.host("bob").output(
        "timeout",
        &[
            "15",
            "turnutils_uclient",
            "-u",
            TURN_USER,
            "-w",
            TURN_PASSWORD,
            "-e",
            &carol_ip,
            "-r",
            "3480",
            "-n",
            "20",
            "-m",
            "1",
            "-l",
            "100",
            "-c",
            &STUN_ADDR.ip().to_string(),
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("tot_send_msgs=20, tot_recv_msgs=20"), "{t}");
    assert!(t.contains("Total lost packets 0 "), "{t}");

    // The internet swallows what it cannot deliver instead of failing the send (coturn
    // gives up on an allocation after one failed send).
    let sent = w
        .inet()
        .run(|| {
            let sock = UdpSocket::bind("198.18.0.1:0").unwrap();
            sock.send_to(b"nowhere", "198.19.1.2:9").map(|_| ())
        })
        .join()
        .unwrap();
    assert!(
        sent.is_ok(),
        "send to a private address from inet: {sent:?}"
    );

    // prosody goes away and comes back with the same data; accounts made meanwhile count too.
    let old_pid = w.xmpp_pid().expect("prosody runs");
    w.stop_xmpp();
    assert_eq!(w.xmpp_pid(), None);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    assert!(!wait_port(
        w.host("carol"),
        XMPP_ADDR.into(),
        Duration::from_millis(300)
    ));
    w.register("carol", "carolpw");
    w.start_xmpp();
    assert_ne!(w.xmpp_pid(), None);
    for (user, pw) in [("alice", "alicepw"), ("carol", "carolpw")] {
        let t = text(&xmpp_login(w.host("dave"), &ca, user, pw));
        assert!(t.contains("<success"), "{user} after restart: {t}");
    }

    // alice roams on her LAN: new address, same routes, still behind the cone NAT.
    let new_addr: Ipv4Addr = "198.19.1.9".parse().unwrap();
    w.move_host("alice", new_addr);
    assert_eq!(w.host_addr("alice"), new_addr);
    let alice = w.host("alice");
    let addrs = text(&alice.output("ip", &["-4", "-o", "addr", "show", "dev", HOST_IF]));
    assert!(
        addrs.contains("198.19.1.9/24") && !addrs.contains("198.19.1.2/"),
        "{addrs}"
    );
    let ping = alice.output(
        "ping",
        &["-c", "1", "-W", "2", "-I", "198.19.1.9", "198.19.1.1"],
    );
    assert!(ping.status.success(), "{}", text(&ping));
    let mapped = stun_binding(alice, STUN_ADDR.into(), Duration::from_secs(2));
    assert_eq!(mapped.map(|m| m.ip()), Some(IpAddr::V4(CONE_WAN)));

    let pids = vec![w.xmpp_pid().unwrap(), w.coturn_pid().unwrap()];
    let etc: Vec<_> = names.iter().map(|n| format!("/etc/netns/{n}")).collect();
    assert!(etc.iter().all(|d| Path::new(d).exists()));
    drop(_peer);
    drop(w);
    assert_torn_down(&names, &state, &pids);
    eprintln!("whole test {:?}", started.elapsed());
}

/// No namespace, /etc/netns directory, state directory or process of the world is left.
fn assert_torn_down(names: &[String], state: &Path, pids: &[u32]) {
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert_eq!(names.len(), 8);
    for n in names {
        assert!(
            !list.lines().any(|l| l.split_whitespace().next() == Some(n)),
            "{n} left behind: {list}"
        );
        assert!(
            !Path::new(&format!("/etc/netns/{n}")).exists(),
            "/etc/netns/{n}"
        );
    }
    assert!(!state.exists(), "{} left behind", state.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} alive"
        );
    }
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let seen = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = SocialWorld::new("pn");
        let pids = vec![w.xmpp_pid().unwrap(), w.coturn_pid().unwrap()];
        *seen.lock().unwrap() = Some((w.namespace_names(), w.state_dir().to_path_buf(), pids));
        panic!("planned panic with the world up");
    }));
    assert!(result.is_err());
    let (names, state, pids) = seen.lock().unwrap().take().expect("world was built");
    assert_torn_down(&names, &state, &pids);
}

#[test]
fn ejabberd_world_logs_in_restarts_and_counts_connection_attempts() {
    let mut w = SocialWorld::with_server("ew", XmppServerKind::Ejabberd);
    let ca = w.ca_cert_path();
    w.register_all(&[("alice", "alicepw"), ("bob", "bobpw")]);
    let out = xmpp_login(w.host("carol"), &ca, "alice", "alicepw");
    let t = text(&out);
    assert!(t.contains("Verify return code: 0 (ok)"), "{t}");
    assert!(t.contains("<mechanism>SCRAM-SHA-1</mechanism>"), "{t}");
    assert!(t.contains("<success"), "{t}");
    let out = xmpp_login(w.host("carol"), &ca, "bob", "wrong");
    assert!(text(&out).contains("<failure"), "{}", text(&out));
    // Two logins from carol, one from behind the cone NAT; none from elsewhere.
    let carol = w.host_addr("carol");
    assert_eq!(w.xmpp_connection_attempts(carol), 2);
    assert!(wait_port(
        w.host("alice"),
        XMPP_ADDR.into(),
        Duration::from_secs(1)
    ));
    assert_eq!(w.xmpp_connection_attempts(CONE_WAN), 1);
    assert_eq!(w.xmpp_connection_attempts(SYM_WAN), 0);

    // A clean stop and a crash; attempts meanwhile are still counted; data survives both.
    for crash in [false, true] {
        let pid = w.xmpp_pid().expect("ejabberd runs");
        if crash {
            w.kill_xmpp();
        } else {
            w.stop_xmpp();
        }
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!wait_port(
            w.host("carol"),
            XMPP_ADDR.into(),
            Duration::from_millis(300)
        ));
        w.start_xmpp();
        let t = text(&xmpp_login(w.host("carol"), &ca, "bob", "bobpw"));
        assert!(t.contains("<success"), "bob after restart: {t}");
    }
    assert_eq!(w.xmpp_connection_attempts(carol), 2 + 2 * 2);
}
