//! A TURN server as the project's client sees coturn (RFC 5766, UDP relaying only): it also
//! answers STUN Binding, asks for long-term credentials (401 with REALM and NONCE, 438 for a
//! nonce it no longer knows), and keeps allocations, permissions and channels per client
//! address. Sans-IO: datagrams in, datagrams out as (src, dst, payload); time is passed in and
//! things expire lazily. Nothing it is given may make it panic.

use rtc_stun::attributes::*;
use rtc_stun::crypto::{default_provider, RTCCryptoProvider};
use rtc_stun::error_code::*;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::chandata::ChannelData;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;
use rtc_turn::proto::reqtrans::RequestedTransport;
use rtc_turn::proto::PROTO_UDP;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams for the underlay: (src, dst, payload).
type Out = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;
/// A TURN method's success attributes, or the error to answer.
type Reply = Result<Vec<Box<dyn Setter>>, ErrorCode>;

/// coturn's defaults: an allocation lives 10 minutes unless asked for less (at most an hour),
/// a permission 5 minutes, a channel 10 minutes (RFC 5766 §2.2, §8, §11).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Relayed payloads that still fit a Data indication or ChannelData (16-bit lengths).
const MAX_RELAYED: usize = 65_000;

struct Allocation {
    relay: SocketAddr,
    expires: Instant,
    /// The Allocate that made it: its retransmission is answered alike, not refused.
    made_by: TransactionId,
    /// Peer IP → expiry (permissions ignore the port, RFC 5766 §8).
    permissions: HashMap<IpAddr, Instant>,
    /// Channel number → peer and expiry.
    channels: HashMap<u16, (SocketAddr, Instant)>,
}

impl Allocation {
    fn channel_of(&self, peer: SocketAddr) -> Option<u16> {
        let mut bound = self.channels.iter();
        bound.find_map(|(n, (p, _))| (*p == peer).then_some(*n))
    }
}

pub struct TurnServer {
    addr: SocketAddr,
    relay_ip: Ipv4Addr,
    username: String,
    realm: String,
    /// MD5(username:realm:password); None without a crypto provider (then nobody gets in).
    key: Option<Vec<u8>>,
    crypto: Option<Arc<dyn RTCCryptoProvider>>,
    /// Restarts so far. One nonce per server life: after a restart the clients' nonce is
    /// stale (438), as coturn's nonces die with its sessions.
    lives: u64,
    /// By client address: with one server address and UDP, that is the 5-tuple.
    allocations: HashMap<SocketAddr, Allocation>,
    /// Never reused, not even after a restart: a new allocation has a new relayed address,
    /// as with coturn's random ports, so a test can tell old from new.
    next_port: Option<u16>,
    allocations_made: u64,
    relayed: u64,
    refused: u64,
}

impl TurnServer {
    /// `addr`: where clients send; relayed addresses are `relay_ip:port`, ports from 50000 up.
    pub fn new(
        addr: SocketAddr,
        relay_ip: Ipv4Addr,
        username: &str,
        password: &str,
        realm: &str,
    ) -> TurnServer {
        let crypto = default_provider().ok();
        let [u, r, p] = [username, realm, password].map(String::from);
        let key = crypto
            .as_ref()
            .and_then(|c| MessageIntegrity::long_term_integrity_key(u, r, p, c.crypto()).ok());
        TurnServer {
            addr,
            relay_ip,
            username: username.into(),
            realm: realm.into(),
            key,
            crypto,
            lives: 0,
            allocations: HashMap::new(),
            next_port: Some(50_000),
            allocations_made: 0,
            relayed: 0,
            refused: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `addr` is the relayed address of an allocation (as of the last datagram: they
    /// expire lazily).
    pub fn is_relay(&self, addr: SocketAddr) -> bool {
        self.allocations.values().any(|a| a.relay == addr)
    }

    /// Forgets every allocation, permission and channel, and the nonce.
    pub fn restart(&mut self) {
        self.allocations.clear();
        self.lives += 1;
    }

    pub fn allocations_made(&self) -> u64 {
        self.allocations_made
    }

    pub fn relayed(&self) -> u64 {
        self.relayed
    }

    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// A datagram from a client (as the server sees its address) to `addr()`.
    pub fn handle_client(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Out {
        self.expire(now);
        if ChannelData::is_channel_data(payload) {
            return self.client_channel_data(from, payload);
        }
        let mut m = Message::new();
        m.raw = payload.to_vec();
        if !is_stun_message(payload) || m.decode().is_err() {
            self.refused += 1;
            return Vec::new();
        }
        match (m.typ.class, m.typ.method) {
            (CLASS_REQUEST, METHOD_BINDING) => {
                let attrs: Vec<Box<dyn Setter>> = vec![Box::new(mapped(from))];
                self.respond(from, &m, CLASS_SUCCESS_RESPONSE, attrs, false)
            }
            (CLASS_REQUEST, _) => self.authenticated(now, from, m),
            (CLASS_INDICATION, METHOD_SEND) => self.send_indication(from, &m),
            // Responses and other indications have no business here.
            _ => {
                self.refused += 1;
                Vec::new()
            }
        }
    }

    /// A datagram from a peer to relayed address `to`.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Out {
        self.expire(now);
        let Some((client, a)) = self.allocations.iter().find(|(_, a)| a.relay == to) else {
            return Vec::new();
        };
        // Without a permission for the peer's IP the relay drops it silently (§10.3).
        if !a.permissions.contains_key(&from.ip()) || payload.len() > MAX_RELAYED {
            return Vec::new();
        }
        let client = *client;
        let (data, (ip, port)) = (payload.to_vec(), (from.ip(), from.port()));
        let raw = if let Some(number) = a.channel_of(from) {
            let mut cd = ChannelData {
                data,
                number: ChannelNumber(number),
                raw: Vec::new(),
            };
            cd.encode();
            cd.raw
        } else {
            let setters: Vec<Box<dyn Setter>> = vec![
                Box::new(TransactionId::new()),
                Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
                Box::new(PeerAddress { ip, port }),
                Box::new(Data(data)),
            ];
            let mut m = Message::new();
            if m.build(&setters).is_err() {
                return Vec::new();
            }
            m.raw
        };
        self.relayed += 1;
        vec![(self.addr, client, raw)]
    }

    fn nonce(&self) -> String {
        format!("sim-turn-nonce-{}", self.lives)
    }

    fn expire(&mut self, now: Instant) {
        self.allocations.retain(|_, a| a.expires > now);
        for a in self.allocations.values_mut() {
            a.permissions.retain(|_, until| *until > now);
            a.channels.retain(|_, (_, until)| *until > now);
        }
    }

    /// Long-term credentials as coturn checks them (RFC 5389 §10.2.2), then the method.
    fn authenticated(&mut self, now: Instant, from: SocketAddr, mut m: Message) -> Out {
        let method = m.typ.method;
        // coturn refuses an Allocate from an address that holds an allocation made by another
        // request before it looks at credentials: 437 with no challenge, even to a client's
        // first, unauthenticated Allocate (a device that crashed and restarted on its port).
        let held = self.allocations.get(&from);
        if method == METHOD_ALLOCATE && held.is_some_and(|a| a.made_by != m.transaction_id) {
            return self.refuse(from, &m, CODE_ALLOC_MISMATCH, false);
        }
        // The first request of every client comes without: a challenge, not a refusal.
        if m.get(ATTR_MESSAGE_INTEGRITY).is_err() {
            return self.challenge(from, &m, CODE_UNAUTHORIZED);
        }
        let text = |attr| TextAttribute::get_from_as(&m, attr).ok().map(|t| t.text);
        let (Some(username), Some(_), Some(nonce)) =
            (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
        else {
            return self.refuse(from, &m, CODE_BAD_REQUEST, false);
        };
        if nonce != self.nonce() {
            // Not a refusal either: the client takes the new nonce and asks again.
            return self.challenge(from, &m, CODE_STALE_NONCE);
        }
        // A MESSAGE-INTEGRITY of the wrong size would make rtc-stun's check misread offsets.
        let intact = m.get(ATTR_MESSAGE_INTEGRITY).is_ok_and(|v| v.len() == 20);
        let verified = match (&self.key, &self.crypto) {
            (Some(key), Some(c)) if intact && username == self.username => {
                MessageIntegrity::check(&mut m, key, c.crypto()).is_ok()
            }
            _ => false,
        };
        if !verified {
            self.refused += 1;
            return self.challenge(from, &m, CODE_UNAUTHORIZED);
        }
        let reply = match method {
            METHOD_ALLOCATE => self.allocate(now, from, &m),
            METHOD_REFRESH => self.refresh(now, from, &m),
            METHOD_CREATE_PERMISSION => self.create_permission(now, from, &m),
            METHOD_CHANNEL_BIND => self.channel_bind(now, from, &m),
            _ => Err(CODE_BAD_REQUEST),
        };
        match reply {
            Ok(attrs) => self.respond(from, &m, CLASS_SUCCESS_RESPONSE, attrs, true),
            Err(code) => self.refuse(from, &m, code, true),
        }
    }

    fn allocate(&mut self, now: Instant, from: SocketAddr, m: &Message) -> Reply {
        if let Some(a) = self.allocations.get(&from) {
            if a.made_by != m.transaction_id {
                return Err(CODE_ALLOC_MISMATCH);
            }
            let left = a.expires.saturating_duration_since(now);
            return Ok(allocated(from, a.relay, left));
        }
        let mut transport = RequestedTransport::default();
        transport.get_from(m).map_err(|_| CODE_BAD_REQUEST)?;
        if transport.protocol != PROTO_UDP {
            return Err(CODE_UNSUPPORTED_TRANS_PROTO);
        }
        let port = self.next_port.ok_or(CODE_INSUFFICIENT_CAPACITY)?;
        self.next_port = port.checked_add(1);
        let relay = SocketAddr::from((self.relay_ip, port));
        let lifetime = lifetime(m);
        let allocation = Allocation {
            relay,
            expires: now + lifetime,
            made_by: m.transaction_id,
            permissions: HashMap::new(),
            channels: HashMap::new(),
        };
        self.allocations.insert(from, allocation);
        self.allocations_made += 1;
        Ok(allocated(from, relay, lifetime))
    }

    fn refresh(&mut self, now: Instant, from: SocketAddr, m: &Message) -> Reply {
        let a = self.allocations.get_mut(&from).ok_or(CODE_ALLOC_MISMATCH)?;
        let mut asked = Lifetime::default();
        let left = if asked.get_from(m).is_ok() && asked.0.is_zero() {
            self.allocations.remove(&from);
            Duration::ZERO
        } else {
            a.expires = now + lifetime(m);
            lifetime(m)
        };
        Ok(vec![Box::new(Lifetime(left))])
    }

    fn create_permission(&mut self, now: Instant, from: SocketAddr, m: &Message) -> Reply {
        let a = self.allocations.get_mut(&from).ok_or(CODE_ALLOC_MISMATCH)?;
        // All the peers a request names are installed, or none (§9.2).
        for p in peers(m)? {
            a.permissions.insert(p.ip(), now + PERMISSION_LIFETIME);
        }
        Ok(Vec::new())
    }

    fn channel_bind(&mut self, now: Instant, from: SocketAddr, m: &Message) -> Reply {
        let a = self.allocations.get_mut(&from).ok_or(CODE_ALLOC_MISMATCH)?;
        let mut number = ChannelNumber::default();
        let peers = peers(m)?;
        let (true, [peer]) = (
            number.get_from(m).is_ok() && number.valid(),
            peers.as_slice(),
        ) else {
            return Err(CODE_BAD_REQUEST);
        };
        // A number stays with its peer and a peer with its number while bound (§11.2).
        if a.channels.get(&number.0).is_some_and(|(p, _)| p != peer)
            || a.channel_of(*peer).is_some_and(|n| n != number.0)
        {
            return Err(CODE_BAD_REQUEST);
        }
        a.channels.insert(number.0, (*peer, now + CHANNEL_LIFETIME));
        a.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Ok(Vec::new())
    }

    fn send_indication(&mut self, from: SocketAddr, m: &Message) -> Out {
        let mut data = Data::default();
        let route = match (self.allocations.get(&from), peers(m), data.get_from(m)) {
            (Some(a), Ok(p), Ok(())) if p.len() == 1 && a.permissions.contains_key(&p[0].ip()) => {
                Some((a.relay, p[0]))
            }
            _ => None,
        };
        self.forward(route, data.0)
    }

    fn client_channel_data(&mut self, from: SocketAddr, payload: &[u8]) -> Out {
        let mut cd = ChannelData {
            raw: payload.to_vec(),
            ..Default::default()
        };
        let decoded = cd.decode().is_ok();
        let route = self
            .allocations
            .get(&from)
            .filter(|_| decoded)
            .and_then(|a| {
                let (peer, _) = a.channels.get(&cd.number.0)?;
                a.permissions
                    .contains_key(&peer.ip())
                    .then_some((a.relay, *peer))
            });
        self.forward(route, cd.data)
    }

    /// Data from the client out of relayed address to peer, if `route`d; dropped otherwise
    /// (data is never answered).
    fn forward(&mut self, route: Option<(SocketAddr, SocketAddr)>, data: Vec<u8>) -> Out {
        match route {
            Some((relay, peer)) => {
                self.relayed += 1;
                vec![(relay, peer, data)]
            }
            None => {
                self.refused += 1;
                Vec::new()
            }
        }
    }

    /// 401 or 438: REALM and a NONCE to authenticate with, no MESSAGE-INTEGRITY.
    fn challenge(&mut self, to: SocketAddr, m: &Message, code: ErrorCode) -> Out {
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(error_code(code)),
            Box::new(TextAttribute::new(ATTR_REALM, self.realm.clone())),
            Box::new(TextAttribute::new(ATTR_NONCE, self.nonce())),
        ];
        self.respond(to, m, CLASS_ERROR_RESPONSE, attrs, false)
    }

    fn refuse(&mut self, to: SocketAddr, m: &Message, code: ErrorCode, sign: bool) -> Out {
        self.refused += 1;
        let attrs: Vec<Box<dyn Setter>> = vec![Box::new(error_code(code))];
        self.respond(to, m, CLASS_ERROR_RESPONSE, attrs, sign)
    }

    /// A response to `m`: `attrs`, then MESSAGE-INTEGRITY with the long-term key if `sign`
    /// (the request was authenticated), then FINGERPRINT, as coturn answers.
    fn respond(
        &self,
        to: SocketAddr,
        m: &Message,
        class: MessageClass,
        attrs: Vec<Box<dyn Setter>>,
        sign: bool,
    ) -> Out {
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(m.transaction_id),
            Box::new(MessageType::new(m.typ.method, class)),
        ];
        setters.extend(attrs);
        if let (true, Some(key), Some(c)) = (sign, &self.key, &self.crypto) {
            setters.push(Box::new(MessageIntegrity::new_raw_integrity_with_provider(
                key.clone(),
                c.crypto(),
            )));
        }
        setters.push(Box::new(FINGERPRINT));
        let mut response = Message::new();
        match response.build(&setters) {
            Ok(()) => vec![(self.addr, to, response.raw)],
            Err(_) => Vec::new(),
        }
    }
}

/// What a successful Allocate says (also again, to its retransmission).
fn allocated(from: SocketAddr, relay: SocketAddr, left: Duration) -> Vec<Box<dyn Setter>> {
    let (ip, port) = (relay.ip(), relay.port());
    vec![
        Box::new(RelayedAddress { ip, port }),
        Box::new(mapped(from)),
        Box::new(Lifetime(left)),
    ]
}

fn mapped(a: SocketAddr) -> XorMappedAddress {
    XorMappedAddress {
        ip: a.ip(),
        port: a.port(),
    }
}

/// Every XOR-PEER-ADDRESS of `m` (at least one); rtc-stun's getter reads only the first.
/// IPv6 peers cannot be reached from an IPv4 relay (443).
fn peers(m: &Message) -> Result<Vec<SocketAddr>, ErrorCode> {
    let mut peers = Vec::new();
    for a in m
        .attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
    {
        peers.push(xor_address(&a.value, &m.transaction_id).ok_or(CODE_BAD_REQUEST)?);
    }
    match peers.iter().any(|p| p.is_ipv6()) {
        true => Err(CODE_PEER_ADDR_FAMILY_MISMATCH),
        false if peers.is_empty() => Err(CODE_BAD_REQUEST),
        false => Ok(peers),
    }
}

/// The lifetime a request asks for (LIFETIME), within coturn's bounds; 600 s if it asks for
/// none (or for 0, which only a Refresh may use to delete).
fn lifetime(m: &Message) -> Duration {
    let mut asked = Lifetime::default();
    match asked.get_from(m) {
        Ok(()) if !asked.0.is_zero() => asked.0.min(MAX_LIFETIME),
        _ => DEFAULT_LIFETIME,
    }
}

fn error_code(code: ErrorCode) -> ErrorCodeAttribute {
    ErrorCodeAttribute {
        code,
        reason: format!("error {}", code.0).into_bytes(),
    }
}

/// Decodes one XOR-PEER-ADDRESS value.
fn xor_address(v: &[u8], id: &TransactionId) -> Option<SocketAddr> {
    let [_, family, p0, p1, ip @ ..] = v else {
        return None;
    };
    let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mask = MAGIC_COOKIE.to_be_bytes().into_iter().chain(id.0);
    let x: Vec<u8> = ip.iter().zip(mask).map(|(b, k)| b ^ k).collect();
    let ip: IpAddr = match (family, ip.len()) {
        (1, 4) => <[u8; 4]>::try_from(x.as_slice()).ok()?.into(),
        (2, 16) => <[u8; 16]>::try_from(x.as_slice()).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
