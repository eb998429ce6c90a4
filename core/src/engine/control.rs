//! The control protocol's one entry point (`Engine::handle`): each request becomes engine
//! commands, each failure an `ApiError` of the kind a front end reacts to.

use super::{Command, Engine, EngineError, PeerConfig};
use crate::addrbook::AddressBookError;
use crate::api::{ApiError, ErrorKind, Request, Response};
use crate::dataplane::PeerError;
use crate::uid::Uid;
use tokio::sync::oneshot;
use xmpp_parsers::jid::BareJid;

impl Engine {
    /// Answers one request of the control protocol: the one entry point of every front end.
    pub async fn handle(&self, request: Request) -> Response {
        match self.call(request).await {
            Ok(response) => response,
            Err(e) => Response::Error {
                error: ApiError::from(&e),
            },
        }
    }

    /// Decodes a request, answers it and encodes the reply: the byte channel of the iOS
    /// app↔extension messages and the CLI's control socket. Bytes that are no request get
    /// an error reply, never a partial action.
    pub async fn handle_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match Request::decode(bytes) {
            Ok(request) => self.handle(request).await.encode(),
            Err(error) => Response::Error { error }.encode(),
        }
    }

    async fn call(&self, request: Request) -> Result<Response, EngineError> {
        Ok(match request {
            Request::Status => Response::Status {
                status: Box::new(self.ask(Command::Status).await?),
            },
            Request::Roster => Response::Roster {
                friends: self.ask(Command::Roster).await??,
            },
            Request::Links => Response::Links {
                links: self.ask(Command::Links).await?,
            },
            Request::Friend { action, jid } => {
                let jid: BareJid = jid.parse().map_err(|_| EngineError::BadJid(jid))?;
                self.ask(|tx| Command::Friend(action, jid, tx)).await??;
                Response::Done
            }
            Request::PinAddress { device, address } => {
                let uid = parse_uid(&device)?;
                self.ask(|tx| Command::Pin(uid, Some(address), tx))
                    .await??;
                Response::Done
            }
            Request::UnpinAddress { device } => {
                let uid = parse_uid(&device)?;
                self.ask(|tx| Command::Pin(uid, None, tx)).await??;
                Response::Done
            }
            Request::NetworkChanged => {
                self.ask(Command::NetworkChanged).await?;
                Response::Done
            }
            Request::SetLogLevel { level } => {
                if !crate::logging::set_level(level) {
                    return Err(EngineError::NoLogControl);
                }
                Response::Done
            }
            Request::AddPeer {
                public_key,
                endpoint,
                keepalive_secs,
            } => {
                let mut key = [0u8; 32];
                hex::decode_to_slice(&public_key, &mut key)
                    .map_err(|_| EngineError::Peer(PeerError::BadKey))?;
                let peer = PeerConfig {
                    public_key: key,
                    endpoint: Some(endpoint),
                    keepalive_secs,
                };
                let uid = self.ask(|tx| Command::AddPeer(peer, tx)).await??;
                Response::PeerAdded {
                    uid: uid.to_string(),
                }
            }
            Request::SignOut => {
                // The engine task says goodbye to friends and signs off as it ends.
                let (tx, rx) = oneshot::channel();
                self.commands
                    .send(Command::Stop(tx))
                    .await
                    .map_err(|_| EngineError::Stopped)?;
                let _ = rx.await;
                self.stopped().await;
                Response::Done
            }
        })
    }
}

fn parse_uid(device: &str) -> Result<Uid, EngineError> {
    device
        .parse()
        .map_err(|_| EngineError::BadDevice(device.to_string()))
}

impl From<&EngineError> for ApiError {
    fn from(e: &EngineError) -> ApiError {
        let kind = match e {
            EngineError::Identity(_) | EngineError::Persist(_) | EngineError::Toggles(_) => {
                ErrorKind::StateDirectory
            }
            EngineError::AddressBook(book) | EngineError::Peer(PeerError::Addresses(book)) => {
                match book {
                    AddressBookError::Io { .. } | AddressBookError::Corrupt { .. } => {
                        ErrorKind::StateDirectory
                    }
                    AddressBookError::UnknownDevice => ErrorKind::BadDevice,
                    AddressBookError::OutsideSubnet { .. }
                    | AddressBookError::AddressTaken { .. }
                    | AddressBookError::Full(_)
                    | AddressBookError::TooManyDevices(_) => ErrorKind::AddressRefused,
                }
            }
            EngineError::BadDevice(_) => ErrorKind::BadDevice,
            EngineError::Peer(_) | EngineError::NoAccountOnly => ErrorKind::PeerRefused,
            EngineError::NoAccount => ErrorKind::NoAccount,
            EngineError::BadJid(_) => ErrorKind::BadJid,
            EngineError::NoLogControl => ErrorKind::Unsupported,
            EngineError::Socket { .. } | EngineError::TunFd(_) | EngineError::Protect => {
                ErrorKind::Platform
            }
            EngineError::NetRecv(_) | EngineError::Stopped => ErrorKind::Stopped,
        };
        ApiError {
            kind,
            message: e.to_string(),
        }
    }
}
