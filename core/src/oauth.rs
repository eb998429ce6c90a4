//! OAuth sign-in: trading a password once for an access token (the resource-owner password
//! grant, which ejabberd serves at `/oauth/token`), so that only the token is kept; or the
//! browser sign-in, either the implicit flow of stock ejabberd or the authorization code with
//! PKCE (RFC 7636) of an authorization server that ejabberd asks about tokens
//! (`oauth_db_type: rest`). The token then logs in through SASL (`xmpp::sasl`); a refused
//! one is `LoginFailure::TokenRejected`.
//!
//! The request goes through the `oauth2` crate over reqwest with our own rustls
//! configuration (the account's CA file or the public roots), no redirects, and a bound on
//! the whole exchange. ejabberd answers a wrong password by closing the connection without a
//! word (`NoAnswer`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope,
    TokenResponse, TokenUrl,
};
use xmpp_parsers::jid::BareJid;

use crate::xmpp::connect::{tls_config, TlsTrust};
use crate::xmpp::discovery::{addresses, Dns};

/// How requests reach a sign-in server: the certificates trusted, who answers its name (the
/// platform's name servers, as for the XMPP server), and the host that serves the URL's
/// name if not the name itself (the account's configured XMPP server, when the URL names
/// the JID's domain and that domain does not resolve to it; the certificate is still checked
/// for the URL's name).
#[derive(Clone, Debug)]
pub struct Reach {
    pub trust: TlsTrust,
    pub dns: Dns,
    pub connect_to: Option<String>,
}

impl Reach {
    /// Trusting `trust`, names from the system's resolver.
    pub fn trusting(trust: TlsTrust) -> Reach {
        Reach {
            trust,
            dns: Dns::default(),
            connect_to: None,
        }
    }
}

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

/// How the authorization server hands the token back after the browser sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrowserFlow {
    /// In the redirect itself (the implicit flow): what stock ejabberd offers.
    Implicit,
    /// The redirect carries a code that only the app can trade for a token at `token_url`,
    /// with the PKCE verifier it kept (RFC 7636, S256): an authorization server that ejabberd
    /// asks about tokens (`oauth_db_type: rest`). `client_id`: the app's registration there.
    CodeWithPkce {
        token_url: String,
        client_id: String,
    },
}

/// A browser sign-in in progress: the app opens `url`; the redirect comes back to it and must
/// carry `state`. The app keeps all of it until then (across a process restart too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSignIn {
    pub url: String,
    pub state: String,
    /// What trading the code needs (the code flow only).
    pub exchange: Option<CodeExchange>,
}

/// The code flow's second step: where to trade the code, and the secret that proves the
/// redirect came back to the app that started the sign-in. (`Debug` leaves it out.)
#[derive(Clone, PartialEq, Eq)]
pub struct CodeExchange {
    pub token_url: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub verifier: String,
}

impl std::fmt::Debug for CodeExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeExchange")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("verifier", &"<redacted>")
            .finish()
    }
}

fn https_url(url: &str) -> Result<url::Url, OAuthError> {
    url::Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "https" && u.host_str().is_some())
        .ok_or_else(|| OAuthError::BadUrl(url.to_string()))
}

/// Starts the browser sign-in: the URL to open and the unguessable state the redirect to
/// `redirect_uri` must bring back (and, for the code flow, the PKCE verifier).
pub fn browser_sign_in(
    authorize_url: &str,
    redirect_uri: &str,
    flow: &BrowserFlow,
) -> Result<BrowserSignIn, OAuthError> {
    let auth = AuthUrl::from_url(https_url(authorize_url)?);
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|_| OAuthError::BadUrl(redirect_uri.to_string()))?;
    match flow {
        BrowserFlow::Implicit => {
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
                exchange: None,
            })
        }
        BrowserFlow::CodeWithPkce {
            token_url,
            client_id,
        } => {
            https_url(token_url)?;
            let client = BasicClient::new(ClientId::new(client_id.clone()))
                .set_auth_uri(auth)
                .set_redirect_uri(redirect);
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            let (url, state) = client
                .authorize_url(CsrfToken::new_random)
                .add_scope(Scope::new(SASL_SCOPE.into()))
                .set_pkce_challenge(challenge)
                .url();
            Ok(BrowserSignIn {
                url: url.to_string(),
                state: state.secret().clone(),
                exchange: Some(CodeExchange {
                    token_url: token_url.clone(),
                    client_id: client_id.clone(),
                    redirect_uri: redirect_uri.to_string(),
                    verifier: verifier.secret().clone(),
                }),
            })
        }
    }
}

/// Ends a browser sign-in with the redirect that came back: the token in it (implicit
/// flow), or the one its code is traded for (code flow; bounded by [`GRANT_TIMEOUT`]).
pub async fn finish_browser_sign_in(
    sign_in: &BrowserSignIn,
    redirect: &str,
    reach: &Reach,
) -> Result<AccessToken, OAuthError> {
    let Some(exchange) = &sign_in.exchange else {
        return token_from_redirect(redirect, &sign_in.state);
    };
    let params = RedirectParams::read(redirect, &sign_in.state)?;
    let code = params
        .get("code")
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| OAuthError::BadAnswer("the redirect carries no code".into()))?;
    let url = TokenUrl::from_url(https_url(&exchange.token_url)?);
    let redirect_uri = RedirectUrl::new(exchange.redirect_uri.clone())
        .map_err(|_| OAuthError::BadUrl(exchange.redirect_uri.clone()))?;
    within_bound(async {
        let http = http_client(&url, reach).await?;
        let client = BasicClient::new(ClientId::new(exchange.client_id.clone()))
            .set_token_uri(url)
            .set_redirect_uri(redirect_uri);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(exchange.verifier.clone()))
            .request_async(&http)
            .await
            .map_err(grant_error)?;
        access_token(&response)
    })
    .await
}

/// One bound on a whole exchange with a sign-in server: the name look-up, the connection,
/// TLS, the request and the answer.
async fn within_bound<T>(
    exchange: impl std::future::Future<Output = Result<T, OAuthError>>,
) -> Result<T, OAuthError> {
    tokio::time::timeout(GRANT_TIMEOUT, exchange)
        .await
        .unwrap_or(Err(OAuthError::TimedOut))
}

/// The parameters of a redirect (its query and its fragment), once its `state` is the
/// sign-in's and it carries no error.
struct RedirectParams(Vec<(String, String)>);

impl RedirectParams {
    fn read(redirect: &str, state: &str) -> Result<RedirectParams, OAuthError> {
        let url =
            url::Url::parse(redirect).map_err(|_| OAuthError::BadUrl(redirect.to_string()))?;
        let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        if let Some(fragment) = url.fragment() {
            params.extend(url::form_urlencoded::parse(fragment.as_bytes()).into_owned());
        }
        let params = RedirectParams(params);
        if params.get("state") != Some(state) {
            return Err(OAuthError::ForeignState);
        }
        if let Some(error) = params.get("error") {
            return Err(OAuthError::Refused(error.chars().take(80).collect()));
        }
        Ok(params)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The token in the redirect that ended a browser sign-in (in its query, as ejabberd puts
/// it, or its fragment, as the implicit flow's RFC does). A redirect with another `state`
/// was not asked for by this sign-in and is refused.
pub fn token_from_redirect(redirect: &str, state: &str) -> Result<AccessToken, OAuthError> {
    let params = RedirectParams::read(redirect, state)?;
    let get = |key: &str| params.get(key);
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

/// Trades `password` for an access token at `token_url`.
pub async fn password_grant(
    jid: &BareJid,
    password: &str,
    token_url: &str,
    reach: &Reach,
) -> Result<AccessToken, OAuthError> {
    let url = TokenUrl::from_url(https_url(token_url)?);
    // ejabberd 23.01 takes no client id (a non-empty one crashes its handler).
    let client = BasicClient::new(ClientId::new(String::new())).set_token_uri(url.clone());
    let username = ResourceOwnerUsername::new(jid.to_string());
    let password = ResourceOwnerPassword::new(password.to_string());
    within_bound(async {
        let http = http_client(&url, reach).await?;
        let response = client
            .exchange_password(&username, &password)
            .add_scope(Scope::new(SASL_SCOPE.into()))
            .request_async(&http)
            .await
            .map_err(grant_error)?;
        access_token(&response)
    })
    .await
}

/// The HTTP client for a token endpoint: our TLS configuration, no redirects (the endpoint
/// answers itself; a redirect could carry the password or the code elsewhere), names
/// resolved as `reach` says.
async fn http_client(url: &TokenUrl, reach: &Reach) -> Result<reqwest::Client, OAuthError> {
    let bad_url = || OAuthError::BadUrl(url.to_string());
    let host = url.url().host_str().ok_or_else(bad_url)?.to_string();
    let port = url.url().port_or_known_default().ok_or_else(bad_url)?;
    let tls = tls_config(&reach.trust).map_err(|e| OAuthError::Certificate(e.to_string()))?;
    let server = reach.connect_to.as_deref().unwrap_or(&host);
    let addrs: Vec<SocketAddr> = addresses(&reach.dns, server, port)
        .await
        .map_err(|e| OAuthError::Unreachable(format!("{server}: {e}")))?;
    if addrs.is_empty() {
        return Err(OAuthError::Unreachable(format!("{server}: no address")));
    }
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(GRANT_TIMEOUT)
        .resolve_to_addrs(&host, &addrs)
        .build()
        .map_err(|e| OAuthError::Certificate(e.to_string()))
}

fn access_token(response: &oauth2::basic::BasicTokenResponse) -> Result<AccessToken, OAuthError> {
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
            &BrowserFlow::Implicit,
        )
        .unwrap();
        assert_eq!(start.exchange, None);
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
        assert!(browser_sign_in(
            "http://example.org/auth",
            "http://127.0.0.1/cb",
            &BrowserFlow::Implicit
        )
        .is_err());
    }

    #[tokio::test]
    async fn the_code_flow_sends_a_pkce_challenge_and_keeps_the_verifier() {
        let flow = BrowserFlow::CodeWithPkce {
            token_url: "https://as.example.org/token".into(),
            client_id: "socialvpn".into(),
        };
        let start = browser_sign_in(
            "https://as.example.org/authorize",
            "http://127.0.0.1:9/cb",
            &flow,
        )
        .unwrap();
        let url = url::Url::parse(&start.url).unwrap();
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(query["response_type"], "code");
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["client_id"], "socialvpn");
        assert_eq!(query["state"], start.state);
        let exchange = start.exchange.clone().unwrap();
        // The challenge is the verifier's SHA-256, and the verifier never leaves in the URL.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(exchange.verifier.as_bytes());
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(query["code_challenge"], expected);
        assert!(!start.url.contains(&exchange.verifier));
        assert!(!format!("{start:?}").contains(&exchange.verifier));
        // A foreign state or a redirect without a code never reaches the token endpoint.
        let foreign = "http://127.0.0.1:9/cb?code=abc&state=other";
        assert_eq!(
            finish_browser_sign_in(&start, foreign, &Reach::trusting(TlsTrust::Platform)).await,
            Err(OAuthError::ForeignState)
        );
        let no_code = format!("http://127.0.0.1:9/cb?state={}", start.state);
        assert!(matches!(
            finish_browser_sign_in(&start, &no_code, &Reach::trusting(TlsTrust::Platform)).await,
            Err(OAuthError::BadAnswer(_))
        ));
        // Only https endpoints.
        let plain = BrowserFlow::CodeWithPkce {
            token_url: "http://as.example.org/token".into(),
            client_id: "socialvpn".into(),
        };
        assert!(browser_sign_in(
            "https://as.example.org/authorize",
            "http://127.0.0.1:9/cb",
            &plain
        )
        .is_err());
    }

    #[tokio::test]
    async fn only_https_endpoints_are_asked() {
        let jid: BareJid = "alice@example.org".parse().unwrap();
        for url in ["http://example.org/oauth/token", "not a url", "ftp://x/"] {
            let reach = Reach::trusting(TlsTrust::Platform);
            let got = password_grant(&jid, "pw", url, &reach).await;
            assert_eq!(got, Err(OAuthError::BadUrl(url.into())), "{url}");
        }
    }

    #[tokio::test]
    async fn a_token_endpoint_that_never_answers_is_given_up_on_in_time() {
        // Accepts the connection and says nothing (a stalled server, a captive portal).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(GRANT_TIMEOUT * 2).await;
            drop(held);
        });
        let jid: BareJid = "alice@example.org".parse().unwrap();
        let url = format!("https://127.0.0.1:{port}/oauth/token");
        let started = std::time::Instant::now();
        let reach = Reach::trusting(TlsTrust::Platform);
        let got = password_grant(&jid, "pw", &url, &reach).await;
        assert_eq!(got, Err(OAuthError::TimedOut));
        assert!(started.elapsed() < GRANT_TIMEOUT + Duration::from_secs(5));
        server.abort();
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
        let got = password_grant(&jid, "pw", &url, &Reach::trusting(TlsTrust::Platform)).await;
        assert!(matches!(got, Err(OAuthError::Unreachable(_))), "{got:?}");
        server.abort();
    }
}
