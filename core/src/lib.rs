//! SocialVPN core: the engine that moves IP packets between this device's tun fd and its
//! friends' devices.
//!
//! Layout, from the wire up: [`packet`] (zero-copy views, checksums, translation, the UID
//! header), [`framing`] and [`tun`] (the platform fd), [`identity`], [`uid`], [`subnet`]
//! and [`addrbook`] (who is who and at which address), [`wireguard`] (one WireGuard session per
//! friend device), [`dataplane`] (the sans-IO state machine tying them together),
//! [`social`] and [`links`] (friends, and finding paths to their devices), [`node`] (all of
//! it as one sans-IO state machine) and [`engine`] (the thin tokio shell that drives it).
//! [`api`] is the control protocol every front end speaks: requests, replies, events and the
//! records they carry (data only).

pub mod addrbook;
pub mod api;
pub mod config;
pub mod counters;
pub mod dataplane;
pub mod engine;
pub mod fast_map;
pub mod framing;
pub mod identity;
pub mod idle_grid;
pub mod links;
pub mod liveness;
pub mod logging;
#[cfg(target_os = "linux")]
pub mod netwatch;
pub mod node;
pub mod oauth;
pub mod packet;
pub mod path;
pub mod persist;
pub mod protect;
pub mod social;
pub mod subnet;
pub mod tun;
pub mod uid;
pub mod wireguard;
pub mod xmpp;

pub use counters::{Counters, DropReason};
pub use engine::{Engine, EngineConfig, EngineError, PeerConfig, PreparedEngine, StartError};
pub use framing::Framing;
pub use uid::Uid;
