//! The errors the apps see: typed, each variant something a screen can react to.

use socialvpn_core::api::{ApiError, ErrorKind};
use socialvpn_core::{EngineError, StartError};

#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum VpnError {
    /// A config field is wrong; `reason` names it.
    #[error("invalid configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("'{jid}' is not a valid XMPP address")]
    InvalidJid { jid: String },
    /// The state directory (device key, addresses, toggles) cannot be read or written.
    #[error("cannot use the state directory: {reason}")]
    StateDirectory { reason: String },
    /// `start_tunnel` was given something that is not an open tun fd.
    #[error("fd {fd} is not a usable tunnel: {reason}")]
    InvalidFd { fd: i32, reason: String },
    /// The socket protector returned false (Android `VpnService.protect`).
    #[error("the platform refused to keep the engine's socket out of the VPN")]
    ProtectRefused,
    #[error("cannot open the engine's UDP socket: {reason}")]
    Socket { reason: String },
    /// The engine cannot use the tunnel fd (its reactor refuses to watch it).
    #[error("the tunnel failed: {reason}")]
    Tunnel { reason: String },
    /// A friend action the social layer refused (e.g. no account).
    #[error("{reason}")]
    Friend { reason: String },
    /// The engine refused the request: an address outside the subnet or pinned to another
    /// device, an unknown device, a bad key.
    #[error("{reason}")]
    Refused { reason: String },
    /// `stop` was called, or the engine ended after a fatal error.
    #[error("the engine has stopped")]
    Stopped,
    /// Called from the socket protector, which runs inside the engine: it must not call back.
    #[error("the engine cannot be called from inside its socket protector")]
    Reentrant,
}

impl From<StartError> for VpnError {
    fn from(e: StartError) -> VpnError {
        let reason = e.to_string();
        match e {
            StartError::Identity(_)
            | StartError::AddressBook(_)
            | StartError::Persist(_)
            | StartError::Toggles(_) => VpnError::StateDirectory { reason },
            StartError::Socket { .. } => VpnError::Socket { reason },
            StartError::TunFd(_) => VpnError::Tunnel { reason },
            StartError::Protect => VpnError::ProtectRefused,
        }
    }
}

impl From<EngineError> for VpnError {
    fn from(e: EngineError) -> VpnError {
        let reason = e.to_string();
        match e {
            // One request failed: by the kind the control protocol gives it.
            EngineError::Request(e) => VpnError::from(ApiError::from(&e)),
            EngineError::NoLogControl => VpnError::Refused { reason },
            EngineError::NetRecv(_) => VpnError::Socket { reason },
            EngineError::TunFd(_) => VpnError::Tunnel { reason },
            EngineError::Stopped => VpnError::Stopped,
        }
    }
}

/// A request the engine answered with an error: by its kind.
impl From<ApiError> for VpnError {
    fn from(e: ApiError) -> VpnError {
        let reason = e.message;
        match e.kind {
            ErrorKind::StateDirectory => VpnError::StateDirectory { reason },
            ErrorKind::Stopped => VpnError::Stopped,
            ErrorKind::NoAccount => VpnError::InvalidConfig { reason },
            ErrorKind::Platform => VpnError::Socket { reason },
            // (The typed calls that take a JID report it as `InvalidJid` with the JID.)
            ErrorKind::BadJid
            | ErrorKind::BadRequest
            | ErrorKind::UnsupportedVersion
            | ErrorKind::BadDevice
            | ErrorKind::AddressRefused
            | ErrorKind::PeerRefused
            | ErrorKind::Unsupported
            | ErrorKind::Unknown => VpnError::Refused { reason },
        }
    }
}

/// What the app's listener or protector may report back (any exception arrives as this):
/// the engine logs it and carries on (a failed protector counts as a refusal).
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum CallbackError {
    #[error("the callback failed: {reason}")]
    Failed { reason: String },
}

// An exception the foreign code did not declare arrives as this.
impl From<uniffi::UnexpectedUniFFICallbackError> for CallbackError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> CallbackError {
        CallbackError::Failed { reason: e.reason }
    }
}
