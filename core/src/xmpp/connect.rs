//! Connecting and logging in: TCP, STARTTLS with a certificate verified against our own
//! rustls configuration, SASL (`sasl.rs`), and the stream restart. Returns a stream
//! ready for resource binding, which `StanzaStream` performs.
//!
//! Written against tokio-xmpp's building blocks rather than its built-in connector because
//! that one builds its own TLS configuration (no private CA, no platform verifier) and
//! always sends channel binding, which makes servers without -PLUS mechanisms fall back to
//! PLAIN silently.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufRead, BufStream};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_rustls::TlsConnector;
use tokio_xmpp::error::{Error as XmppError, ProtocolError};

use super::csi::{ClientIndicator, CsiStream, NS_CSI};
use super::discovery::{self, Dns, Security, Target};
use super::sasl::{authenticate, Credentials};
pub use super::trust::{tls_config, CertificateProblem, TlsTrust};
use tokio_xmpp::stanzastream::Connection;
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, InitiatingStream, ReadError, StreamHeader, Timeouts,
    XmppStream, XmppStreamElement,
};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::stream_features::StreamFeatures;
use xmpp_parsers::{ns, starttls, stream_error};

use crate::protect::SocketProtector;

/// Where and how to log in. (`Debug` leaves the password out.)
#[derive(Clone)]
pub struct XmppAccount {
    pub jid: BareJid,
    pub credentials: Credentials,
    /// Resource to request; unique per device install.
    pub resource: String,
    /// Host and port to connect to (STARTTLS) instead of looking the domain's server up.
    pub server: Option<(String, u16)>,
    /// Who answers the DNS look-ups (SRV records, host names).
    pub dns: Dns,
    pub trust: TlsTrust,
    /// Called with the TCP socket's fd before it connects (Android `VpnService.protect`).
    pub protect: Option<SocketProtector>,
}

impl std::fmt::Debug for XmppAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppAccount")
            .field("jid", &self.jid)
            .field("credentials", &self.credentials)
            .field("resource", &self.resource)
            .field("server", &self.server)
            .field("dns", &self.dns)
            .field("trust", &self.trust)
            .field("protect", &self.protect)
            .finish()
    }
}

/// Why a login attempt failed, in terms a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginFailure {
    #[error("the server rejected the user name or password")]
    BadCredentials,
    /// The sign-in token expired, was revoked or belongs to someone else: only a new one helps.
    #[error("the server rejected the sign-in token (expired or revoked): sign in again")]
    TokenRejected,
    #[error("the server's certificate is not trusted: {0}")]
    Certificate(CertificateProblem),
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("the server does not offer a usable secure login: {0}")]
    Unsupported(String),
    /// The server answered for another domain (a wrong SRV record, a hosting change).
    #[error("the server does not serve this account's domain")]
    NotThisDomain,
    #[error("the connection failed: {0}")]
    Other(String),
    #[error("the platform refused to keep the XMPP connection out of the VPN")]
    Protect,
}

impl LoginFailure {
    /// Retrying cannot help until the user changes something.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LoginFailure::BadCredentials | LoginFailure::TokenRejected
        )
    }

    /// How much a failure tells the user, when several targets failed differently.
    fn rank(&self) -> u8 {
        match self {
            LoginFailure::Unreachable(_) => 0,
            LoginFailure::Other(_) => 1,
            LoginFailure::Unsupported(_) | LoginFailure::NotThisDomain => 2,
            LoginFailure::Certificate(_) => 3,
            LoginFailure::BadCredentials | LoginFailure::TokenRejected | LoginFailure::Protect => 4,
        }
    }
}

impl From<XmppError> for LoginFailure {
    fn from(e: XmppError) -> LoginFailure {
        match e {
            XmppError::Protocol(ProtocolError::NoTls) => {
                LoginFailure::Unsupported("no STARTTLS".into())
            }
            XmppError::StreamError(ref received)
                if received.0.condition == stream_error::DefinedCondition::HostUnknown =>
            {
                LoginFailure::NotThisDomain
            }
            XmppError::Io(io) => {
                if io.get_ref().is_some_and(|e| e.is::<ProtectRefused>()) {
                    return LoginFailure::Protect;
                }
                if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                    return match tls {
                        rustls::Error::InvalidCertificate(_) => {
                            LoginFailure::Certificate(CertificateProblem::from_tls(tls))
                        }
                        // The server has no certificate for the name we asked for (SNI): it
                        // does not serve the domain (prosody's answer on direct TLS).
                        rustls::Error::AlertReceived(
                            rustls::AlertDescription::UnrecognisedName,
                        ) => LoginFailure::NotThisDomain,
                        // An alert, or something that does not speak TLS: not a certificate.
                        other => LoginFailure::Other(format!("TLS: {other}")),
                    };
                }
                match io.kind() {
                    io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::NotFound => LoginFailure::Unreachable(io.to_string()),
                    _ => LoginFailure::Other(io.to_string()),
                }
            }
            other => LoginFailure::Other(other.to_string()),
        }
    }
}

/// Marks a protect refusal inside an io::Error, so it can be told apart from network errors.
#[derive(Debug, thiserror::Error)]
#[error("socket protection refused")]
struct ProtectRefused;

/// Connects to the first reachable address of `host`, protecting each socket before use.
async fn connect_tcp(
    dns: &Dns,
    host: &str,
    port: u16,
    protect: Option<&SocketProtector>,
) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in discovery::addresses(dns, host, port).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(protect) = protect {
            if !protect.protect(socket.as_raw_fd()) {
                return Err(io::Error::other(ProtectRefused));
            }
        }
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Longest one target may take to connect and secure its stream: a target that drops
/// packets silently must leave time for the next one.
const TARGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);

/// One login attempt. The returned connection is authenticated but not yet bound.
/// `indicator`: the client state the connection tells the server once bound (XEP-0352);
/// `ClientIndicator::default()` tells nothing.
pub async fn login(
    account: &XmppAccount,
    tls: Arc<ClientConfig>,
    timeouts: Timeouts,
    indicator: &ClientIndicator,
) -> Result<Connection, LoginFailure> {
    let targets = match &account.server {
        Some((host, port)) => vec![Target {
            host: host.clone(),
            port: *port,
            security: Security::StartTls,
        }],
        None => discovery::discover(&account.dns, account.jid.domain().as_str()).await,
    };
    // The next target is tried after a failure that is the target's (unreachable, a
    // certificate not for this domain, no TLS); the first failure the user must act on ends
    // the attempt. What is reported is the most telling failure seen.
    let mut failure: Option<LoginFailure> = None;
    for target in targets {
        let attempt = tokio::time::timeout(
            TARGET_TIMEOUT,
            secure_stream(account, tls.clone(), timeouts, &target, indicator),
        );
        let secured = match attempt.await {
            Ok(Ok(secured)) => secured,
            result => {
                let e = match result {
                    Ok(Err(e)) => LoginFailure::from(e),
                    _ => LoginFailure::Unreachable(format!(
                        "{}:{} did not answer within {} s",
                        target.host,
                        target.port,
                        TARGET_TIMEOUT.as_secs()
                    )),
                };
                tracing::debug!(host = %target.host, port = target.port, error = %e, "XMPP server target");
                if matches!(e, LoginFailure::Protect) {
                    return Err(e);
                }
                failure = Some(match failure {
                    Some(before) if before.rank() >= e.rank() => before,
                    _ => e,
                });
                continue;
            }
        };
        return log_in(account, secured).await;
    }
    Err(failure.unwrap_or_else(|| LoginFailure::Unreachable("no server for the domain".into())))
}

/// SASL and the stream restart on a secured stream.
async fn log_in(
    account: &XmppAccount,
    (features, stream): (StreamFeatures, XmppStream<TlsBufStream>),
) -> Result<Connection, LoginFailure> {
    let stream = authenticate(
        stream,
        &features.sasl_mechanisms,
        &account.jid,
        &account.credentials,
    )
    .await?;
    bind_ready(account, stream)
        .await
        .map_err(LoginFailure::from)
}

fn header(account: &XmppAccount) -> StreamHeader<'static> {
    StreamHeader {
        to: Some(Cow::Owned(account.jid.domain().as_str().to_string())),
        from: None,
        id: None,
    }
}

/// TCP, TLS verified for the JID's domain (directly, or after STARTTLS), and the secured
/// stream's features.
async fn secure_stream(
    account: &XmppAccount,
    tls: Arc<ClientConfig>,
    timeouts: Timeouts,
    target: &Target,
    indicator: &ClientIndicator,
) -> Result<(StreamFeatures, XmppStream<TlsBufStream>), XmppError> {
    let domain = account.jid.domain().as_str().to_string();
    let header = || header(account);
    let tcp = connect_tcp(
        &account.dns,
        &target.host,
        target.port,
        account.protect.as_ref(),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(domain.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls_stream = if target.security == Security::DirectTls {
        // XEP-0368: the certificate is the domain's (SNI), ALPN says what we speak.
        let mut direct = (*tls).clone();
        direct.alpn_protocols = vec![b"xmpp-client".to_vec()];
        TlsConnector::from(Arc::new(direct))
            .connect(server_name, tcp)
            .await?
    } else {
        let tcp = starttls(tcp, header(), timeouts).await?;
        TlsConnector::from(tls).connect(server_name, tcp).await?
    };
    Ok(initiate_stream(
        CsiStream::new(BufStream::new(tls_stream), indicator),
        ns::JABBER_CLIENT,
        header(),
        timeouts,
    )
    .await?
    .recv_features::<FallibleStreamElement>()
    .await?)
}

/// A plain stream only to ask for STARTTLS; returns the connection to secure.
async fn starttls(
    tcp: TcpStream,
    header: StreamHeader<'static>,
    timeouts: Timeouts,
) -> Result<TcpStream, XmppError> {
    let (features, mut plain) =
        initiate_stream(BufStream::new(tcp), ns::JABBER_CLIENT, header, timeouts)
            .await?
            .recv_features::<FallibleStreamElement>()
            .await?;
    if !features.can_starttls() {
        return Err(ProtocolError::NoTls.into());
    }
    plain
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await?;
    loop {
        match next_element(&mut plain).await? {
            Some(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_))) => break,
            Some(XmppStreamElement::Starttls(starttls::Nonza::Failure(_))) => {
                return Err(ProtocolError::NoTls.into())
            }
            _ => {}
        }
    }
    Ok(plain.into_inner().into_inner())
}

/// The next element while a stream is being set up (STARTTLS, SASL): `None` on a soft read
/// timeout (nothing yet); the stream's end and unreadable input are errors.
pub(super) async fn next_element<S: AsyncBufRead + Unpin>(
    stream: &mut XmppStream<S>,
) -> Result<Option<XmppStreamElement>, XmppError> {
    match stream
        .next()
        .await
        .map(|r| r.and_then(|e| e.into_read_error()))
    {
        Some(Ok(element)) => Ok(Some(element)),
        Some(Err(ReadError::SoftTimeout)) => Ok(None),
        Some(Err(ReadError::HardError(e))) => Err(e.into()),
        Some(Err(ReadError::ParseError(e))) => {
            Err(io::Error::new(io::ErrorKind::InvalidData, e).into())
        }
        None | Some(Err(ReadError::StreamFooterReceived)) => Err(XmppError::Disconnected),
    }
}

type TlsBufStream = CsiStream<BufStream<tokio_rustls::client::TlsStream<TcpStream>>>;

/// The stream restart after SASL: the connection `StanzaStream` binds.
async fn bind_ready(
    account: &XmppAccount,
    stream: InitiatingStream<TlsBufStream>,
) -> Result<Connection, XmppError> {
    let stream = stream.send_header(header(account)).await?;
    let (features, stream) = stream.recv_features::<FallibleStreamElement>().await?;
    // The connection tells the client's state only to a server that offers to hear it.
    let csi = features.others.iter().any(|f| f.is("csi", NS_CSI));
    stream.get_stream().set_offered(csi);
    let identity: FullJid = account.jid.with_resource_str(&account.resource)?;
    Ok(Connection {
        stream: stream.box_stream(),
        features,
        identity: Jid::from(identity),
    })
}
