//! A data-plane node for the namespace tests: one engine on a real Linux TUN, peers
//! configured by the test over stdin, answers as JSON lines on stdout.
//!
//! Usage: socialvpn-dpnode STATE_DIR TUN_NAME SUBNET LISTEN_ADDR
//! Commands (one per line): `peer PUBKEY_HEX ENDPOINT`, `counters`, `links`. EOF stops it.

use socialvpn_core::tun::linux::{create, TunConfig};
use socialvpn_core::{EngineConfig, PeerConfig, PreparedEngine};
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, BufReader};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: socialvpn-dpnode STATE_DIR TUN_NAME SUBNET LISTEN_ADDR");
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

async fn run(args: &[String]) {
    let config = EngineConfig {
        state_dir: PathBuf::from(&args[0]),
        subnet: args[2]
            .parse()
            .unwrap_or_else(|e| fail(&format!("subnet: {e}"))),
        listen: args[3]
            .parse()
            .unwrap_or_else(|e| fail(&format!("listen: {e}"))),
    };
    let prepared = PreparedEngine::load(config).unwrap_or_else(|e| fail(&e.to_string()));
    let tun = create(&TunConfig {
        name: args[1].clone(),
        mtu: 1360,
        ipv4: prepared.ipv4(),
        ipv4_prefix: prepared.subnet().prefix(),
        ipv6: Some(prepared.ipv6()),
    })
    .unwrap_or_else(|e| fail(&e.to_string()));
    let hello = serde_json::json!({
        "uid": prepared.uid().to_string(),
        "public_key": hex::encode(prepared.public_key()),
        "ipv4": prepared.ipv4().to_string(),
        "ipv6": prepared.ipv6().to_string(),
    });
    let engine = prepared.start(tun).unwrap_or_else(|e| fail(&e.to_string()));
    println!("{hello}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["peer", key, endpoint] => {
                let mut public_key = [0u8; 32];
                match (hex::decode_to_slice(key, &mut public_key), endpoint.parse()) {
                    (Ok(()), Ok(endpoint)) => {
                        let peer = PeerConfig {
                            public_key,
                            endpoint: Some(endpoint),
                            keepalive_secs: None,
                        };
                        match engine.add_peer(peer).await {
                            Ok(uid) => serde_json::json!({ "uid": uid.to_string() }),
                            Err(e) => serde_json::json!({ "error": e.to_string() }),
                        }
                    }
                    _ => serde_json::json!({ "error": "bad key or endpoint" }),
                }
            }
            ["counters"] => match engine.counters().await {
                Ok(c) => serde_json::to_value(c).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
            ["links"] => match engine.links().await {
                Ok(l) => serde_json::to_value(l).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            },
            _ => serde_json::json!({ "error": format!("unknown command: {line}") }),
        };
        println!("{reply}");
    }
    if let Err(e) = engine.shutdown().await {
        fail(&e.to_string());
    }
}
