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
    ClientId, RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
    TokenResponse, TokenUrl,
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

/// An access token as the server issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub secret: String,
    /// When the server says it expires (none: it did not say).
    pub expires_at: Option<SystemTime>,
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
        expires_at: response.expires_in().map(|d| SystemTime::now() + d),
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
        RequestTokenError::Parse(e, body) => OAuthError::BadAnswer(format!(
            "{e} (the answer starts: {:?})",
            String::from_utf8_lossy(&body[..body.len().min(60)])
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
