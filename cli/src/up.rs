//! `socialvpn up`: the daemon. Creates the TUN, logs in, links, serves the control socket,
//! and on SIGINT/SIGTERM closes the links (friends are told) and removes the interface.

use crate::config::Config;
use crate::control;
use serde_json::Value;
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::tun::linux::{create, TunConfig};
use socialvpn_core::{Engine, PreparedEngine};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Progress lines are printed while starting; after this the daemon stays quiet (and idle).
const PROGRESS_FOR: Duration = Duration::from_secs(60);

pub fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let password = config.password().map_err(|e| e.to_string())?;
    let identity = DeviceIdentity::load_or_create(&config.state_dir).map_err(|e| e.to_string())?;
    let engine_config = config
        .engine_config(password, &identity.uid().to_string())
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        // Signals and the control socket first: whatever happens after the interface exists
        // ends in a clean shutdown.
        let signals = Signals::new().map_err(|e| e.to_string())?;
        let socket = config.control_socket();
        let listener = control::bind(&socket)
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        let result = run_engine(&config, engine_config, listener, signals).await;
        let _ = std::fs::remove_file(&socket);
        result
    })
}

async fn run_engine(
    config: &Config,
    engine_config: socialvpn_core::EngineConfig,
    listener: tokio::net::UnixListener,
    mut signals: Signals,
) -> Result<(), String> {
    let prepared = PreparedEngine::load(engine_config).map_err(|e| e.to_string())?;
    let tun = create(&TunConfig {
        name: config.network.tun.clone(),
        mtu: config.network.mtu,
        ipv4: prepared.ipv4(),
        ipv4_prefix: prepared.subnet().prefix(),
        ipv6: Some(prepared.ipv6()),
    })
    .map_err(|e| format!("{e} (socialvpn up needs root or CAP_NET_ADMIN)"))?;
    say(&format!(
        "device {}, address {} in {} on {}",
        prepared.uid(),
        prepared.ipv4(),
        prepared.subnet(),
        config.network.tun
    ));
    let engine = prepared.start(tun).map_err(|e| e.to_string())?;
    say(&format!("logging in as {}", config.account.jid));
    let result = serve(&engine, listener, &mut signals).await;
    say("closing links");
    engine.shutdown().await.map_err(|e| e.to_string())?;
    say(&format!("stopped; {} removed", config.network.tun));
    result
}

/// A progress line; a closed stdout (a detached terminal) must not kill the daemon.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "socialvpn: {line}");
}

/// SIGINT, SIGTERM and SIGHUP all mean: close the links and stop.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    async fn any(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

async fn serve(
    engine: &Engine,
    listener: tokio::net::UnixListener,
    signals: &mut Signals,
) -> Result<(), String> {
    let mut progress = Progress::default();
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let reporting = started.elapsed() < PROGRESS_FOR;
        tokio::select! {
            () = signals.any() => return Ok(()),
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    control::serve(stream, engine).await;
                }
            }
            _ = tick.tick(), if reporting => progress.report(engine).await,
            () = engine.stopped() => {
                return Err("the engine stopped (see the log above)".into());
            }
        }
    }
}

/// What was last printed, to print only changes.
#[derive(Default)]
struct Progress {
    xmpp: String,
    roster_loaded: bool,
    links: BTreeMap<String, String>,
}

impl Progress {
    async fn report(&mut self, engine: &Engine) {
        if let Ok(status) = engine.status().await {
            let xmpp = status.xmpp.unwrap_or_default();
            if xmpp != self.xmpp {
                match xmpp.as_str() {
                    "online" => say("logged in"),
                    "auth_failed" => say("login refused: check the password"),
                    "connecting" => {}
                    other => say(&format!("XMPP {other}")),
                }
                self.xmpp = xmpp;
            }
        }
        let Ok(roster) = engine.roster().await else {
            return;
        };
        let roster = serde_json::to_value(roster).unwrap_or(Value::Null);
        let entries = roster.as_array().cloned().unwrap_or_default();
        if !self.roster_loaded && self.xmpp == "online" {
            let friends = entries
                .iter()
                .filter(|e| e["mutual"] == true && e["own"] != true)
                .count();
            let online = entries
                .iter()
                .filter(|e| {
                    e["own"] != true && e["devices"].as_array().is_some_and(|d| !d.is_empty())
                })
                .count();
            say(&format!(
                "roster loaded: {friends} friends, {online} online"
            ));
            self.roster_loaded = true;
        }
        for entry in &entries {
            for d in entry["devices"].as_array().into_iter().flatten() {
                let name = format!(
                    "{}/{}",
                    entry["jid"].as_str().unwrap_or(""),
                    d["resource"].as_str().unwrap_or("")
                );
                let (path, rtt) = crate::table::link(&d["link"]);
                let state = if path == "-" {
                    String::new()
                } else {
                    format!("{path} (rtt {rtt})")
                };
                if self.links.get(&name) != Some(&state) {
                    if path == "direct" || path == "relayed" {
                        say(&format!("link to {name}: {state}"));
                    }
                    self.links.insert(name, state);
                }
            }
        }
    }
}
