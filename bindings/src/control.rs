//! The control protocol for a front end whose engine runs in another process: the iOS
//! app, whose engine lives in its packet tunnel extension. The app encodes typed requests
//! here, sends the bytes (`sendProviderMessage`), the extension hands them to
//! `SocialVpn::handle_control` and sends the reply bytes back, and the app decodes them here
//! into the same records the engine object's methods return. The wire format stays the
//! core's (`socialvpn_core::api`); no front end writes JSON by hand.

use crate::error::VpnError;
use crate::events::{LinkEvent, VpnState};
use crate::logging::LogLevel;
use crate::views::{Friend, LinkInfo, Status};
use socialvpn_core::api::{Event, FriendAction, Request, Response};

/// What the app can ask its engine (the typed methods of `SocialVpn`, as messages).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ControlRequest {
    Status,
    Roster,
    Links,
    AddFriend {
        jid: String,
    },
    AcceptFriend {
        jid: String,
    },
    DeclineFriend {
        jid: String,
    },
    RemoveFriend {
        jid: String,
    },
    SetFriendEnabled {
        jid: String,
        enabled: bool,
    },
    /// `device` is `Device.uid`; `address` an IPv4 address in the user's subnet.
    PinAddress {
        device: String,
        address: String,
    },
    UnpinAddress {
        device: String,
    },
    NetworkChanged,
    /// The app's screens are shown or hidden (see `SocialVpn::set_foreground`).
    SetForeground {
        foreground: bool,
    },
    SetLogLevel {
        level: LogLevel,
    },
    /// The events after the cursor `after` (0 first), the reply held up to `wait_ms`
    /// (at most 30 000) until there is one: the app's long poll.
    Events {
        after: u64,
        wait_ms: u32,
    },
    SignOut,
}

/// A reply, decoded; a failed request is the decoder's error instead.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum ControlReply {
    Done,
    Status {
        status: Status,
    },
    Roster {
        friends: Vec<Friend>,
    },
    Links {
        links: Vec<LinkInfo>,
    },
    PeerAdded {
        uid: String,
    },
    /// `next` is the cursor for the next `Events` request.
    Events {
        events: Vec<ControlEvent>,
        next: u64,
    },
}

/// An event, as the app's screens use it (the listener's callbacks, as values).
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum ControlEvent {
    /// The account's connection (and `Stopped`, the engine's end).
    State {
        state: VpnState,
    },
    RosterChanged,
    FriendRequest {
        jid: String,
    },
    Link {
        link: LinkEvent,
    },
    /// The tunnel fd failed; the engine stays signed in.
    TunnelLost {
        reason: String,
    },
    /// Events were lost (the app was away longer than the engine keeps them): ask for the
    /// status and roster again.
    Missed {
        count: u64,
    },
    /// Something a newer engine reports that this build does not know.
    Unknown,
}

/// The request's bytes, as the extension's `handle_control` takes them.
#[uniffi::export]
pub fn encode_control_request(request: ControlRequest) -> Result<Vec<u8>, VpnError> {
    Ok(Request::try_from(request)?.encode())
}

/// Reads the extension's reply; an error reply comes back as the error it carries.
#[uniffi::export]
pub fn decode_control_reply(reply: Vec<u8>) -> Result<ControlReply, VpnError> {
    let response = Response::decode(&reply).map_err(|e| VpnError::Refused {
        reason: format!("the engine's reply cannot be read: {}", e.message),
    })?;
    Ok(match response.into_result()? {
        Response::Done => ControlReply::Done,
        Response::Status { status } => ControlReply::Status {
            status: Status::from(*status),
        },
        Response::Roster { friends } => ControlReply::Roster {
            friends: friends.into_iter().map(Friend::from).collect(),
        },
        Response::Links { links } => ControlReply::Links {
            links: links.into_iter().map(LinkInfo::from).collect(),
        },
        Response::PeerAdded { uid } => ControlReply::PeerAdded { uid },
        Response::Events { events, next } => ControlReply::Events {
            events: events.into_iter().map(ControlEvent::from).collect(),
            next,
        },
        // (`into_result` took the error out.)
        Response::Error { error } => return Err(error.into()),
    })
}

impl TryFrom<ControlRequest> for Request {
    type Error = VpnError;

    fn try_from(request: ControlRequest) -> Result<Request, VpnError> {
        let friend = |action, jid| Request::Friend { action, jid };
        Ok(match request {
            ControlRequest::Status => Request::Status,
            ControlRequest::Roster => Request::Roster,
            ControlRequest::Links => Request::Links,
            ControlRequest::AddFriend { jid } => friend(FriendAction::Add, jid),
            ControlRequest::AcceptFriend { jid } => friend(FriendAction::Accept, jid),
            ControlRequest::DeclineFriend { jid } => friend(FriendAction::Decline, jid),
            ControlRequest::RemoveFriend { jid } => friend(FriendAction::Remove, jid),
            ControlRequest::SetFriendEnabled { jid, enabled: true } => {
                friend(FriendAction::Enable, jid)
            }
            ControlRequest::SetFriendEnabled {
                jid,
                enabled: false,
            } => friend(FriendAction::Disable, jid),
            ControlRequest::PinAddress { device, address } => Request::PinAddress {
                device,
                address: parse_address(&address)?,
            },
            ControlRequest::UnpinAddress { device } => Request::UnpinAddress { device },
            ControlRequest::NetworkChanged => Request::NetworkChanged,
            ControlRequest::SetForeground { foreground: true } => Request::Foreground,
            ControlRequest::SetForeground { foreground: false } => Request::Background,
            ControlRequest::SetLogLevel { level } => Request::SetLogLevel {
                level: level.into(),
            },
            ControlRequest::Events { after, wait_ms } => Request::Events { after, wait_ms },
            ControlRequest::SignOut => Request::SignOut,
        })
    }
}

/// An address the user typed (pinning a device).
pub(crate) fn parse_address(address: &str) -> Result<std::net::Ipv4Addr, VpnError> {
    address.trim().parse().map_err(|_| VpnError::Refused {
        reason: format!("'{address}' is not an IPv4 address"),
    })
}

impl From<Event> for ControlEvent {
    fn from(event: Event) -> ControlEvent {
        match event {
            Event::Xmpp { status } => ControlEvent::State {
                state: status.into(),
            },
            Event::RosterChanged => ControlEvent::RosterChanged,
            Event::FriendRequest { jid } => ControlEvent::FriendRequest { jid },
            Event::Link {
                uid,
                device,
                change,
            } => ControlEvent::Link {
                link: LinkEvent::new(uid, device, change),
            },
            Event::TunnelLost { reason } => ControlEvent::TunnelLost { reason },
            Event::Missed { count } => ControlEvent::Missed { count },
            Event::Stopped { error } => ControlEvent::State {
                state: VpnState::Stopped { error },
            },
            Event::Unknown => ControlEvent::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialvpn_core::api::{ApiError, ErrorKind};

    #[test]
    fn every_request_encodes_to_what_the_engine_decodes() {
        let cases = [
            (ControlRequest::Status, Request::Status),
            (
                ControlRequest::SetFriendEnabled {
                    jid: "bob@example.org".into(),
                    enabled: false,
                },
                Request::Friend {
                    action: FriendAction::Disable,
                    jid: "bob@example.org".into(),
                },
            ),
            (
                ControlRequest::PinAddress {
                    device: "ab".into(),
                    address: " 100.64.0.9".into(),
                },
                Request::PinAddress {
                    device: "ab".into(),
                    address: std::net::Ipv4Addr::new(100, 64, 0, 9),
                },
            ),
            (
                ControlRequest::SetForeground { foreground: false },
                Request::Background,
            ),
            (
                ControlRequest::Events {
                    after: 7,
                    wait_ms: 25_000,
                },
                Request::Events {
                    after: 7,
                    wait_ms: 25_000,
                },
            ),
        ];
        for (typed, request) in cases {
            let bytes = encode_control_request(typed).unwrap();
            assert_eq!(Request::decode(&bytes), Ok(request));
        }
        assert!(matches!(
            encode_control_request(ControlRequest::PinAddress {
                device: "ab".into(),
                address: "100.64.0".into()
            }),
            Err(VpnError::Refused { .. })
        ));
    }

    #[test]
    fn replies_decode_and_errors_become_the_error_they_carry() {
        let events = Response::Events {
            events: vec![Event::RosterChanged, Event::Stopped { error: None }],
            next: 9,
        };
        assert_eq!(
            decode_control_reply(events.encode()).unwrap(),
            ControlReply::Events {
                events: vec![
                    ControlEvent::RosterChanged,
                    ControlEvent::State {
                        state: VpnState::Stopped { error: None }
                    }
                ],
                next: 9
            }
        );
        let stopped = Response::Error {
            error: ApiError {
                kind: ErrorKind::Stopped,
                message: "stopped".into(),
            },
        };
        assert!(matches!(
            decode_control_reply(stopped.encode()),
            Err(VpnError::Stopped)
        ));
        assert!(matches!(
            decode_control_reply(b"<html>".to_vec()),
            Err(VpnError::Refused { .. })
        ));
    }
}
