//! Sign-in tokens for the apps: the password is traded once for an OAuth access token (the
//! app keeps only the token, in the Keystore or Keychain, and passes it as
//! `SignIn::Token`). The browser flow hands the app a token by its redirect instead (stock
//! ejabberd), or a code the app trades for one with its PKCE verifier (an authorization
//! server that ejabberd asks about tokens).

use socialvpn_core::config::parse_host_port;
use socialvpn_core::oauth::{
    browser_sign_in, default_authorize_url, default_token_url, finish_browser_sign_in,
    password_grant, AccessToken, BrowserFlow, CodeExchange, OAuthError, Reach,
};
use socialvpn_core::xmpp::connect::TlsTrust;
use socialvpn_core::xmpp::discovery::Dns;
use socialvpn_core::xmpp::BareJid;
use std::path::PathBuf;

/// An access token and when it expires (seconds since the epoch; none: not said).
#[derive(Clone, uniffi::Record)]
pub struct SignInToken {
    pub token: String,
    pub expires_at: Option<u64>,
}

/// Why no token came back; each a different message on the sign-in screen.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SignInError {
    #[error("'{jid}' is not a valid XMPP address")]
    InvalidJid { jid: String },
    #[error("{reason}")]
    BadUrl { reason: String },
    /// The server said no to the user name or password.
    #[error("{reason}")]
    Refused { reason: String },
    #[error("{reason}")]
    Unreachable { reason: String },
    /// No answer in time.
    #[error("{reason}")]
    TimedOut { reason: String },
    /// The server hung up without answering: ejabberd's way of saying "wrong password".
    #[error("{reason}")]
    NoAnswer { reason: String },
    /// The redirect belongs to no sign-in this app started (another `state`): ignore it.
    #[error("{reason}")]
    ForeignState { reason: String },
    #[error("{reason}")]
    Certificate { reason: String },
    #[error("{reason}")]
    BadAnswer { reason: String },
}

impl From<OAuthError> for SignInError {
    fn from(e: OAuthError) -> SignInError {
        let reason = e.to_string();
        match e {
            OAuthError::BadUrl(_) => SignInError::BadUrl { reason },
            OAuthError::Refused(_) => SignInError::Refused { reason },
            OAuthError::Unreachable(_) => SignInError::Unreachable { reason },
            OAuthError::TimedOut => SignInError::TimedOut { reason },
            OAuthError::NoAnswer => SignInError::NoAnswer { reason },
            OAuthError::ForeignState => SignInError::ForeignState { reason },
            OAuthError::Certificate(_) => SignInError::Certificate { reason },
            OAuthError::BadAnswer(_) => SignInError::BadAnswer { reason },
        }
    }
}

/// An authorization server with the authorization-code grant and PKCE: its token endpoint
/// and the app's client id there.
#[derive(Clone, uniffi::Record)]
pub struct CodeFlow {
    pub token_url: String,
    pub client_id: String,
}

/// A browser sign-in in progress: open `url` (Custom Tabs, ASWebAuthenticationSession) and
/// keep the whole record (with its secret verifier, encrypted like a token) until the
/// redirect comes back, even across a process restart.
#[derive(Clone, uniffi::Record)]
pub struct BrowserSignIn {
    pub url: String,
    pub state: String,
    pub redirect_uri: String,
    /// The code flow's token endpoint, client id and PKCE verifier (none: implicit flow).
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub code_verifier: Option<String>,
}

/// Starts the browser sign-in at `authorize_url` (none: stock ejabberd's
/// `https://<domain>:5443/oauth/authorization_token`, implicit flow); with `code_flow`, the
/// authorization code with PKCE of that server. The server redirects to `redirect_uri` (the
/// app's intent filter or callback scheme).
#[uniffi::export]
pub fn oauth_browser_sign_in(
    jid: String,
    authorize_url: Option<String>,
    redirect_uri: String,
    code_flow: Option<CodeFlow>,
) -> Result<BrowserSignIn, SignInError> {
    let bare = parse_jid(&jid)?;
    let url = authorize_url.unwrap_or_else(|| default_authorize_url(&bare));
    let flow = match code_flow {
        Some(c) => BrowserFlow::CodeWithPkce {
            token_url: c.token_url,
            client_id: c.client_id,
        },
        None => BrowserFlow::Implicit,
    };
    let started = browser_sign_in(&url, &redirect_uri, &flow)?;
    let exchange = started.exchange;
    Ok(BrowserSignIn {
        url: started.url,
        state: started.state,
        redirect_uri,
        token_url: exchange.as_ref().map(|x| x.token_url.clone()),
        client_id: exchange.as_ref().map(|x| x.client_id.clone()),
        code_verifier: exchange.map(|x| x.verifier),
    })
}

/// The token the redirect that ended `sign_in` brings: in the redirect (implicit flow), or
/// traded for its code (code flow; then it blocks for up to 20 s: call it off the UI thread).
/// `ca_file` and `dns_servers` as in `VpnConfig`. A redirect with another state is
/// `ForeignState`: ignore it.
#[uniffi::export]
pub fn oauth_token_from_redirect(
    sign_in: BrowserSignIn,
    redirect: String,
    ca_file: Option<String>,
    dns_servers: Vec<String>,
) -> Result<SignInToken, SignInError> {
    let exchange = match (sign_in.token_url, sign_in.client_id, sign_in.code_verifier) {
        (Some(token_url), Some(client_id), Some(verifier)) => Some(CodeExchange {
            token_url,
            client_id,
            redirect_uri: sign_in.redirect_uri,
            verifier,
        }),
        (None, None, None) => None,
        _ => {
            return Err(SignInError::BadAnswer {
                reason: "the kept sign-in is incomplete: its token URL, client id and \
                         verifier go together"
                    .into(),
            })
        }
    };
    let pending = socialvpn_core::oauth::BrowserSignIn {
        url: sign_in.url,
        state: sign_in.state,
        exchange,
    };
    let reach = reach(ca_file, &dns_servers, None)?;
    let token = blocking(finish_browser_sign_in(&pending, &redirect, &reach))?;
    Ok(token.into())
}

/// How the sign-in server is reached, from the settings `VpnConfig` has too.
fn reach(
    ca_file: Option<String>,
    dns_servers: &[String],
    connect_to: Option<String>,
) -> Result<Reach, SignInError> {
    let servers = dns_servers
        .iter()
        .map(|s| {
            s.trim().parse().map_err(|_| SignInError::BadUrl {
                reason: format!("'{s}' is not a name server's IP address"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reach {
        trust: match ca_file {
            Some(path) => TlsTrust::CaFile(PathBuf::from(path)),
            None => TlsTrust::Platform,
        },
        dns: Dns { servers },
        connect_to,
    })
}

/// Runs a sign-in exchange to its end on a runtime of its own (the engine's may not run yet).
fn blocking(
    exchange: impl std::future::Future<Output = Result<AccessToken, OAuthError>>,
) -> Result<AccessToken, SignInError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SignInError::Unreachable {
            reason: format!("cannot start a runtime: {e}"),
        })?;
    Ok(runtime.block_on(exchange)?)
}

impl From<AccessToken> for SignInToken {
    fn from(token: AccessToken) -> SignInToken {
        SignInToken {
            expires_at: token.expires_at_unix(),
            token: token.secret,
        }
    }
}

fn parse_jid(jid: &str) -> Result<BareJid, SignInError> {
    jid.parse()
        .ok()
        .filter(|j: &BareJid| j.node().is_some())
        .ok_or_else(|| SignInError::InvalidJid {
            jid: jid.to_string(),
        })
}

/// Trades `password` for a token at `token_url` (none: ejabberd's
/// `https://<domain>:5443/oauth/token`). `server` is the account's `host:port` override
/// (its host then serves the URL), `ca_file` and `dns_servers` as in `VpnConfig`. Blocks
/// for up to 20 s: call it off the UI thread.
#[uniffi::export]
pub fn oauth_password_grant(
    jid: String,
    password: String,
    token_url: Option<String>,
    server: Option<String>,
    ca_file: Option<String>,
    dns_servers: Vec<String>,
) -> Result<SignInToken, SignInError> {
    let bare = parse_jid(&jid)?;
    let url = token_url.unwrap_or_else(|| default_token_url(&bare));
    let connect_to = server
        .as_deref()
        .and_then(|s| parse_host_port(s, Some(5222)))
        .map(|(host, _)| host);
    let reach = reach(ca_file, &dns_servers, connect_to)?;
    let token = blocking(password_grant(&bare, &password, &url, &reach))?;
    Ok(token.into())
}
