//! Sign-in tokens for the apps: the password is traded once for an OAuth access token (the
//! app keeps only the token, in the Keystore or Keychain, and passes it as
//! `SignIn::Token`). The browser flow hands the app a token by its redirect instead.

use socialvpn_core::config::parse_host_port;
use socialvpn_core::oauth::{
    browser_sign_in, default_authorize_url, default_token_url, password_grant, token_from_redirect,
    AccessToken, OAuthError,
};
use socialvpn_core::xmpp::connect::TlsTrust;
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

/// A browser sign-in in progress: open `url` (Custom Tabs, ASWebAuthenticationSession); keep
/// `state` for the redirect.
#[derive(Clone, uniffi::Record)]
pub struct BrowserSignIn {
    pub url: String,
    pub state: String,
}

/// Starts the browser sign-in (the OAuth implicit flow stock ejabberd offers) at
/// `authorize_url` (none: `https://<domain>:5443/oauth/authorization_token`); the server
/// redirects to `redirect_uri` (the app's intent filter or callback scheme).
#[uniffi::export]
pub fn oauth_browser_sign_in(
    jid: String,
    authorize_url: Option<String>,
    redirect_uri: String,
) -> Result<BrowserSignIn, SignInError> {
    let bare = parse_jid(&jid)?;
    let url = authorize_url.unwrap_or_else(|| default_authorize_url(&bare));
    let started = browser_sign_in(&url, &redirect_uri)?;
    Ok(BrowserSignIn {
        url: started.url,
        state: started.state,
    })
}

/// The token in the redirect that ended the browser sign-in started with `state`.
#[uniffi::export]
pub fn oauth_token_from_redirect(
    redirect: String,
    state: String,
) -> Result<SignInToken, SignInError> {
    Ok(token_from_redirect(&redirect, &state)?.into())
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
/// (its host then serves the URL), `ca_file` as in `VpnConfig`. Blocks for up to 20 s: call
/// it off the UI thread.
#[uniffi::export]
pub fn oauth_password_grant(
    jid: String,
    password: String,
    token_url: Option<String>,
    server: Option<String>,
    ca_file: Option<String>,
) -> Result<SignInToken, SignInError> {
    let bare = parse_jid(&jid)?;
    let url = token_url.unwrap_or_else(|| default_token_url(&bare));
    let trust = match ca_file {
        Some(path) => TlsTrust::CaFile(PathBuf::from(path)),
        None => TlsTrust::Platform,
    };
    let connect_to = server
        .as_deref()
        .and_then(|s| parse_host_port(s, Some(5222)))
        .map(|(host, _)| host);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SignInError::Unreachable {
            reason: format!("cannot start a runtime: {e}"),
        })?;
    let token = runtime.block_on(password_grant(
        &bare,
        &password,
        &url,
        &trust,
        connect_to.as_deref(),
    ))?;
    Ok(token.into())
}
