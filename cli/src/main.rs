//! `socialvpn`, the Linux client: the daemon (`up`), its status and friends commands, and
//! the one-command demo world.

mod config;
mod control;
mod demo;
mod table;
mod up;

use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "socialvpn",
    version,
    about = "A peer-to-peer VPN with your XMPP friends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: create the interface, log in and link with friends (root or
    /// CAP_NET_ADMIN). Stops on Ctrl-C / SIGTERM.
    Up {
        #[arg(long)]
        config: PathBuf,
    },
    /// Friends and their devices: online, switch, address, link path, RTT, traffic.
    Status {
        /// Redraw every two seconds.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "/run/socialvpn/svpn0.sock")]
        socket: PathBuf,
    },
    /// The friends list, with requests.
    Friends {
        #[arg(long, default_value = "/run/socialvpn/svpn0.sock")]
        socket: PathBuf,
    },
    /// add | accept | decline | remove | enable | disable a friend.
    Friend {
        action: String,
        jid: String,
        #[arg(long, default_value = "/run/socialvpn/svpn0.sock")]
        socket: PathBuf,
    },
    /// The platform's network changed: restart link discovery.
    NetworkChanged {
        #[arg(long, default_value = "/run/socialvpn/svpn0.sock")]
        socket: PathBuf,
    },
    /// Build a small world in network namespaces and show SocialVPN at work (root).
    Demo,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Up { config } => up::run(&config),
        Command::Status { watch, socket } => status(&socket, watch),
        Command::Friends { socket } => control::request(&socket, &json!({ "cmd": "roster" }))
            .map(|roster| print!("{}", table::friends(&roster))),
        Command::Friend {
            action,
            jid,
            socket,
        } => control::request(
            &socket,
            &json!({ "cmd": "friend", "action": action, "jid": jid }),
        )
        .map(|_| println!("{action} {jid}: done")),
        Command::NetworkChanged { socket } => {
            control::request(&socket, &json!({ "cmd": "network_changed" })).map(|_| ())
        }
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socialvpn: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(socket: &std::path::Path, watch: bool) -> Result<(), String> {
    loop {
        let status = control::request(socket, &json!({ "cmd": "status" }))?;
        let roster = control::request(socket, &json!({ "cmd": "roster" }))?;
        if watch {
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", table::status(&status, &roster));
        if !watch {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}
