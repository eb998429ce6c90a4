//! STUN and TURN servers from the user's own XMPP server (XEP-0215 external service
//! discovery), with the temporary TURN credentials it hands out (prosody's
//! `mod_turn_external`, ejabberd's `mod_stun_disco`, both in coturn's shared-secret mode).
//!
//! The answer is read leniently by hand: xmpp-parsers' `ServicesResult` refuses a whole
//! answer for one service type it does not know (`turns`, `stuns`), and keeps its fields
//! private. What we cannot use (TCP, TLS, a restricted service without credentials) is
//! skipped; an answer with nothing usable is not an error, garbage is.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use super::discovery::{addresses, Dns};
use crate::links::servers::{IceServers, TurnServer};

use xmpp_parsers::date::DateTime;
use xmpp_parsers::extdisco::ServicesQuery;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ns;

/// The port of a STUN/TURN service named without one (RFC 8489).
const DEFAULT_PORT: u16 = 3478;
/// Ask again this long before the credentials expire at the latest…
const REFRESH_MARGIN: Duration = Duration::from_secs(600);
/// …but never sooner than this after an answer (a server handing out credentials that
/// expire at once must not make us ask in a loop), which still renews credentials that last
/// half a minute before they expire.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Longest a host name or credential may be; anything longer is garbage.
const MAX_FIELD: usize = 512;

/// A service this device can use, as the server named it (its host not resolved yet).
#[derive(Clone, PartialEq, Eq)]
pub struct OfferedService {
    pub host: String,
    pub port: u16,
    /// TURN only: the temporary credentials.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for OfferedService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedService")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What the server offers that we can use: the first UDP STUN service and the first UDP
/// TURN service with credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    pub stun: Option<OfferedService>,
    pub turn: Option<OfferedService>,
    /// When the TURN credentials expire (none: the server did not say).
    pub expires: Option<SystemTime>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtDiscoError {
    #[error("not an external services answer")]
    NotServices,
    #[error("a service without a usable host")]
    BadHost,
    #[error("a service with a port that is not a number: {0:?}")]
    BadPort(String),
    #[error("an oversized or unprintable field")]
    BadField,
}

/// The request for every service the server offers.
pub fn query(id: String, domain: &BareJid) -> Iq {
    let mut iq = Iq::from_get(id, ServicesQuery { type_: None });
    if let Iq::Get { ref mut to, .. } = iq {
        *to = Some(Jid::from(domain.domain().to_owned()));
    }
    iq
}

/// Reads a `<services/>` answer.
pub fn parse(answer: &Element) -> Result<Offered, ExtDiscoError> {
    if !answer.is("services", ns::EXT_DISCO) {
        return Err(ExtDiscoError::NotServices);
    }
    let mut offered = Offered::default();
    for service in answer.children().filter(|c| c.is("service", ns::EXT_DISCO)) {
        let kind = service.attr("type").unwrap_or_default();
        let transport = service.attr("transport").unwrap_or("udp");
        if !matches!(kind, "stun" | "turn") || transport != "udp" {
            continue;
        }
        let host = field(service, "host")?.ok_or(ExtDiscoError::BadHost)?;
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(ExtDiscoError::BadHost);
        }
        let port = match service.attr("port") {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(ExtDiscoError::BadPort(p.chars().take(16).collect())),
            },
        };
        let credentials = match (field(service, "username")?, field(service, "password")?) {
            (Some(user), Some(password)) => Some((user, password)),
            _ => None,
        };
        let entry = OfferedService {
            host,
            port,
            credentials,
        };
        if kind == "stun" {
            offered.stun.get_or_insert(entry);
        } else if entry.credentials.is_some() && offered.turn.is_none() {
            // An unparsable expiry is treated as unknown: the credentials are tried.
            offered.expires = service
                .attr("expires")
                .and_then(|e| e.parse::<DateTime>().ok())
                .map(|d| SystemTime::from(d.0));
            offered.turn = Some(entry);
        }
    }
    Ok(offered)
}

/// A text attribute, bounded and printable.
fn field(service: &Element, name: &str) -> Result<Option<String>, ExtDiscoError> {
    match service.attr(name) {
        None => Ok(None),
        Some(v) if v.len() > MAX_FIELD || v.chars().any(char::is_control) => {
            Err(ExtDiscoError::BadField)
        }
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// The offered servers' IPv4 addresses (the underlay is IPv4); a host that does not
/// resolve is left out. The one part of this module that does I/O (DNS).
pub async fn resolve(dns: &Dns, offered: &Offered) -> IceServers {
    let mut servers = IceServers::default();
    if let Some(stun) = &offered.stun {
        servers.stun = first_v4(dns, stun).await;
    }
    if let Some(turn) = &offered.turn {
        if let (Some(addr), Some((username, password))) =
            (first_v4(dns, turn).await, &turn.credentials)
        {
            servers.turn = Some(TurnServer {
                addr,
                username: username.clone(),
                password: password.clone(),
            });
        }
    }
    servers
}

async fn first_v4(dns: &Dns, service: &OfferedService) -> Option<SocketAddr> {
    match addresses(dns, &service.host, service.port).await {
        Ok(addrs) => addrs.into_iter().find(SocketAddr::is_ipv4),
        Err(e) => {
            tracing::debug!(host = %service.host, error = %e, "offered STUN/TURN host");
            None
        }
    }
}

/// Whether the engine should take `offered` in place of `current`: the first offer; new
/// servers; or new credentials when the ones in use are `due` for renewal. Every fresh
/// login brings new credentials (their names carry their expiry), and taking them each time
/// would replace the relay allocation — and break relayed links — on every reconnection.
/// An answer that lost a server (its name did not resolve) never replaces a working one.
pub fn worth_switching(current: Option<&IceServers>, offered: &IceServers, due: bool) -> bool {
    let Some(current) = current else {
        return true;
    };
    let lost = (current.turn.is_some() && offered.turn.is_none())
        || (current.stun.is_some() && offered.stun.is_none());
    let moved = offered.turn.as_ref().map(|t| t.addr) != current.turn.as_ref().map(|t| t.addr)
        || offered.stun != current.stun;
    !lost && (due || moved)
}

/// When to ask again for credentials that expire at `expires` (none: not before the next
/// login).
pub fn refresh_in(expires: Option<SystemTime>, now: SystemTime) -> Option<Duration> {
    let left = expires?.duration_since(now).unwrap_or_default();
    Some(
        left.saturating_sub(REFRESH_MARGIN)
            .max(left / 2)
            .max(MIN_REFRESH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn prosodys_answer_gives_stun_and_turn_with_credentials() {
        let answer = el(r#"<services xmlns='urn:xmpp:extdisco:2'>
            <service type='stun' host='turn.example.org' port='3479' transport='udp'/>
            <service type='turn' host='turn.example.org' port='3479' transport='udp'
                username='1700000000' password='pw=' restricted='1'
                expires='2023-11-14T22:13:20Z'/>
            <service type='turns' host='turn.example.org' port='5349' transport='tcp'
                username='1700000000' password='pw=' restricted='1'/>
        </services>"#);
        let offered = parse(&answer).unwrap();
        assert_eq!(offered.stun.as_ref().unwrap().port, 3479);
        let turn = offered.turn.unwrap();
        assert_eq!(turn.host, "turn.example.org");
        assert_eq!(turn.credentials, Some(("1700000000".into(), "pw=".into())));
        assert_eq!(
            offered.expires,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn what_we_cannot_use_is_skipped_and_garbage_refused() {
        // TCP, TLS, unknown types and a TURN service without credentials: nothing usable,
        // and that is no error.
        let answer = el(r#"<services xmlns='urn:xmpp:extdisco:2'>
            <service type='turn' host='a.example' transport='tcp' username='u' password='p'/>
            <service type='turns' host='a.example' username='u' password='p'/>
            <service type='ftp' host='a.example'/>
            <service type='turn' host='a.example' restricted='1'/>
            <other xmlns='urn:example'/>
        </services>"#);
        assert_eq!(parse(&answer), Ok(Offered::default()));
        assert_eq!(
            parse(&el("<query xmlns='urn:xmpp:extdisco:2'/>")),
            Err(ExtDiscoError::NotServices)
        );
        let bad = [
            "<service type='stun' port='3478'/>",
            "<service type='stun' host=''/>",
            "<service type='stun' host='a b'/>",
            "<service type='stun' host='a.example' port='99999'/>",
            "<service type='stun' host='a.example' port='0'/>",
            "<service type='stun' host='a.example' port='x'/>",
        ];
        for service in bad {
            let xml = format!("<services xmlns='urn:xmpp:extdisco:2'>{service}</services>")
                .replace("<service ", "<service xmlns='urn:xmpp:extdisco:2' ");
            assert!(parse(&el(&xml)).is_err(), "{service}");
        }
        let long = "x".repeat(MAX_FIELD + 1);
        let xml = format!(
            "<services xmlns='urn:xmpp:extdisco:2'><service type='turn' host='a' \
             username='{long}' password='p'/></services>"
        );
        assert_eq!(parse(&el(&xml)), Err(ExtDiscoError::BadField));
    }

    #[test]
    fn credentials_are_refreshed_before_they_expire_but_never_in_a_loop() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(refresh_in(Some(now + day), now), Some(day - REFRESH_MARGIN));
        // Short lifetimes: half-way.
        let short = Duration::from_secs(900);
        assert_eq!(refresh_in(Some(now + short), now), Some(short / 2));
        // Half a minute: renewed after 15 s, before they expire.
        let brief = Duration::from_secs(30);
        assert_eq!(refresh_in(Some(now + brief), now), Some(brief / 2));
        // Expired or about to: not sooner than 10 s.
        assert_eq!(refresh_in(Some(now), now), Some(MIN_REFRESH));
        assert_eq!(refresh_in(Some(now - day), now), Some(MIN_REFRESH));
        assert_eq!(refresh_in(None, now), None);
    }

    #[test]
    fn new_credentials_replace_the_ones_in_use_only_when_due_or_moved() {
        let servers = |port: u16, user: &str| IceServers {
            stun: Some(SocketAddr::from(([198, 18, 0, 1], port))),
            turn: Some(TurnServer {
                addr: SocketAddr::from(([198, 18, 0, 1], port)),
                username: user.into(),
                password: "p".into(),
            }),
        };
        let now = servers(3478, "1700000000");
        assert!(worth_switching(None, &now, false));
        // A re-login's fresh credentials for the same server: keep the allocation.
        assert!(!worth_switching(
            Some(&now),
            &servers(3478, "1700000100"),
            false
        ));
        assert!(worth_switching(
            Some(&now),
            &servers(3478, "1700086400"),
            true
        ));
        assert!(worth_switching(
            Some(&now),
            &servers(3479, "1700000100"),
            false
        ));
        // A host that did not resolve this time never replaces a working server.
        let lost = IceServers {
            turn: None,
            ..now.clone()
        };
        assert!(!worth_switching(Some(&now), &lost, true));
    }

    #[test]
    fn the_query_goes_to_the_accounts_server() {
        let jid: BareJid = "alice@example.org".parse().unwrap();
        let Iq::Get { to, payload, .. } = query("q1".into(), &jid) else {
            panic!("not a get");
        };
        assert_eq!(to, Some(Jid::new("example.org").unwrap()));
        assert!(payload.is("services", ns::EXT_DISCO));
    }
}
