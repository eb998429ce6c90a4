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
        let prepared = PreparedEngine::load(engine_config).map_err(|e| e.to_string())?;
        let tun = create(&TunConfig {
            name: config.network.tun.clone(),
            mtu: config.network.mtu,
            ipv4: prepared.ipv4(),
            ipv4_prefix: prepared.subnet().prefix(),
            ipv6: Some(prepared.ipv6()),
        })
        .map_err(|e| format!("{e} (socialvpn up needs root or CAP_NET_ADMIN)"))?;
        println!(
            "socialvpn: device {}, address {} in {} on {}",
            prepared.uid(),
            prepared.ipv4(),
            prepared.subnet(),
            config.network.tun
        );
        let engine = prepared.start(tun).map_err(|e| e.to_string())?;
        let socket = config.control_socket();
        let listener = control::bind(&socket)
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        println!("socialvpn: logging in as {}", config.account.jid);
        let result = serve(&engine, listener).await;
        println!("socialvpn: closing links");
        let _ = std::fs::remove_file(&socket);
        engine.shutdown().await.map_err(|e| e.to_string())?;
        println!("socialvpn: stopped; {} removed", config.network.tun);
        result
    })
}

async fn serve(engine: &Engine, listener: tokio::net::UnixListener) -> Result<(), String> {
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut progress = Progress::default();
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        let reporting = started.elapsed() < PROGRESS_FOR;
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
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
                    "online" => println!("socialvpn: logged in"),
                    "auth_failed" => println!("socialvpn: login refused: check the password"),
                    "connecting" => {}
                    other => println!("socialvpn: XMPP {other}"),
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
            println!("socialvpn: roster loaded: {friends} friends, {online} online");
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
                        println!("socialvpn: link to {name}: {state}");
                    }
                    self.links.insert(name, state);
                }
            }
        }
    }
}
