//! OAuth sign-in: trading a password once for an access token (the resource-owner password
//! grant, which ejabberd serves at `/oauth/token`), so that only the token is kept. The
//! token then logs in through SASL (`xmpp::sasl`); a refused one is
//! `LoginFailure::TokenRejected`.
//!
//! The request goes through the `oauth2` crate over reqwest with our own rustls
//! configuration (the account's CA file or the public roots), no redirects, and a bound on
//! the whole exchange. ejabberd answers a wrong password by closing the connection without a
//! word (`NoAnswer`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, ClientId, CsrfToken, RedirectUrl, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, Scope, TokenResponse, TokenUrl,
};
use xmpp_parsers::jid::BareJid;

use crate::xmpp::connect::{tls_config, TlsTrust};

/// The scope ejabberd requires of a token used for SASL.
pub const SASL_SCOPE: &str = "sasl_auth";
/// The whole exchange (connect, TLS, request, answer) must end within this.
pub const GRANT_TIMEOUT: Duration = Duration::from_secs(20);
/// The port of ejabberd's HTTPS listener in its stock configuration.
const DEFAULT_HTTPS_PORT: u16 = 5443;

/// Where to ask for a token when the user names no token endpoint: ejabberd's OAuth handler
/// on its stock HTTPS port of the account's domain.
pub fn default_token_url(jid: &BareJid) -> String {
    format!(
        "https://{}:{DEFAULT_HTTPS_PORT}/oauth/token",
        jid.domain().as_str()
    )
}

/// Where the browser flow starts when the user names no authorization endpoint: ejabberd's
/// login form on its stock HTTPS port of the account's domain.
pub fn default_authorize_url(jid: &BareJid) -> String {
    format!(
        "https://{}:{DEFAULT_HTTPS_PORT}/oauth/authorization_token",
        jid.domain().as_str()
    )
}

/// A browser sign-in in progress: the app opens `url`; the redirect comes back to it with
/// the token and must carry `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSignIn {
    pub url: String,
    pub state: String,
}

/// Starts the browser sign-in (OAuth implicit flow, what stock ejabberd offers): the URL to
/// open and the unguessable state the redirect to `redirect_uri` must bring back.
pub fn browser_sign_in(
    authorize_url: &str,
    redirect_uri: &str,
) -> Result<BrowserSignIn, OAuthError> {
    let auth = AuthUrl::new(authorize_url.to_string())
        .map_err(|_| OAuthError::BadUrl(authorize_url.to_string()))?;
    if auth.url().scheme() != "https" {
        return Err(OAuthError::BadUrl(authorize_url.to_string()));
    }
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|_| OAuthError::BadUrl(redirect_uri.to_string()))?;
    // ejabberd 23.01 takes no client id (a non-empty one crashes its handler).
    let client = BasicClient::new(ClientId::new(String::new()))
        .set_auth_uri(auth)
        .set_redirect_uri(redirect);
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new(SASL_SCOPE.into()))
        .use_implicit_flow()
        .url();
    Ok(BrowserSignIn {
        url: url.to_string(),
        state: state.secret().clone(),
    })
}

/// The token in the redirect that ended a browser sign-in (in its query, as ejabberd puts
/// it, or its fragment, as the implicit flow's RFC does). A redirect with another `state`
/// was not asked for by this sign-in and is refused.
pub fn token_from_redirect(redirect: &str, state: &str) -> Result<AccessToken, OAuthError> {
    let url = url::Url::parse(redirect).map_err(|_| OAuthError::BadUrl(redirect.to_string()))?;
    let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if let Some(fragment) = url.fragment() {
        params.extend(url::form_urlencoded::parse(fragment.as_bytes()).into_owned());
    }
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if get("state") != Some(state) {
        return Err(OAuthError::ForeignState);
    }
    if let Some(error) = get("error") {
        return Err(OAuthError::Refused(error.chars().take(80).collect()));
    }
    let secret = get("access_token")
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| OAuthError::BadAnswer("the redirect carries no access token".into()))?;
    let expires_at = get("expires_in")
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|secs| expiry(Duration::from_secs(secs)));
    Ok(AccessToken {
        secret: secret.to_string(),
        expires_at,
    })
}

/// When a token valid `lifetime` expires; a server's absurd lifetime is no expiry at all
/// (never an overflow).
fn expiry(lifetime: Duration) -> Option<SystemTime> {
    const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
    SystemTime::now().checked_add(lifetime.min(TEN_YEARS))
}

/// An access token as the server issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub secret: String,
    /// When the server says it expires (none: it did not say).
    pub expires_at: Option<SystemTime>,
}

impl AccessToken {
    /// When it expires, in seconds since the epoch (none: the server did not say).
    pub fn expires_at_unix(&self) -> Option<u64> {
        self.expires_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no token came back, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("'{0}' is not an https:// token endpoint address")]
    BadUrl(String),
    #[error("the sign-in server refused the user name or password ({0})")]
    Refused(String),
    #[error("cannot reach the sign-in server: {0}")]
    Unreachable(String),
    #[error("the sign-in server did not answer within {} s", GRANT_TIMEOUT.as_secs())]
    TimedOut,
    /// The request went out and the server hung up without a word: what ejabberd does with
    /// a wrong user name or password.
    #[error(
        "the sign-in server closed the connection without answering (ejabberd does so for a \
         wrong user name or password)"
    )]
    NoAnswer,
    /// A redirect that does not belong to the sign-in in progress (another `state`).
    #[error("the sign-in answer was not asked for by this sign-in")]
    ForeignState,
    #[error("the sign-in server's certificate is not trusted: {0}")]
    Certificate(String),
    #[error("the sign-in server's answer is not an OAuth token: {0}")]
    BadAnswer(String),
}

/// Trades `password` for an access token at `token_url`. `connect_to`: the host that
/// serves the URL's host name (the account's configured XMPP server, when the URL names the
/// JID's domain and that domain does not resolve to it); the certificate is still checked
/// for the URL's host name.
pub async fn password_grant(
    jid: &BareJid,
    password: &str,
    token_url: &str,
    trust: &TlsTrust,
    connect_to: Option<&str>,
) -> Result<AccessToken, OAuthError> {
    let bad_url = || OAuthError::BadUrl(token_url.to_string());
    let url = TokenUrl::new(token_url.to_string()).map_err(|_| bad_url())?;
    if url.url().scheme() != "https" {
        return Err(bad_url());
    }
    let host = url.url().host_str().ok_or_else(bad_url)?.to_string();
    let port = url.url().port_or_known_default().ok_or_else(bad_url)?;
    let tls = tls_config(trust).map_err(|e| OAuthError::Certificate(e.to_string()))?;
    let mut http = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        // The token endpoint answers itself; a redirect could carry the password elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(GRANT_TIMEOUT);
    if let Some(server) = connect_to.filter(|s| *s != host) {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((server, port))
            .await
            .map_err(|e| OAuthError::Unreachable(format!("{server}: {e}")))?
            .collect();
        http = http.resolve_to_addrs(&host, &addrs);
    }
    let http = http
        .build()
        .map_err(|e| OAuthError::Certificate(e.to_string()))?;
    // ejabberd 23.01 takes no client id (a non-empty one crashes its handler).
    let client = BasicClient::new(ClientId::new(String::new())).set_token_uri(url);
    let username = ResourceOwnerUsername::new(jid.to_string());
    let password = ResourceOwnerPassword::new(password.to_string());
    let request = client
        .exchange_password(&username, &password)
        .add_scope(Scope::new(SASL_SCOPE.into()))
        .request_async(&http);
    let response = match tokio::time::timeout(GRANT_TIMEOUT, request).await {
        Err(_) => return Err(OAuthError::TimedOut),
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(grant_error(e)),
    };
    let secret = response.access_token().secret().clone();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(OAuthError::BadAnswer(
            "the access token is empty or not printable".into(),
        ));
    }
    Ok(AccessToken {
        secret,
        expires_at: response.expires_in().and_then(expiry),
    })
}

fn grant_error(
    e: RequestTokenError<
        oauth2::HttpClientError<reqwest::Error>,
        oauth2::basic::BasicErrorResponse,
    >,
) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(answer) => OAuthError::Refused(answer.to_string()),
        RequestTokenError::Request(request) => {
            let text = error_chain(&request);
            if text.contains("certificate") || text.contains("UnknownIssuer") {
                OAuthError::Certificate(text)
            } else if text.contains("timed out") {
                OAuthError::TimedOut
            } else if text.contains("peer closed connection")
                || text.contains("connection closed before message completed")
            {
                OAuthError::NoAnswer
            } else {
                OAuthError::Unreachable(text)
            }
        }
        // The body is left out: a token answer the parser refused may still carry a token.
        RequestTokenError::Parse(e, body) => OAuthError::BadAnswer(format!(
            "{e} ({} bytes{})",
            body.len(),
            if body.starts_with(b"<") { ", HTML" } else { "" }
        )),
        RequestTokenError::Other(text) => OAuthError::BadAnswer(text),
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says
/// nothing).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_endpoint_is_ejabberds_on_the_accounts_domain() {
        let jid: BareJid = "alice@example.org".parse().unwrap();
        assert_eq!(
            default_token_url(&jid),
            "https://example.org:5443/oauth/token"
        );
    }

    #[test]
    fn the_browser_flow_checks_the_state_and_reads_the_token() {
        let start = browser_sign_in(
            "https://example.org:5443/oauth/authorization_token",
            "http://127.0.0.1:8765/callback",
        )
        .unwrap();
        assert!(start.url.contains("response_type=token"), "{}", start.url);
        assert!(start.url.contains("scope=sasl_auth"), "{}", start.url);
        assert!(start.state.len() >= 16);
        let back = format!(
            "http://127.0.0.1:8765/callback?access_token=abc.DEF&token_type=bearer&\
             expires_in=3600&scope=sasl_auth&state={}",
            start.state
        );
        let token = token_from_redirect(&back, &start.state).unwrap();
        assert_eq!(token.secret, "abc.DEF");
        assert!(token.expires_at.is_some());
        // An absurd lifetime is capped, not an overflow.
        let forever = back.replace("expires_in=3600", "expires_in=18446744073709551615");
        assert!(token_from_redirect(&forever, &start.state).is_ok());
        // In the fragment, as RFC 6749 puts it.
        let frag = format!(
            "http://127.0.0.1:8765/cb#access_token=t1&state={}",
            start.state
        );
        assert_eq!(
            token_from_redirect(&frag, &start.state).unwrap().secret,
            "t1"
        );
        // Another sign-in's answer, a refusal, garbage.
        assert_eq!(
            token_from_redirect(&back, "someone-elses-state"),
            Err(OAuthError::ForeignState)
        );
        let no_state = "http://127.0.0.1:8765/callback?access_token=abc";
        assert_eq!(
            token_from_redirect(no_state, &start.state),
            Err(OAuthError::ForeignState)
        );
        let denied = format!("http://x/cb?error=access_denied&state={}", start.state);
        assert!(matches!(
            token_from_redirect(&denied, &start.state),
            Err(OAuthError::Refused(_))
        ));
        let empty = format!("http://x/cb?access_token=&state={}", start.state);
        assert!(matches!(
            token_from_redirect(&empty, &start.state),
            Err(OAuthError::BadAnswer(_))
        ));
        assert!(browser_sign_in("http://example.org/auth", "http://127.0.0.1/cb").is_err());
    }

    #[tokio::test]
    async fn only_https_endpoints_are_asked() {
        let jid: BareJid = "alice@example.org".parse().unwrap();
        for url in ["http://example.org/oauth/token", "not a url", "ftp://x/"] {
            let got = password_grant(&jid, "pw", url, &TlsTrust::Platform, None).await;
            assert_eq!(got, Err(OAuthError::BadUrl(url.into())), "{url}");
        }
    }

    #[tokio::test]
    async fn a_server_that_does_not_speak_tls_is_reported_not_a_panic() {
        // Plain HTTP where HTTPS was promised (a captive portal, a wrong port).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n<html>").await;
            }
        });
        let jid: BareJid = "alice@example.org".parse().unwrap();
        let url = format!("https://127.0.0.1:{port}/oauth/token");
        let got = password_grant(&jid, "pw", &url, &TlsTrust::Platform, None).await;
        assert!(matches!(got, Err(OAuthError::Unreachable(_))), "{got:?}");
        server.abort();
    }
}
