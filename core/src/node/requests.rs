//! The control protocol's requests as the node answers them, and the views they return.

use super::{AddressCheck, Node};
use crate::addrbook::AddressBookError;
use crate::api::{
    ApiError, DeviceView, ErrorKind, FriendView, LinkView, Request, Response, StatusView,
};
use crate::counters::LinkTraffic;
use crate::dataplane::PeerError;
use crate::social::payload::DeviceInfo;
use crate::social::state::Subscription;
use crate::social::toggles::TogglesError;
use crate::subnet::ula_address;
use crate::uid::Uid;
use std::net::Ipv4Addr;
use std::time::Instant;
use xmpp_parsers::jid::BareJid;

/// Why one request failed (the node goes on).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The friend switches or choices could not be saved.
    #[error(transparent)]
    Toggles(#[from] TogglesError),
    #[error(transparent)]
    AddressBook(#[from] AddressBookError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("this engine has no XMPP account")]
    NoAccount,
    #[error("links are made by hand only without an XMPP account")]
    NoAccountOnly,
    #[error("'{0}' is not a valid JID")]
    BadJid(String),
    #[error("'{0}' is not a device id (40 hex digits)")]
    BadDevice(String),
    /// Log levels and signing out belong to the shell around the node.
    #[error("the engine's shell answers this request, not the node")]
    ForTheShell,
}

impl From<&RequestError> for ApiError {
    fn from(e: &RequestError) -> ApiError {
        let kind = match e {
            RequestError::Toggles(_) => ErrorKind::StateDirectory,
            RequestError::AddressBook(book) | RequestError::Peer(PeerError::Addresses(book)) => {
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
            RequestError::BadDevice(_) => ErrorKind::BadDevice,
            RequestError::Peer(_) | RequestError::NoAccountOnly => ErrorKind::PeerRefused,
            RequestError::NoAccount => ErrorKind::NoAccount,
            RequestError::BadJid(_) => ErrorKind::BadJid,
            RequestError::ForTheShell => ErrorKind::Unsupported,
        };
        ApiError {
            kind,
            message: e.to_string(),
        }
    }
}

fn parse_uid(device: &str) -> Result<Uid, RequestError> {
    device
        .parse()
        .map_err(|_| RequestError::BadDevice(device.to_string()))
}

impl Node {
    /// Answers one control request (all but the log level and signing out, which are the
    /// shell's).
    pub fn handle_request(&mut self, now: Instant, request: Request) -> Response {
        match self.answer(now, request) {
            Ok(response) => response,
            Err(e) => Response::Error {
                error: ApiError::from(&e),
            },
        }
    }

    fn answer(&mut self, now: Instant, request: Request) -> Result<Response, RequestError> {
        let unix = self.unix(now);
        Ok(match request {
            Request::Status => Response::Status {
                status: Box::new(self.status()),
            },
            Request::Roster => Response::Roster {
                friends: self.roster(now)?,
            },
            Request::Links => Response::Links {
                links: self.links(),
            },
            Request::Friend { action, jid } => {
                let jid: BareJid = jid.parse().map_err(|_| RequestError::BadJid(jid))?;
                let s = self.social.as_mut().ok_or(RequestError::NoAccount)?;
                let result = s.friend(now, unix, action, jid, &mut self.dp);
                // What happened before a failure (links closed for a removed friend whose
                // switch could not be forgotten) still goes out now.
                s.settle(now, unix, &mut self.dp, &mut self.out);
                result?;
                Response::Done
            }
            Request::PinAddress { device, address } => {
                self.pin(now, parse_uid(&device)?, Some(address))?;
                Response::Done
            }
            Request::UnpinAddress { device } => {
                self.pin(now, parse_uid(&device)?, None)?;
                Response::Done
            }
            Request::Foreground => {
                self.set_foreground(true);
                Response::Done
            }
            Request::Background => {
                self.set_foreground(false);
                Response::Done
            }
            Request::NetworkChanged => {
                // The addresses are the shell's to list; a restart follows even if they
                // look the same (the NAT or the network behind them may not be).
                self.out.address_check = Some(AddressCheck::Restart);
                Response::Done
            }
            Request::AddPeer {
                public_key,
                endpoint,
                keepalive_secs,
            } => {
                let mut key = [0u8; 32];
                hex::decode_to_slice(&public_key, &mut key)
                    .map_err(|_| RequestError::Peer(PeerError::BadKey))?;
                let uid = self.add_peer(now, key, Some(endpoint), keepalive_secs)?;
                Response::PeerAdded {
                    uid: uid.to_string(),
                }
            }
            Request::SetLogLevel { .. } | Request::SignOut | Request::Events { .. } => {
                return Err(RequestError::ForTheShell)
            }
        })
    }

    /// Pins (Some) or unpins (None) a device's address.
    fn pin(
        &mut self,
        now: Instant,
        uid: Uid,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<(), RequestError> {
        // Only a device the address book knows (seen, linked): not ours, not the broadcast
        // id, not a typo that would hold an address for good.
        let dp = &mut self.dp;
        let known =
            uid != dp.uid() && uid != Uid::BROADCAST && dp.address_book().entry(&uid).is_some();
        if !known {
            return Err(RequestError::BadDevice(uid.to_string()));
        }
        let book = dp.address_book_mut();
        match address {
            Some(address) => book.pin(uid, address)?,
            None => book.unpin(&uid)?,
        }
        let unix = self.unix(now);
        if let Some(s) = self.social.as_mut() {
            // A device refused an address before may have one now.
            s.refresh_wanted(now, unix, &mut self.dp);
            s.settle(now, unix, &mut self.dp, &mut self.out);
            // The roster shows addresses.
            self.out.events.push_back(crate::api::Event::RosterChanged);
        }
        Ok(())
    }

    pub fn status(&self) -> StatusView {
        let dp = &self.dp;
        let book = dp.address_book();
        let social = self.social.as_ref();
        StatusView {
            uid: dp.uid().to_string(),
            ipv4: book.own_address(),
            ipv6: ula_address(&dp.uid()),
            subnet: book.subnet().to_string(),
            tunnel: self.tunnel,
            foreground: self.background.is_none(),
            xmpp: social.map(|s| s.xmpp_status()),
            counters: dp.counters(),
            social: social.map(|s| s.state.counters()),
            links: social.map(|s| s.links.counters()),
            candidates: social.map(|s| s.candidate_list()),
        }
    }

    pub fn links(&self) -> Vec<LinkView> {
        let mut links: Vec<(Uid, LinkView)> = self
            .dp
            .links()
            .into_iter()
            .map(|l| {
                let view = LinkView {
                    uid: l.uid.to_string(),
                    overlay_address: l.overlay_address,
                    endpoint: l.endpoint,
                    session: l.session,
                    traffic: l.counters,
                };
                (l.uid, view)
            })
            .collect();
        // Links still being set up: their WireGuard side is made when first needed, so the
        // data plane may not list them yet. Shown as before, with no path and no session.
        if let Some(s) = &self.social {
            for (uid, _) in s.links.devices().filter(|(u, _)| !self.dp.has_link(u)) {
                let view = LinkView {
                    uid: uid.to_string(),
                    overlay_address: self
                        .dp
                        .address_book()
                        .address_of(&uid)
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                    endpoint: None,
                    session: false,
                    traffic: LinkTraffic::default(),
                };
                links.push((uid, view));
            }
            links.sort_by_key(|(uid, _)| *uid);
        }
        links.into_iter().map(|(_, view)| view).collect()
    }

    pub fn roster(&self, now: Instant) -> Result<Vec<FriendView>, RequestError> {
        let s = self.social.as_ref().ok_or(RequestError::NoAccount)?;
        let dp = &self.dp;
        let links = dp.links();
        // A device shows its address, link and traffic only under the account it belongs to:
        // another account announcing a copy of it shows the copy, nothing more.
        let device_view = |account: &BareJid, resource: &str, info: Option<DeviceInfo>| {
            let uid: Option<Uid> = info.map(|i| i.uid).filter(|u| {
                s.state.owner_of(u).is_none_or(|owner| owner == account)
                    && s.links.account_of(u).is_none_or(|a| a == *account)
            });
            // A link still being set up has no traffic yet (nor, perhaps, its WireGuard side).
            let traffic = uid.and_then(|u| {
                links
                    .iter()
                    .find(|l| l.uid == u)
                    .map(|l| l.counters)
                    .or_else(|| s.links.device_key(&u).map(|_| LinkTraffic::default()))
            });
            DeviceView {
                resource: resource.to_string(),
                socialvpn: info.is_some(),
                uid: info.map(|i| i.uid.to_string()),
                overlay_address: uid.and_then(|u| dp.address_book().address_of(&u)),
                pinned: uid
                    .and_then(|u| dp.address_book().entry(&u))
                    .is_some_and(|e| e.pinned),
                link: uid.and_then(|u| s.links.phase(now, &u)),
                traffic,
            }
        };
        let mut out: Vec<FriendView> = s
            .state
            .contacts()
            .map(|c| FriendView {
                jid: c.jid.to_string(),
                name: c.name.clone(),
                subscription: c.subscription,
                mutual: c.is_mutual(),
                pending_in: c.pending_in,
                pending_out: c.pending_out,
                enabled: s.state.is_enabled(&c.jid),
                own: false,
                // Only devices of contacts whose presence we see: what someone we merely
                // asked announces is kept for when they answer, not shown (nor pinnable).
                devices: if matches!(c.subscription, Subscription::To | Subscription::Both) {
                    c.devices
                        .values()
                        .map(|d| device_view(&c.jid, &d.resource, d.info))
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        let own_devices: Vec<DeviceView> = s
            .state
            .own_devices()
            .map(|d| device_view(s.state.own_jid(), &d.resource, d.info))
            .collect();
        if !own_devices.is_empty() {
            out.push(FriendView {
                jid: s.state.own_jid().to_string(),
                name: None,
                subscription: Subscription::Both,
                mutual: true,
                pending_in: false,
                pending_out: false,
                enabled: true,
                own: true,
                devices: own_devices,
            });
        }
        Ok(out)
    }

    /// Links a device by hand (without an account only: with one, links are the friend
    /// policy's alone; a peer added by hand would bypass the switches, the cap and the
    /// roster).
    pub fn add_peer(
        &mut self,
        now: Instant,
        public_key: [u8; 32],
        endpoint: Option<std::net::SocketAddr>,
        keepalive_secs: Option<u16>,
    ) -> Result<Uid, RequestError> {
        if self.social.is_some() {
            return Err(RequestError::NoAccountOnly);
        }
        Ok(self
            .dp
            .add_peer(now, public_key, endpoint, keepalive_secs)?)
    }

    /// Removes a link made by hand.
    pub fn remove_peer(&mut self, uid: &Uid) -> bool {
        self.dp.remove_peer(uid)
    }
}
