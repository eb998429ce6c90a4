//! What the apps say about the engine's states and failures, in words a user can act on:
//! one text for Android and iOS, so both apps say the same (the engine's own reasons are
//! already worded; the typed ones get a sentence of their own).

use crate::error::VpnError;
use crate::events::VpnState;
use crate::signin::SignInError;
use crate::views::LinkState;

/// The account's connection, as the status line says it.
#[uniffi::export]
pub fn describe_state(state: VpnState) -> String {
    match state {
        VpnState::Connecting => "Connecting to your XMPP server…".into(),
        VpnState::Online => "Online".into(),
        VpnState::Offline {
            reason,
            retry_in_secs,
        } => offline(&reason, retry_in_secs),
        VpnState::AuthFailed => "Wrong address or password. Check them and sign in again.".into(),
        VpnState::TokenRejected => "Your sign-in has expired. Sign in again.".into(),
        VpnState::Stopped { error: Some(e) } => format!("Stopped: {e}"),
        VpnState::Stopped { error: None } => "Off".into(),
    }
}

/// The engine's offline reasons start with what failed; the user needs to know which kind.
fn offline(reason: &str, retry_in_secs: u64) -> String {
    let head = if reason.to_lowercase().contains("certificate") {
        "The server's certificate is not trusted. If your server uses its own CA, add its file under Advanced.".into()
    } else if reason.to_lowercase().starts_with("cannot reach") {
        "Cannot reach the server. Check the address and your connection.".into()
    } else if reason.contains("does not serve this account's domain") {
        "That server does not host this account's domain. Check the server under Advanced.".into()
    } else {
        format!("Offline: {}.", capitalised(reason))
    };
    if (1..=3600).contains(&retry_in_secs) {
        format!("{head} Trying again in {retry_in_secs} s.")
    } else {
        head
    }
}

/// A failed engine call, as a message under the control that made it.
#[uniffi::export]
pub fn describe_error(error: VpnError) -> String {
    match error {
        VpnError::InvalidJid { jid } => {
            format!("“{jid}” is not an XMPP address (alice@example.org).")
        }
        VpnError::InvalidConfig { reason } => format!("Check the settings: {reason}."),
        VpnError::StateDirectory { reason } => format!("The app cannot use its storage: {reason}."),
        VpnError::InvalidFd { .. } | VpnError::Tunnel { .. } => {
            "The VPN interface could not be used. Switch the VPN off and on.".into()
        }
        VpnError::ProtectRefused => {
            "The system refused to keep SocialVPN's own traffic out of the VPN.".into()
        }
        VpnError::Socket { reason } => {
            format!("SocialVPN could not open its network socket: {reason}.")
        }
        VpnError::Friend { reason } | VpnError::Refused { reason } => capitalised(&reason),
        VpnError::Stopped => "SocialVPN has stopped. Sign in again.".into(),
        VpnError::Reentrant => "Internal error (re-entrant engine call).".into(),
    }
}

/// A failed browser or password sign-in (OAuth), as the sign-in form shows it.
#[uniffi::export]
pub fn describe_sign_in_error(error: SignInError) -> String {
    match error {
        SignInError::InvalidJid { jid } => {
            format!("“{jid}” is not an XMPP address (alice@example.org).")
        }
        SignInError::Refused { .. } => "Wrong address or password.".into(),
        SignInError::NoAnswer { .. } => {
            "Wrong address or password (the server hung up without a word).".into()
        }
        SignInError::Unreachable { .. } => {
            "Cannot reach the sign-in server. Check your connection.".into()
        }
        SignInError::TimedOut { .. } => {
            "The sign-in server did not answer in time. Try again.".into()
        }
        SignInError::Certificate { .. } => {
            "The sign-in server's certificate is not trusted.".into()
        }
        SignInError::ForeignState { .. } => {
            "That sign-in was not started by this app; try again.".into()
        }
        SignInError::BadUrl { .. } => "This server does not offer browser sign-in.".into(),
        SignInError::BadAnswer { .. } => "The sign-in server answered something unexpected.".into(),
    }
}

/// A device's link, as its row says it.
#[uniffi::export]
pub fn describe_link(link: LinkState) -> String {
    let rtt = |ms: Option<f64>| ms.map_or(String::new(), |ms| format!(" · {ms:.0} ms"));
    match link {
        LinkState::None => "Not linked".into(),
        LinkState::Connecting => "Connecting…".into(),
        LinkState::Direct { rtt_ms } => format!("Direct{}", rtt(rtt_ms)),
        LinkState::Relayed { rtt_ms } => format!("Relayed{}", rtt(rtt_ms)),
        LinkState::Retrying => "No path yet, retrying".into(),
        LinkState::ClosedByPeer => "They switched you off".into(),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_reasons_become_advice() {
        assert_eq!(
            describe_state(VpnState::Offline {
                reason: "the server's certificate is not trusted: unknown issuer".into(),
                retry_in_secs: 30
            }),
            "The server's certificate is not trusted. If your server uses its own CA, add its file under Advanced. Trying again in 30 s."
        );
        assert!(describe_state(VpnState::Offline {
            reason: "cannot reach the server: connection refused".into(),
            retry_in_secs: 5
        })
        .starts_with("Cannot reach the server."));
        assert_eq!(
            describe_state(VpnState::Offline {
                reason: "something else".into(),
                retry_in_secs: 0
            }),
            "Offline: Something else."
        );
    }

    #[test]
    fn links_errors_and_sign_in_failures_in_words() {
        assert_eq!(
            describe_link(LinkState::Relayed { rtt_ms: Some(48.4) }),
            "Relayed · 48 ms"
        );
        assert_eq!(describe_link(LinkState::Direct { rtt_ms: None }), "Direct");
        assert_eq!(
            describe_error(VpnError::Refused {
                reason: "address taken".into()
            }),
            "Address taken"
        );
        assert_eq!(
            describe_sign_in_error(SignInError::NoAnswer {
                reason: "eof".into()
            }),
            "Wrong address or password (the server hung up without a word)."
        );
    }
}
