//! SASL: the mechanism is chosen here, not by tokio-xmpp (whose list is fixed to SCRAM,
//! PLAIN and ANONYMOUS). A password logs in with SCRAM (PLAIN only inside the verified TLS
//! session and only if the server offers no SCRAM); a token with OAUTHBEARER (RFC 7628) or
//! ejabberd's X-OAUTH2.

use std::collections::BTreeSet;

use futures::SinkExt;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::client::Mechanism;
use sasl::common::scram::{Sha1, Sha256};
use sasl::common::{ChannelBinding, Credentials as SaslCredentials};
use tokio::io::{AsyncBufRead, AsyncWrite};
use tokio_xmpp::error::Error as XmppError;
use tokio_xmpp::xmlstream::{InitiatingStream, XmppStream, XmppStreamElement};
use xmpp_parsers::jid::BareJid;
use xmpp_parsers::ns;
use xmpp_parsers::sasl::{DefinedCondition, Nonza, Response};
use xso::{AsXml, FromXml};

use super::connect::{next_element, LoginFailure};

/// How the account proves who it is. (`Debug` leaves the secret out.)
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Password(String),
    /// An OAuth access token the server accepts for SASL (scope `sasl_auth` on ejabberd).
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Password(_) => "Password(<redacted>)",
            Credentials::Token(_) => "Token(<redacted>)",
        })
    }
}

/// `<auth/>` with any mechanism name (xmpp-parsers' `Auth` knows a closed list).
#[derive(FromXml, AsXml, Debug)]
#[xml(namespace = ns::SASL, name = "auth")]
struct AuthRequest {
    #[xml(attribute)]
    mechanism: String,
    #[xml(text = xso::text::Base64)]
    data: Vec<u8>,
}

/// One mechanism's side of the exchange.
enum Exchange {
    /// SCRAM and PLAIN, computed by the `sasl` crate; whether our final message went out
    /// (what the server sends after it is its proof).
    Sasl(Box<dyn Mechanism + Send + Sync>, bool),
    /// RFC 7628: the only challenge is an error report, answered with a single 0x01 so that
    /// the server sends its failure.
    OAuthBearer,
    /// ejabberd's X-OAUTH2: one message, no challenge.
    XOAuth2,
}

/// The mechanism to use among those `offered`, with its initial response.
fn choose(
    offered: &BTreeSet<String>,
    jid: &BareJid,
    credentials: &Credentials,
) -> Result<(String, Exchange, Vec<u8>), LoginFailure> {
    let user = jid
        .node()
        .map(|n| n.as_str().to_string())
        .unwrap_or_default();
    match credentials {
        Credentials::Password(password) => {
            // No channel binding: we offer no -PLUS mechanism, so the server is never asked
            // for a binding it would reject.
            let creds = SaslCredentials::default()
                .with_username(user)
                .with_password(password.clone())
                .with_channel_binding(ChannelBinding::None);
            let unusable = |e: String| LoginFailure::Unsupported(format!("SASL: {e}"));
            let mut mechanism: Box<dyn Mechanism + Send + Sync> = if offered
                .contains("SCRAM-SHA-256")
            {
                Box::new(
                    Scram::<Sha256>::from_credentials(creds)
                        .map_err(|e| unusable(format!("{e:?}")))?,
                )
            } else if offered.contains("SCRAM-SHA-1") {
                Box::new(
                    Scram::<Sha1>::from_credentials(creds)
                        .map_err(|e| unusable(format!("{e:?}")))?,
                )
            } else if offered.contains("PLAIN") {
                Box::new(Plain::from_credentials(creds).map_err(|e| unusable(format!("{e:?}")))?)
            } else {
                return Err(LoginFailure::Unsupported(format!(
                    "no password login among the server's mechanisms ({})",
                    list(offered)
                )));
            };
            let name = mechanism.name().to_string();
            let initial = mechanism.initial();
            Ok((name, Exchange::Sasl(mechanism, false), initial))
        }
        Credentials::Token(token) => {
            if offered.contains("OAUTHBEARER") {
                // RFC 5801's saslname: ',' and '=' escaped.
                let authzid = jid.to_string().replace('=', "=3D").replace(',', "=2C");
                let initial = format!("n,a={authzid},\x01auth=Bearer {token}\x01\x01").into_bytes();
                Ok(("OAUTHBEARER".into(), Exchange::OAuthBearer, initial))
            } else if offered.contains("X-OAUTH2") {
                let initial = format!("\0{user}\0{token}").into_bytes();
                Ok(("X-OAUTH2".into(), Exchange::XOAuth2, initial))
            } else {
                Err(LoginFailure::Unsupported(format!(
                    "the server offers no token login (OAUTHBEARER or X-OAUTH2) among {}",
                    list(offered)
                )))
            }
        }
    }
}

fn list(offered: &BTreeSet<String>) -> String {
    if offered.is_empty() {
        return "none".into();
    }
    offered.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Runs the SASL exchange on a stream whose features offered `offered`. On success the
/// stream is ready for its restart.
pub(super) async fn authenticate<S: AsyncBufRead + AsyncWrite + Unpin>(
    mut stream: XmppStream<S>,
    offered: &BTreeSet<String>,
    jid: &BareJid,
    credentials: &Credentials,
) -> Result<InitiatingStream<S>, LoginFailure> {
    let (mechanism, mut exchange, initial) = choose(offered, jid, credentials)?;
    tracing::debug!(%mechanism, "SASL");
    stream
        .send(&AuthRequest {
            mechanism,
            data: initial,
        })
        .await
        .map_err(XmppError::from)?;
    // Bounded: a server that keeps challenging is not a login.
    for _ in 0..8 {
        let nonza = match next_element(&mut stream).await? {
            Some(XmppStreamElement::Sasl(nonza)) => nonza,
            None => continue,
            Some(other) => {
                return Err(LoginFailure::Other(format!(
                    "unexpected element during SASL: {other:?}"
                )))
            }
        };
        match nonza {
            Nonza::Success(success) => {
                if let Exchange::Sasl(m, _) = &mut exchange {
                    // SCRAM: the server proves it knows the password too (PLAIN: nothing).
                    check_proof(m.as_mut(), &success.data)?;
                }
                return Ok(stream.initiate_reset());
            }
            Nonza::Failure(failure) => {
                return Err(refused(credentials, &failure.defined_condition))
            }
            Nonza::Challenge(challenge) => {
                let data = match &mut exchange {
                    // The server's proof as a challenge (RFC 6120 allows it): checked, and
                    // answered with an empty response.
                    Exchange::Sasl(m, true) => {
                        check_proof(m.as_mut(), &challenge.data)?;
                        Vec::new()
                    }
                    Exchange::Sasl(m, sent_final) => {
                        check_iterations(&challenge.data)?;
                        *sent_final = true;
                        m.response(&challenge.data).map_err(|e| {
                            LoginFailure::Other(format!("the server's SASL challenge: {e}"))
                        })?
                    }
                    Exchange::OAuthBearer => vec![0x01],
                    Exchange::XOAuth2 => {
                        return Err(LoginFailure::Other(
                            "X-OAUTH2 got a challenge it does not define".into(),
                        ))
                    }
                };
                stream
                    .send(&XmppStreamElement::Sasl(Nonza::Response(Response { data })))
                    .await
                    .map_err(XmppError::from)?;
            }
            // Client-to-server nonzas never come from the server.
            other => {
                return Err(LoginFailure::Other(format!(
                    "unexpected SASL element from the server: {other:?}"
                )))
            }
        }
    }
    Err(LoginFailure::Other("the SASL exchange did not end".into()))
}

/// Checks the server's proof that it knows the password (SCRAM's `v=`).
fn check_proof(m: &mut (dyn Mechanism + Send + Sync), data: &[u8]) -> Result<(), LoginFailure> {
    m.success(data)
        .map_err(|e| LoginFailure::Other(format!("the server's SASL proof is wrong: {e:?}")))
}

/// Most SCRAM iterations we compute: the server chooses the count, and a hostile one could
/// freeze the engine in PBKDF2 for hours (servers use a few thousand).
const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// Refuses a SCRAM challenge asking for more iterations than [`MAX_SCRAM_ITERATIONS`].
fn check_iterations(challenge: &[u8]) -> Result<(), LoginFailure> {
    let text = String::from_utf8_lossy(challenge);
    let asked = text
        .split(',')
        .find_map(|field| field.strip_prefix("i="))
        .map(|n| n.parse::<u64>().unwrap_or(u64::MAX));
    match asked {
        Some(n) if n > u64::from(MAX_SCRAM_ITERATIONS) => Err(LoginFailure::Unsupported(format!(
            "the server asks for {n} SCRAM iterations (at most {MAX_SCRAM_ITERATIONS})"
        ))),
        _ => Ok(()),
    }
}

/// What a SASL failure means for the user.
fn refused(credentials: &Credentials, condition: &DefinedCondition) -> LoginFailure {
    match condition {
        DefinedCondition::NotAuthorized
        | DefinedCondition::CredentialsExpired
        | DefinedCondition::AccountDisabled
        | DefinedCondition::InvalidAuthzid => match credentials {
            Credentials::Password(_) => LoginFailure::BadCredentials,
            Credentials::Token(_) => LoginFailure::TokenRejected,
        },
        // The server's own trouble: worth another try later.
        DefinedCondition::TemporaryAuthFailure => {
            LoginFailure::Other("the server could not check the login right now".into())
        }
        other => LoginFailure::Unsupported(format!("SASL failure: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn jid() -> BareJid {
        "alice@example.org".parse().unwrap()
    }

    #[test]
    fn a_password_prefers_the_strongest_scram_and_never_a_token_mechanism() {
        let pw = Credentials::Password("pw".into());
        let pick = |names: &[&str]| choose(&offered(names), &jid(), &pw).map(|c| c.0);
        assert_eq!(
            pick(&["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "X-OAUTH2"]).unwrap(),
            "SCRAM-SHA-256"
        );
        assert_eq!(pick(&["PLAIN", "SCRAM-SHA-1"]).unwrap(), "SCRAM-SHA-1");
        assert_eq!(pick(&["PLAIN"]).unwrap(), "PLAIN");
        assert!(matches!(
            pick(&["X-OAUTH2", "ANONYMOUS", "SCRAM-SHA-1-PLUS"]),
            Err(LoginFailure::Unsupported(_))
        ));
    }

    #[test]
    fn a_token_uses_oauthbearer_before_x_oauth2_and_never_a_password_mechanism() {
        let tok = Credentials::Token("t0k".into());
        let (name, _, initial) =
            choose(&offered(&["X-OAUTH2", "OAUTHBEARER"]), &jid(), &tok).unwrap();
        assert_eq!(name, "OAUTHBEARER");
        assert_eq!(
            initial,
            b"n,a=alice@example.org,\x01auth=Bearer t0k\x01\x01".to_vec()
        );
        let (name, _, initial) = choose(&offered(&["X-OAUTH2", "PLAIN"]), &jid(), &tok).unwrap();
        assert_eq!(name, "X-OAUTH2");
        assert_eq!(initial, b"\0alice\0t0k".to_vec());
        assert!(matches!(
            choose(&offered(&["PLAIN", "SCRAM-SHA-1"]), &jid(), &tok),
            Err(LoginFailure::Unsupported(_))
        ));
    }

    #[test]
    fn a_hostile_iteration_count_is_refused_before_any_work() {
        assert!(check_iterations(b"r=abc,s=c2FsdA==,i=4096").is_ok());
        for bad in [
            &b"r=abc,s=c2FsdA==,i=4294967295"[..],
            b"r=a,s=b,i=99999999999999999999",
        ] {
            assert!(matches!(
                check_iterations(bad),
                Err(LoginFailure::Unsupported(_))
            ));
        }
    }

    #[test]
    fn oauthbearer_escapes_the_authorization_identity() {
        let jid: BareJid = "a=b,c@example.org".parse().unwrap();
        let tok = Credentials::Token("t".into());
        let (_, _, initial) = choose(&offered(&["OAUTHBEARER"]), &jid, &tok).unwrap();
        assert!(
            initial.starts_with(b"n,a=a=3Db=2Cc@example.org,"),
            "{initial:?}"
        );
    }

    #[test]
    fn a_refused_token_is_its_own_failure() {
        let tok = Credentials::Token("t".into());
        let pw = Credentials::Password("p".into());
        assert_eq!(
            refused(&tok, &DefinedCondition::NotAuthorized),
            LoginFailure::TokenRejected
        );
        assert_eq!(
            refused(&pw, &DefinedCondition::NotAuthorized),
            LoginFailure::BadCredentials
        );
        assert!(matches!(
            refused(&tok, &DefinedCondition::TemporaryAuthFailure),
            LoginFailure::Other(_)
        ));
    }

    #[test]
    fn debug_output_leaves_the_secret_out() {
        let text = format!("{:?}", Credentials::Token("very-secret".into()));
        assert!(!text.contains("very-secret"));
    }
}
