//! A SocialVPN node for the namespace tests: one engine on a real Linux TUN, driven over
//! stdin with the control protocol (`socialvpn_core::api`: one request per line, one reply
//! line on stdout). Without a social config, links are configured by hand (`add_peer`);
//! with one, the node logs in to XMPP and links with friends by itself.
//!
//! Usage: socialvpn-dpnode STATE_DIR TUN_NAME SUBNET LISTEN_ADDR [SOCIAL_JSON_FILE]
//! The first line out is `{"uid","public_key","ipv4","ipv6"}`. EOF stops it (closing links
//! cleanly).
//!
//! `SOCIALVPN_TUN_MODE` picks how the engine gets its tun, for the benchmark's modes:
//! `offload` (default: `IFF_VNET_HDR` with TSO, the Linux client's), `raw` (bare IP packets,
//! no offloads: what Android's `VpnService` hands over) or `utun` (4-byte address-family
//! header over a datagram socket, as iOS's utun: see `socialvpn_tests::utun_relay`).

use serde_json::json;
use socialvpn_core::config::{AccountSettings, Credentials, IceServerSettings, Settings};
use socialvpn_core::engine::LinkPolicy;
use socialvpn_core::tun::linux::{create, TunConfig};
use socialvpn_core::PreparedEngine;
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The social part of the node's configuration (JSON file).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SocialFile {
    jid: String,
    password: String,
    resource: String,
    /// `host:port`; none: found by DNS SRV records through `dns_servers`.
    server: Option<String>,
    #[serde(default)]
    dns_servers: Vec<String>,
    ca_file: PathBuf,
    stun: Option<String>,
    turn: Option<String>,
    turn_user: Option<String>,
    turn_password: Option<String>,
    #[serde(default)]
    policy: LinkPolicy,
    /// Restart link discovery when this host's addresses change (rtnetlink).
    #[serde(default = "yes")]
    watch_network: bool,
}

fn yes() -> bool {
    true
}

/// Log lines go to stderr prefixed with the node's state directory name, so that the logs
/// of several nodes in one test can be told apart.
struct Prefixed(&'static str);

impl std::io::Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        err.write_all(self.0.as_bytes())?;
        err.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args
        .first()
        .and_then(|dir| std::path::Path::new(dir).file_name())
        .map(|n| format!("[{}] ", n.to_string_lossy()))
        .unwrap_or_default();
    let name: &'static str = Box::leak(name.into_boxed_str());
    use tracing_subscriber::prelude::*;
    // Global filters, as the CLI's (cli/src/logging.rs): "enabled?" then answers what is
    // written, and libraries logging through `log` do no work for dropped records.
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::from_default_env())
        .with(tracing_subscriber::filter::filter_fn(|m| {
            !socialvpn_core::logging::is_never_logged(m.target())
        }))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || Prefixed(name)),
        )
        .init();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: socialvpn-dpnode STATE_DIR TUN_NAME SUBNET LISTEN_ADDR [SOCIAL_JSON]");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    runtime.block_on(run(&args));
}

fn fail(message: &str) -> ! {
    eprintln!("socialvpn-dpnode: {message}");
    std::process::exit(1);
}

/// The node's settings from its arguments and JSON file, checked by the core like every
/// front end's.
fn settings(args: &[String]) -> Settings {
    let file: Option<SocialFile> = args.get(4).map(|path| {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
        serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{path}: {e}")))
    });
    let mut ice_servers = Vec::new();
    let mut account = None;
    let mut link_policy = LinkPolicy::default();
    // Like the daemon, the node notices moves between networks by itself (unless the test
    // turns that off to exercise the path watch alone).
    let mut watch_network = false;
    if let Some(f) = file {
        if let Some(stun) = f.stun {
            ice_servers.push(IceServerSettings {
                url: format!("stun:{stun}"),
                username: None,
                password: None,
            });
        }
        if let Some(turn) = f.turn {
            ice_servers.push(IceServerSettings {
                url: format!("turn:{turn}"),
                username: f.turn_user,
                password: f.turn_password,
            });
        }
        account = Some(AccountSettings {
            jid: f.jid,
            credentials: Credentials::Password(f.password),
            resource: Some(f.resource),
            server: f.server,
            dns_servers: f.dns_servers,
            ca_file: Some(f.ca_file),
        });
        link_policy = f.policy;
        watch_network = f.watch_network;
    }
    Settings {
        state_dir: PathBuf::from(&args[0]),
        subnet: args[2].clone(),
        listen: args[3]
            .parse()
            .unwrap_or_else(|e| fail(&format!("listen: {e}"))),
        account,
        ice_servers,
        link_policy,
        watch_network,
        protect: None,
    }
}

async fn run(args: &[String]) {
    let settings = settings(args);
    // The device id names the default resource; the node's resource is always given.
    let config = settings.check("").unwrap_or_else(|e| fail(&e.to_string()));
    let prepared = PreparedEngine::load(config).unwrap_or_else(|e| fail(&e.to_string()));
    let mode = std::env::var("SOCIALVPN_TUN_MODE").unwrap_or_else(|_| "offload".into());
    if !["offload", "raw", "utun"].contains(&mode.as_str()) {
        fail(&format!("SOCIALVPN_TUN_MODE={mode}: offload, raw or utun"));
    }
    let tun = create(&TunConfig {
        name: args[1].clone(),
        mtu: 1360,
        ipv4: prepared.ipv4(),
        ipv4_prefix: prepared.subnet().prefix(),
        ipv6: Some(prepared.ipv6()),
        offload: mode == "offload",
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    if !tun.ipv6 {
        eprintln!("socialvpn-dpnode: IPv6 is off on this host: IPv4 only");
    }
    let tun = match mode.as_str() {
        "utun" => socialvpn_tests::utun_relay::start(tun.device)
            .unwrap_or_else(|e| fail(&format!("utun relay: {e}"))),
        _ => tun.device,
    };
    let hello = json!({
        "uid": prepared.uid().to_string(),
        "public_key": hex::encode(prepared.public_key()),
        "ipv4": prepared.ipv4().to_string(),
        "ipv6": prepared.ipv6().to_string(),
    });
    let engine = prepared
        .start(Some(tun))
        .unwrap_or_else(|e| fail(&e.to_string()));
    println!("{hello}");

    // Every line is a request of the control protocol; every answer a reply line.
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = engine.handle_bytes(line.as_bytes()).await;
        println!("{}", String::from_utf8_lossy(&reply));
    }
    if let Err(e) = engine.shutdown().await {
        fail(&e.to_string());
    }
}
