//! The roster-memory benchmark's world (issues 15 and 16; run by `bench/roster-memory`, not
//! part of the test suite): how much memory the real Linux engine — a `socialvpn up` daemon —
//! holds with a large roster and many friend devices online.
//!
//! Builds the social test world (prosody, coturn, NATs in namespaces), gives alice `N`
//! contacts with mutual subscriptions by writing prosody's data files directly (one account
//! made with `prosodyctl`, its hashed credentials copied to the others; rosters written as
//! prosody's internal storage writes them), logs in the online devices — one XMPP session each,
//! with core's own login, announcing a fresh device key in presence exactly as a device
//! does (`<device/>` from core's `DeviceInfo::to_wire`, resource `socialvpn-<8 hex>`) and
//! acknowledging the link signals they get (they never answer an offer) — and runs alice's
//! daemon (host `alice`, behind the cone NAT) once per case, reading its memory from `/proc`
//! `--settle` seconds after it logged in (the roster and every presence arrive within
//! seconds), then checking with one roster request that it sees every contact and device:
//!
//! - `baseline`: an account with no contacts;
//! - `roster`: alice with every contact, none of them online;
//! - `proactive`: alice with every contact and the devices online, default link settings;
//! - `on-demand`: the same with `links.policy = "on_demand"`.
//!
//! Usage: socialvpn-roster-bench SOCIALVPN_BIN OUT.json [--contacts N] [--devices N]
//! [--settle S] [--max-links N] [--cases a,b,…]
//!
//! Everything is removed on exit, on a panic and on SIGINT/SIGTERM/SIGHUP (the run stops at
//! the next check, within a second or a login's bound). Every wait is bounded.

use serde_json::{json, Value};
use socialvpn_core::api::{FriendView, LinkPhase, Request, Response, StatusView, XmppStatus};
use socialvpn_tests::attacker::{fresh_device, XmppAttacker};
use socialvpn_tests::cli_daemon::{self, CliDaemon};
use socialvpn_tests::proc_memory::{
    cpu_seconds, kib_fields, malloc_stats, proc_status, rss_at, smaps_breakdown, Sampler,
};
use socialvpn_tests::social_world::SocialWorld;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The measured device's host (behind the cone NAT) and the online devices' host (public).
const ALICE_HOST: &str = "alice";
const SIM_HOST: &str = "carol";
/// alice's overlay subnet (100.64.0.0/10 only).
const SUBNET: &str = "100.64.0.0/16";
/// Every contact's password (their accounts share one credential file's hashes).
const CONTACT_PASSWORD: &str = "pw-contact";
const TEMPLATE_USER: &str = "rmemtemplate";
/// The daemon's default `links.max_links` (README, configuration reference).
const DEFAULT_MAX_LINKS: usize = 64;
/// Parallel logins of the simulated devices.
const LOGIN_WORKERS: usize = 8;
/// Bounds: the daemon's login, its shutdown.
const ONLINE_WITHIN: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the daemon's VmRSS is sampled (reading /proc does not wake it).
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const CASES: [&str; 4] = ["baseline", "roster", "proactive", "on-demand"];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Unwinds (dropping daemon, sessions and world) once a signal asked to stop.
fn check_stop() {
    if STOP.load(Ordering::SeqCst) {
        panic!("interrupted by a signal: tearing the world down");
    }
}

/// Sleeps `d`, checking for a stop request every 100 ms.
fn pause(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_stop();
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
    check_stop();
}

fn log(t0: Instant, msg: &str) {
    eprintln!("[{:7.1}s] {msg}", t0.elapsed().as_secs_f64());
}

struct Args {
    socialvpn: PathBuf,
    out: PathBuf,
    contacts: usize,
    devices: usize,
    settle: u64,
    max_links: Option<usize>,
    cases: Vec<String>,
}

fn parse_args() -> Args {
    let usage = "usage: socialvpn-roster-bench SOCIALVPN_BIN OUT.json [--contacts N] \
                 [--devices N] [--settle S] [--max-links N] [--cases a,b,…]";
    let mut rest: Vec<String> = std::env::args().skip(1).collect();
    if rest.len() < 2 {
        panic!("{usage}");
    }
    let socialvpn = PathBuf::from(rest.remove(0));
    let out = PathBuf::from(rest.remove(0));
    let mut args = Args {
        socialvpn,
        out,
        contacts: 1000,
        devices: 200,
        settle: 30,
        max_links: None,
        cases: CASES.iter().map(|c| c.to_string()).collect(),
    };
    let mut it = rest.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value\n{usage}"));
        let number = || -> usize {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--contacts" => args.contacts = number(),
            "--devices" => args.devices = number(),
            "--settle" => args.settle = number() as u64,
            "--max-links" => args.max_links = Some(number()),
            "--cases" => {
                args.cases = value.split(',').map(|c| c.trim().to_string()).collect();
                for c in &args.cases {
                    assert!(CASES.contains(&c.as_str()), "unknown case {c} ({CASES:?})");
                }
            }
            _ => panic!("unknown option {flag}\n{usage}"),
        }
    }
    args
}

/// Who is online: the first `one` contacts with one device, the next `two` with two.
struct Plan {
    contacts: usize,
    one: usize,
    two: usize,
}

impl Plan {
    /// `devices` devices: an eighth of them as second devices (200 → 150 contacts with one
    /// device and 25 with two).
    fn new(contacts: usize, devices: usize) -> Plan {
        let two = devices / 8;
        let one = devices - 2 * two;
        assert!(
            one + two <= contacts,
            "{devices} devices need {} online contacts; there are {contacts}",
            one + two
        );
        Plan { contacts, one, two }
    }

    fn devices(&self) -> usize {
        self.one + 2 * self.two
    }

    fn online_accounts(&self) -> usize {
        self.one + self.two
    }

    /// (contact, device number) of every online device.
    fn sessions(&self) -> Vec<(String, usize)> {
        let mut all = Vec::new();
        for i in 1..=self.online_accounts() {
            let count = if i <= self.one { 1 } else { 2 };
            for d in 0..count {
                all.push((contact(i), d));
            }
        }
        all
    }
}

fn contact(i: usize) -> String {
    format!("c{i:04}")
}

/// prosody's internal storage for the world's domain (`data_path/<encoded host>/`).
fn prosody_host_dir(w: &SocialWorld) -> PathBuf {
    let encoded = w.domain().replace('.', "%2e");
    w.state_dir().join("prosody").join("data").join(encoded)
}

/// A roster as prosody 0.12's `rostermanager` stores it (internal storage, keyval `.dat`).
fn roster_file(domain: &str, items: &[(String, String)]) -> String {
    let mut text = String::from(
        "return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n",
    );
    for (user, name) in items {
        text.push_str(&format!(
            "\t[\"{user}@{domain}\"] = {{\n\t\t[\"subscription\"] = \"both\";\n\t\t\
             [\"groups\"] = {{}};\n\t\t[\"name\"] = \"{name}\";\n\t}};\n"
        ));
    }
    text.push_str("};\n");
    text
}

/// alice (password `pw-alice`) with `contacts` mutual contacts c0001…, each with alice in
/// its roster; `solo` (password `pw-solo`) with none.
fn write_accounts(w: &SocialWorld, contacts: usize) {
    w.register("alice", "pw-alice");
    w.register("solo", "pw-solo");
    w.register(TEMPLATE_USER, CONTACT_PASSWORD);
    let host = prosody_host_dir(w);
    let accounts = host.join("accounts");
    let rosters = host.join("roster");
    std::fs::create_dir_all(&rosters).unwrap();
    // Salted SCRAM hashes do not depend on the user name: one account's file serves all.
    let credentials =
        std::fs::read_to_string(accounts.join(format!("{TEMPLATE_USER}.dat"))).unwrap();
    let domain = w.domain();
    let mut items = Vec::with_capacity(contacts);
    for i in 1..=contacts {
        let user = contact(i);
        std::fs::write(accounts.join(format!("{user}.dat")), &credentials).unwrap();
        let alice = [("alice".to_string(), "Alice".to_string())];
        std::fs::write(
            rosters.join(format!("{user}.dat")),
            roster_file(domain, &alice),
        )
        .unwrap();
        items.push((user, format!("Contact {i:04}")));
    }
    std::fs::write(rosters.join("alice.dat"), roster_file(domain, &items)).unwrap();
    let out = std::process::Command::new("chown")
        .args(["-R", "prosody:prosody"])
        .arg(&host)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {out:?}");
}

/// Logs every planned device in from the sim host and announces it; returns the sessions.
fn devices_online(w: &SocialWorld, plan: &Plan, t0: Instant) -> Vec<XmppAttacker> {
    let sessions = plan.sessions();
    let next = AtomicUsize::new(0);
    let online = Mutex::new(Vec::with_capacity(sessions.len()));
    std::thread::scope(|scope| {
        for _ in 0..LOGIN_WORKERS {
            scope.spawn(|| loop {
                if STOP.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((user, _)) = sessions.get(i) else {
                    return;
                };
                let device = fresh_device();
                let resource = format!("socialvpn-{}", &device.uid.to_string()[..8]);
                let mut tries = 0;
                let session = loop {
                    tries += 1;
                    match XmppAttacker::try_login(
                        w,
                        w.host(SIM_HOST),
                        user,
                        CONTACT_PASSWORD,
                        &resource,
                    ) {
                        Ok(s) => break s,
                        Err(e) if tries < 3 => eprintln!("{user}/{resource}: {e}; again"),
                        Err(e) => panic!("{user}/{resource} cannot log in: {e}"),
                    }
                };
                // Exactly what a device sends: available presence with its announcement.
                session.announce(Some(device.to_wire()));
                let mut online = online.lock().unwrap();
                online.push(session);
                if online.len() % 50 == 0 {
                    log(t0, &format!("{} devices online", online.len()));
                }
            });
        }
    });
    check_stop();
    online.into_inner().unwrap()
}

/// Closes the sessions, several at a time (each close waits for its stream to end).
fn devices_offline(sessions: Vec<XmppAttacker>) {
    let queue = Mutex::new(sessions);
    std::thread::scope(|scope| {
        for _ in 0..LOGIN_WORKERS {
            scope.spawn(|| loop {
                let Some(s) = queue.lock().unwrap().pop() else {
                    return;
                };
                drop(s);
            });
        }
    });
}

/// One request over the daemon's control socket (one JSON line each way).
fn request(socket: &Path, req: &Request) -> Option<Response> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut line = req.encode();
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .ok()?;
    Response::decode(&answer).ok()
}

fn status(socket: &Path) -> Option<StatusView> {
    match request(socket, &Request::Status)? {
        Response::Status { status } => Some(*status),
        _ => None,
    }
}

fn roster(socket: &Path) -> Option<Vec<FriendView>> {
    match request(socket, &Request::Roster)? {
        Response::Roster { friends } => Some(friends),
        _ => None,
    }
}

/// (mutual friends, SocialVPN devices online, links by phase) in a roster view.
fn roster_counts(friends: &[FriendView]) -> (usize, usize, BTreeMap<String, usize>) {
    let mutual = friends.iter().filter(|f| f.mutual && !f.own).count();
    let mut devices = 0;
    let mut phases = BTreeMap::new();
    for d in friends
        .iter()
        .flat_map(|f| &f.devices)
        .filter(|d| d.socialvpn)
    {
        devices += 1;
        let phase = match &d.link {
            None => "none",
            Some(LinkPhase::Connecting) => "connecting",
            Some(LinkPhase::Connected { .. }) => "connected",
            Some(LinkPhase::Retrying) => "retrying",
            Some(LinkPhase::ClosedByPeer) => "closed_by_peer",
            Some(LinkPhase::Unknown) => "unknown",
        };
        *phases.entry(phase.to_string()).or_insert(0) += 1;
    }
    (mutual, devices, phases)
}

/// Stops the daemon and panics with why and the end of its log.
fn fail(daemon: &mut CliDaemon, case: &str, log: &Path, why: String) -> ! {
    stop_daemon(daemon);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!("case {case}: {why}\n{}", tail.join("\n"));
}

/// SIGTERM (the daemon tells its friends and removes its interface), SIGKILL after a grace.
fn stop_daemon(d: &mut CliDaemon) {
    let pid = d.process.pid();
    if d.process.running_pid().is_some() {
        // SAFETY: signalling our own unreaped child by its PID.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let end = Instant::now() + STOP_GRACE;
        while d.process.running_pid().is_some() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    d.process.kill();
}

struct Case {
    name: &'static str,
    user: &'static str,
    on_demand: bool,
    contacts: usize,
    devices: usize,
}

impl Case {
    fn new(
        name: &'static str,
        user: &'static str,
        on_demand: bool,
        contacts: usize,
        devices: usize,
    ) -> Case {
        Case {
            name,
            user,
            on_demand,
            contacts,
            devices,
        }
    }
}

/// Runs alice's daemon for one case (fresh state: a new device key and address book) and
/// measures it.
fn run_case(w: &SocialWorld, args: &Args, case: &Case, t0: Instant) -> Value {
    log(
        t0,
        &format!(
            "case {}: starting `socialvpn up` as {}",
            case.name, case.user
        ),
    );
    let (config, socket, _) = cli_daemon::config(w, ALICE_HOST, case.user, SUBNET);
    let dir = config.parent().unwrap().to_path_buf();
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let mut links = String::new();
    if case.on_demand {
        links.push_str("policy = \"on_demand\"\n");
    }
    if let Some(n) = args.max_links {
        links.push_str(&format!("max_links = {n}\n"));
    }
    if !links.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        write!(f, "[links]\n{links}").unwrap();
    }
    let case_log = dir.join(format!("daemon-{}.log", case.name));
    let started = Instant::now();
    let mut daemon = cli_daemon::start(
        &args.socialvpn,
        w,
        ALICE_HOST,
        (config, socket.clone(), case_log.clone()),
        None,
    );
    let pid = daemon.process.pid();
    let sampler = Sampler::start(pid, started, SAMPLE_EVERY);

    // Logged in.
    let online_at = loop {
        check_stop();
        let state = status(&socket).and_then(|s| s.xmpp);
        if matches!(state, Some(XmppStatus::Online)) {
            break started.elapsed();
        }
        if started.elapsed() > ONLINE_WITHIN || daemon.process.running_pid().is_none() {
            fail(
                &mut daemon,
                case.name,
                &case_log,
                format!("not online (state {state:?})"),
            );
        }
        pause(Duration::from_millis(250));
    };
    // The roster and every presence arrive within seconds of the login; they are checked
    // after the figures, not polled for before: the answer to a roster request (a JSON tree
    // of every contact) would leave its own garbage in the heap.
    log(
        t0,
        &format!(
            "case {}: online after {:.2} s; settling {} s",
            case.name,
            online_at.as_secs_f64(),
            args.settle
        ),
    );
    pause(Duration::from_secs(args.settle));
    if daemon.process.running_pid().is_none() {
        fail(
            &mut daemon,
            case.name,
            &case_log,
            "the daemon exited".into(),
        );
    }
    // The figures, before any further request touches the daemon.
    let (fields, threads) = proc_status(pid);
    let rollup = kib_fields(
        &std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default(),
    );
    let smaps = smaps_breakdown(pid);
    let cpu = cpu_seconds(pid);
    let measured_at = started.elapsed();
    // One roster request, as `socialvpn friends` sends: everything there, and its cost.
    let asked = Instant::now();
    let view = roster(&socket);
    let answer_ms = asked.elapsed().as_secs_f64() * 1000.0;
    let (after_request, _) = proc_status(pid);
    let counts = view.as_deref().map(roster_counts);
    let (friends_seen, devices_seen, phases) = match counts {
        Some((f, d, p)) if f == case.contacts && d == case.devices => (f, d, p),
        other => fail(
            &mut daemon,
            case.name,
            &case_log,
            format!("roster incomplete after {} s: {other:?}", args.settle),
        ),
    };
    let heap = malloc_stats(pid, &case_log);
    let status_after = status(&socket);
    stop_daemon(&mut daemon);
    let samples = sampler.finish();
    let field = |k: &str| fields.get(k).copied();
    let result = json!({
        "case": case.name,
        "account": format!("{}@{}", case.user, w.domain()),
        "policy": if case.on_demand { "on_demand" } else { "proactive" },
        "max_links": args.max_links.unwrap_or(DEFAULT_MAX_LINKS),
        "contacts": case.contacts,
        "devices_online": case.devices,
        "vm_rss_kib": field("VmRSS"),
        "vm_hwm_kib": field("VmHWM"),
        "rss_anon_kib": field("RssAnon"),
        "rss_file_kib": field("RssFile"),
        "vm_data_kib": field("VmData"),
        "vm_size_kib": field("VmSize"),
        "threads": threads,
        "smaps_rollup_kib": rollup,
        "smaps": smaps,
        "cpu_seconds": cpu,
        "malloc_stats": heap,
        "online_after_s": online_at.as_secs_f64(),
        "measured_after_s": measured_at.as_secs_f64(),
        "rss_at_online_kib": rss_at(&samples, online_at.as_secs_f64()),
        "after_roster_request": {
            "answer_ms": answer_ms,
            "vm_rss_kib": after_request.get("VmRSS"),
            "vm_hwm_kib": after_request.get("VmHWM"),
        },
        "rss_max_sampled_kib": samples.iter().map(|s| s.1).max(),
        "rss_samples": samples.iter().map(|(t, k)| json!([(t * 10.0).round() / 10.0, k])).collect::<Vec<_>>(),
        "after": {
            "friends": friends_seen,
            "devices": devices_seen,
            "link_phases": phases,
            "links": status_after.as_ref().map(|s| json!(s.links)),
            "social": status_after.as_ref().map(|s| json!(s.social)),
        },
    });
    log(
        t0,
        &format!(
            "case {}: VmRSS {} KiB, VmHWM {} KiB, {threads} threads; links {:?}",
            case.name,
            field("VmRSS").unwrap_or(0),
            field("VmHWM").unwrap_or(0),
            result["after"]["link_phases"]
        ),
    );
    result
}

fn main() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe). A handler rather than
    // SIG_IGN: the servers and daemons started later do not inherit it.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let args = parse_args();
    let t0 = Instant::now();
    assert!(
        args.socialvpn.exists(),
        "{} missing",
        args.socialvpn.display()
    );
    let plan = Plan::new(args.contacts, args.devices);
    log(t0, "building the social world (prosody, coturn, NATs)");
    let w = SocialWorld::new("rmem");
    check_stop();
    log(
        t0,
        &format!(
            "writing {} contacts with mutual subscriptions",
            plan.contacts
        ),
    );
    let accounts_started = Instant::now();
    write_accounts(&w, plan.contacts);
    let accounts_secs = accounts_started.elapsed().as_secs_f64();
    check_stop();
    // The devices log in before the first case that has them online, and stay.
    let cases = [
        Case::new("baseline", "solo", false, 0, 0),
        Case::new("roster", "alice", false, plan.contacts, 0),
        Case::new("proactive", "alice", false, plan.contacts, plan.devices()),
        Case::new("on-demand", "alice", true, plan.contacts, plan.devices()),
    ];
    let mut results = Vec::new();
    let mut sessions = None;
    let mut login_secs = None;
    for case in cases
        .iter()
        .filter(|c| args.cases.iter().any(|x| x == c.name))
    {
        if case.devices > 0 && sessions.is_none() {
            let (devices, accounts) = (plan.devices(), plan.online_accounts());
            log(
                t0,
                &format!("logging in {devices} devices of {accounts} contacts"),
            );
            let logins = Instant::now();
            let online = devices_online(&w, &plan, t0);
            login_secs = Some(logins.elapsed().as_secs_f64());
            assert_eq!(online.len(), devices, "not every device logged in");
            sessions = Some(online);
        }
        results.push(run_case(&w, &args, case, t0));
    }
    if let Some(sessions) = sessions {
        let lost = sessions.iter().filter(|s| s.is_lost()).count();
        assert_eq!(lost, 0, "{lost} simulated devices lost their sessions");
        log(t0, "closing the devices' sessions");
        devices_offline(sessions);
    }
    let report = json!({
        "settings": {
            "contacts": plan.contacts,
            "devices": plan.devices(),
            "online_contacts": plan.online_accounts(),
            "contacts_with_two_devices": plan.two,
            "settle_secs": args.settle,
            "max_links": args.max_links.unwrap_or(DEFAULT_MAX_LINKS),
            "xmpp_server": w.xmpp_kind().name(),
            "engine": "socialvpn up (the Linux daemon, current-thread tokio runtime)",
            "socialvpn_bin": args.socialvpn.display().to_string(),
        },
        "setup": {
            "accounts_and_rosters_secs": accounts_secs,
            "device_logins_secs": login_secs,
        },
        "cases": results,
        "total_secs": t0.elapsed().as_secs_f64(),
    });
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    log(t0, &format!("wrote {}", args.out.display()));
}
