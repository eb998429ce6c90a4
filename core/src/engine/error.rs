//! The engine's errors: why it could not start (nothing runs) apart from why a call on a
//! running engine failed or why it stopped, as quinn keeps connection errors apart from the
//! errors of calls on a connection.

use crate::addrbook::AddressBookError;
use crate::api::{ApiError, ErrorKind};
use crate::identity::IdentityError;
use crate::node::RequestError;
use crate::social::toggles::TogglesError;
use std::io;
use std::net::SocketAddr;

/// Why `PreparedEngine::load` or `start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    AddressBook(#[from] AddressBookError),
    #[error(transparent)]
    Toggles(#[from] TogglesError),
    #[error("cannot open the UDP socket on {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    #[error("cannot watch the tun fd: {0}")]
    TunFd(io::Error),
    #[error("the platform refused to keep the engine's socket out of the VPN")]
    Protect,
    #[error("cannot start writing state in the background: {0}")]
    Persist(io::Error),
}

/// Why a call on a running engine failed, or why the engine stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// One request failed; the engine goes on.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A tunnel handed over later (`attach_tunnel`) cannot be watched.
    #[error("cannot watch the tun fd: {0}")]
    TunFd(io::Error),
    /// The engine stopped because its UDP socket failed.
    #[error("the UDP socket failed: {0}")]
    NetRecv(io::Error),
    #[error("the engine has stopped")]
    Stopped,
    #[error("this front end cannot change its log level")]
    NoLogControl,
}

impl From<&StartError> for ApiError {
    fn from(e: &StartError) -> ApiError {
        let kind = match e {
            StartError::Identity(_) | StartError::Persist(_) | StartError::Toggles(_) => {
                ErrorKind::StateDirectory
            }
            StartError::AddressBook(book) => match book {
                AddressBookError::Io { .. } | AddressBookError::Corrupt { .. } => {
                    ErrorKind::StateDirectory
                }
                _ => ErrorKind::AddressRefused,
            },
            StartError::Socket { .. } | StartError::TunFd(_) | StartError::Protect => {
                ErrorKind::Platform
            }
        };
        ApiError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<&EngineError> for ApiError {
    fn from(e: &EngineError) -> ApiError {
        let kind = match e {
            EngineError::Request(e) => return ApiError::from(e),
            EngineError::NoLogControl => ErrorKind::Unsupported,
            EngineError::TunFd(_) => ErrorKind::Platform,
            EngineError::NetRecv(_) | EngineError::Stopped => ErrorKind::Stopped,
        };
        ApiError {
            kind,
            message: e.to_string(),
        }
    }
}
