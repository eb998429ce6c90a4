//! Stanzas in and out of the XMPP session: the engine's [`Outgoing`] as stanzas, and what
//! arrives turned into [`XmppInput`]s — with the protocol housekeeping answered here (roster
//! pushes only from our own account, pings, link signals only between full JIDs, unknown IQs
//! refused).

use super::extdisco;
use super::session::XmppInput;
use crate::social::payload::{parse_signal, DeviceInfo, DeviceWire, NS_DEVICE, NS_LINK};
use crate::social::state::{Outgoing, PresenceKind, RosterItem, Subscription};
use tokio::sync::mpsc;
use tokio_xmpp::stanzastream::StanzaStream;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::Message;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{self, Presence};
use xmpp_parsers::roster::{self, Roster};
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

pub(super) async fn handle_stanza(
    stanza: Stanza,
    own: Option<&FullJid>,
    requests: &mut Requests,
    inputs: &mpsc::Sender<XmppInput>,
    stream: &StanzaStream,
) -> Option<extdisco::Offered> {
    match stanza {
        Stanza::Presence(p) => {
            let from = p.from.clone()?;
            let kind = match p.type_ {
                presence::Type::None => PresenceKind::Available(device_in(&p.payloads)),
                presence::Type::Unavailable => PresenceKind::Unavailable,
                presence::Type::Subscribe => PresenceKind::Subscribe,
                presence::Type::Subscribed => PresenceKind::Subscribed,
                presence::Type::Unsubscribe => PresenceKind::Unsubscribe,
                presence::Type::Unsubscribed => PresenceKind::Unsubscribed,
                presence::Type::Error | presence::Type::Probe => return None,
            };
            let _ = inputs.send(XmppInput::Presence(from, kind)).await;
        }
        Stanza::Message(m) => {
            // Signals as headline messages, as builds before IQ signals sent them. Addressed
            // to this device only; anything else is not for us.
            let from = signal_sender(&m.from, &m.to, own)?;
            for payload in m.payloads {
                if let Some(signal) = parse_signal(payload) {
                    let _ = inputs.send(XmppInput::Signal(from.clone(), signal)).await;
                }
            }
        }
        Stanza::Iq(iq) => return handle_iq(iq, own, requests, inputs, stream).await,
    }
    None
}

pub(super) async fn handle_iq(
    iq: Iq,
    own: Option<&FullJid>,
    requests: &mut Requests,
    inputs: &mpsc::Sender<XmppInput>,
    stream: &StanzaStream,
) -> Option<extdisco::Offered> {
    // RFC 6121 2.1.6: a roster push (and our roster's result) comes from the server on
    // behalf of our bare JID, or without `from`; another of our own resources, or anyone
    // else, cannot speak for the roster.
    let from_own_account = |from: &Option<Jid>| match (from, own) {
        (None, _) => true,
        (Some(f), Some(own)) => f.try_as_full().is_err() && f.to_bare() == own.to_bare(),
        _ => false,
    };
    match iq {
        Iq::Result {
            from, id, payload, ..
        } if requests.roster.as_deref() == Some(id.as_str()) => {
            if !from_own_account(&from) {
                // Only our server answers for our roster.
                return None;
            }
            requests.roster = None;
            let items = payload
                .and_then(|p| Roster::try_from(p).ok())
                .map(|r| r.items.into_iter().map(roster_item).collect())
                .unwrap_or_default();
            let _ = inputs.send(XmppInput::Roster(items)).await;
        }
        Iq::Set {
            from, id, payload, ..
        } if payload.is("query", xmpp_parsers::ns::ROSTER) => {
            if !from_own_account(&from) {
                // RFC 6121: pushes from anyone else are ignored (and refused).
                reply_error(stream, from, id, DefinedCondition::ServiceUnavailable).await;
                return None;
            }
            if let Ok(push) = Roster::try_from(payload) {
                for item in push.items {
                    let _ = inputs.send(XmppInput::RosterPush(roster_item(item))).await;
                }
            }
            reply_result(stream, from, id).await;
        }
        Iq::Get {
            from, id, payload, ..
        } if payload.is("ping", xmpp_parsers::ns::PING) => reply_result(stream, from, id).await,
        Iq::Set {
            from,
            to,
            id,
            payload,
        } if payload.is("link", NS_LINK) => {
            let Some(sender) = signal_sender(&from, &to, own) else {
                reply_error(stream, from, id, DefinedCondition::ServiceUnavailable).await;
                return None;
            };
            let signal = parse_signal(payload);
            let readable = matches!(signal, Some(Ok(_)));
            if let Some(signal) = signal {
                // The engine counts what it refuses, unreadable signals included.
                let _ = inputs.send(XmppInput::Signal(sender, signal)).await;
            }
            if readable {
                reply_result(stream, from, id).await;
            } else {
                reply_error(stream, from, id, DefinedCondition::BadRequest).await;
            }
        }
        Iq::Result {
            from, id, payload, ..
        } if requests.services.as_deref() == Some(id.as_str()) => {
            // Only our server, to which the query went, answers it.
            let from_server = match (&from, own) {
                (None, _) => true,
                (Some(f), Some(own)) => f.as_str() == own.domain().as_str(),
                _ => false,
            };
            if from_server {
                requests.services = None;
                return payload
                    .as_ref()
                    .map(extdisco::parse)?
                    .map_err(|e| tracing::debug!(error = %e, "unusable external services answer"))
                    .ok();
            }
        }
        Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
            reply_error(stream, from, id, DefinedCondition::ServiceUnavailable).await
        }
        // An error answer to the services query: the server offers none (most servers).
        Iq::Result { .. } | Iq::Error { .. } => {}
    }
    None
}

/// Our IQ requests in flight, by id (random, so nobody else can answer them).
#[derive(Default)]
pub(super) struct Requests {
    pub(super) roster: Option<String>,
    /// The external services query (XEP-0215).
    pub(super) services: Option<String>,
}

/// Asks the server for STUN/TURN services (XEP-0215).
pub(super) async fn ask_for_services(
    stream: &StanzaStream,
    own: &FullJid,
    requests: &mut Requests,
) {
    let id = new_id("services");
    requests.services = Some(id.clone());
    let query = extdisco::query(id, &own.to_bare());
    let _token = stream.send(Box::new(query.into())).await;
}

/// A ping to our server (XEP-0199): its answer is ignored; it makes the stream flush.
pub(super) async fn ping_server(stream: &StanzaStream, own: &FullJid) {
    let mut ping = Iq::from_get(new_id("ping"), xmpp_parsers::ping::Ping);
    if let Iq::Get { ref mut to, .. } = ping {
        *to = Some(Jid::from(BareJid::from_parts(None, own.domain())));
    }
    let _token = stream.send(Box::new(ping.into())).await;
}

/// An empty IQ result: the acknowledgement of a roster push or a ping.
pub(super) async fn reply_result(stream: &StanzaStream, to: Option<Jid>, id: String) {
    let result = Iq::Result {
        from: None,
        to,
        id,
        payload: None,
    };
    let _token = stream.send(Box::new(result.into())).await;
}

/// Who sent a signal, if it came from another device's full JID to this device's (anything
/// else is not a signal for us).
pub(super) fn signal_sender(
    from: &Option<Jid>,
    to: &Option<Jid>,
    own: Option<&FullJid>,
) -> Option<FullJid> {
    let to_us = match (to, own) {
        (Some(to), Some(own)) => to.try_as_full().ok() == Some(own),
        _ => false,
    };
    to_us
        .then(|| from.clone().map(Jid::try_into_full))
        .flatten()?
        .ok()
}

pub(super) async fn reply_error(
    stream: &StanzaStream,
    to: Option<Jid>,
    id: String,
    condition: DefinedCondition,
) {
    let error = StanzaError::new(ErrorType::Cancel, condition, "en", "");
    let mut iq = Iq::from_error(id, error);
    if let Iq::Error { to: ref mut t, .. } = iq {
        *t = to;
    }
    let _token = stream.send(Box::new(iq.into())).await;
}

pub(super) fn device_in(payloads: &[Element]) -> Option<DeviceInfo> {
    payloads
        .iter()
        .filter(|p| p.is("device", NS_DEVICE))
        .find_map(|p| DeviceWire::try_from(p.clone()).ok())
        .and_then(|wire| DeviceInfo::from_wire(&wire).ok())
}

pub(super) fn roster_item(item: roster::Item) -> RosterItem {
    let (subscription, removed) = match item.subscription {
        roster::Subscription::None => (Subscription::None, false),
        roster::Subscription::To => (Subscription::To, false),
        roster::Subscription::From => (Subscription::From, false),
        roster::Subscription::Both => (Subscription::Both, false),
        roster::Subscription::Remove => (Subscription::None, true),
    };
    RosterItem {
        jid: item.jid,
        name: item.name,
        subscription,
        pending_out: item.ask == roster::Ask::Subscribe,
        removed,
    }
}

/// A random IQ id: unguessable, so nobody else can answer our requests.
pub(super) fn new_id(kind: &str) -> String {
    format!("svpn-{kind}-{:016x}", rand::random::<u64>())
}

pub(super) fn to_stanza(out: Outgoing, roster_request: &mut Option<String>) -> Stanza {
    match out {
        Outgoing::Announce(device) => Presence::available().with_payload(device.to_wire()).into(),
        Outgoing::RosterGet => {
            let id = new_id("roster");
            *roster_request = Some(id.clone());
            let query = Roster {
                ver: None,
                items: vec![],
            };
            Iq::from_get(id, query).into()
        }
        Outgoing::Subscribe(jid) => Presence::subscribe().with_to(jid).into(),
        Outgoing::Subscribed(jid) => Presence::subscribed().with_to(jid).into(),
        Outgoing::Unsubscribed(jid) => Presence::new(presence::Type::Unsubscribed)
            .with_to(jid)
            .into(),
        Outgoing::RosterRemove(jid) => {
            let item = roster::Item {
                jid,
                name: None,
                subscription: roster::Subscription::Remove,
                ask: roster::Ask::None,
                groups: vec![],
                approved: None,
            };
            Iq::from_set(
                new_id("roster-set"),
                Roster {
                    ver: None,
                    items: vec![item],
                },
            )
            .into()
        }
        Outgoing::Signal {
            to,
            signal,
            as_message: true,
        } => Message::headline(Jid::from(to))
            .with_payload(signal.to_wire())
            .into(),
        Outgoing::Signal {
            to,
            signal,
            as_message: false,
        } => {
            // An IQ to the device's full JID: never stored offline nor redirected to another
            // resource (RFC 6121), and delivered at once by servers holding presence for an
            // inactive client (XEP-0352), which a headline message is not.
            Iq::Set {
                from: None,
                to: Some(Jid::from(to)),
                id: new_id("link"),
                payload: signal.to_wire().into(),
            }
            .into()
        }
    }
}
