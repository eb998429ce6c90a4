//! `socialvpn`, the Linux client: the daemon (`up`), its status and friends commands, and
//! the one-command demo world.

mod config;
mod control;
#[cfg(feature = "demo")]
mod demo;
mod logging;
mod login;
mod table;
mod up;

use clap::{Parser, Subcommand};
use socialvpn_core::api::{FriendAction, LogLevel, Request};
use std::net::Ipv4Addr;
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

/// Where the daemon listens: `--socket`, else the configuration's (`--config`, else the
/// default configuration file if there is one), else the default socket.
#[derive(clap::Args)]
struct Target {
    /// The daemon's control socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The daemon's configuration file (for its control socket).
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let config = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(PathBuf::from(config::DEFAULT_PATH)).filter(|p| p.exists()),
        };
        match config {
            Some(path) => Ok(config::Config::load(&path)
                .map_err(|e| e.to_string())?
                .control_socket()),
            None => Ok(PathBuf::from(config::DEFAULT_SOCKET)),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: create the interface, log in and link with friends (root or
    /// CAP_NET_ADMIN). Stops on Ctrl-C / SIGTERM.
    Up {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Sign in once with the password and keep only an OAuth token (ejabberd's
    /// `/oauth/token`): `up` then uses the token, and the password is not stored.
    Login {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Friends and their devices: online, switch, address, link path, RTT, traffic.
    Status {
        /// Redraw every two seconds.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The friends list, with requests.
    Friends {
        #[command(flatten)]
        target: Target,
    },
    /// add | accept | decline | remove | enable | disable a friend.
    Friend {
        action: String,
        jid: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give a device a fixed address in your subnet: DEVICE is its JID with the resource
    /// `status` shows (friend@server/resource) or its device id.
    Pin {
        device: String,
        address: Ipv4Addr,
        #[command(flatten)]
        target: Target,
    },
    /// Let a pinned device's address be moved again (DEVICE as for `pin`).
    Unpin {
        device: String,
        #[command(flatten)]
        target: Target,
    },
    /// The platform's network changed: restart link discovery (the daemon notices changes
    /// of its own addresses by itself).
    NetworkChanged {
        #[command(flatten)]
        target: Target,
    },
    /// Change how much the daemon logs: off, error, warn, info, debug (includes JIDs and
    /// addresses) or trace (per packet).
    LogLevel {
        #[arg(value_parser = |s: &str| s.parse::<LogLevel>())]
        level: LogLevel,
        #[command(flatten)]
        target: Target,
    },
    /// Build a small world in network namespaces and show SocialVPN at work (root; only in
    /// a build with the `demo` feature, as `scripts/demo` makes).
    #[cfg(feature = "demo")]
    Demo,
}

fn main() -> ExitCode {
    logging::init(std::env::var("RUST_LOG").ok());
    let result = match Cli::parse().command {
        Command::Up { config } => up::run(&config),
        Command::Login { config } => login::run(&config),
        Command::Status { watch, target } => target.socket().and_then(|s| status(&s, watch)),
        Command::Friends { target } => target
            .socket()
            .and_then(|socket| control::roster(&socket))
            .map(|roster| print!("{}", table::friends(&roster))),
        Command::Friend {
            action,
            jid,
            target,
        } => target.socket().and_then(|socket| {
            let parsed: FriendAction = action.parse().map_err(|e| format!("{e}"))?;
            let request = Request::Friend {
                action: parsed,
                jid: jid.clone(),
            };
            control::done(&socket, &request).map(|()| println!("{action} {jid}: done"))
        }),
        Command::Pin {
            device,
            address,
            target,
        } => target.socket().and_then(|socket| {
            let request = Request::PinAddress {
                device: device_id(&socket, &device)?,
                address,
            };
            control::done(&socket, &request).map(|()| println!("{device} pinned to {address}"))
        }),
        Command::Unpin { device, target } => target.socket().and_then(|socket| {
            let request = Request::UnpinAddress {
                device: device_id(&socket, &device)?,
            };
            control::done(&socket, &request).map(|()| println!("{device} unpinned"))
        }),
        Command::NetworkChanged { target } => target
            .socket()
            .and_then(|socket| control::done(&socket, &Request::NetworkChanged)),
        Command::LogLevel { level, target } => target
            .socket()
            .and_then(|socket| control::done(&socket, &Request::SetLogLevel { level })),
        #[cfg(feature = "demo")]
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

/// The device id of `device`: given as such, or found in the roster by its full JID —
/// only a device that holds an address under that account (a device another account merely
/// announced is not that account's to pin).
fn device_id(socket: &std::path::Path, device: &str) -> Result<String, String> {
    let Some((account, resource)) = device.split_once('/') else {
        return Ok(device.to_string());
    };
    // The roster's JIDs are normalised (Bob@Example.org is bob@example.org).
    let account = account
        .parse::<socialvpn_core::xmpp::BareJid>()
        .map_err(|_| format!("'{account}' is not a JID"))?
        .to_string();
    let roster = control::roster(socket)?;
    let found = roster
        .iter()
        .filter(|f| f.jid == account)
        .flat_map(|f| f.devices.iter())
        .find(|d| d.resource == resource)
        .ok_or_else(|| format!("{device} is not online"))?;
    match (&found.uid, found.overlay_address) {
        (Some(uid), Some(_)) => Ok(uid.clone()),
        (None, _) => Err(format!("{device} does not run SocialVPN")),
        (Some(_), None) => Err(format!(
            "{device} has no address in your subnet (not linked)"
        )),
    }
}

fn status(socket: &std::path::Path, watch: bool) -> Result<(), String> {
    loop {
        let status = control::status(socket)?;
        let roster = control::roster(socket)?;
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
