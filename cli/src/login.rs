//! `socialvpn login`: trades the account's password once for an OAuth access token and
//! keeps only the token (owner-only, in the state directory). `socialvpn up` signs in with
//! a stored token before any password; a token the server refuses ends the login with
//! "run `socialvpn login`", never a retry loop.

use crate::config::Config;
use serde::{Deserialize, Serialize};
use socialvpn_core::config::Credentials;
use socialvpn_core::oauth::{default_token_url, password_grant, Reach};
use socialvpn_core::persist::{ensure_private_dir, write_atomic};
use socialvpn_core::xmpp::BareJid;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The stored token, in the state directory.
pub const TOKEN_FILE: &str = "xmpp-token.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredToken {
    /// The account the token was issued for: a token of another account is never sent.
    jid: String,
    access_token: String,
    /// Seconds since the epoch; none: the server did not say.
    expires_at: Option<u64>,
}

pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

pub fn run(config_path: &Path) -> Result<(), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let jid: BareJid = config
        .account
        .jid
        .parse()
        .map_err(|_| format!("'{}' is not a valid XMPP address", config.account.jid))?;
    let url = config
        .account
        .token_url
        .clone()
        .unwrap_or_else(|| default_token_url(&jid));
    let password = config.password().map_err(|e| e.to_string())?;
    let trust = config.trust();
    // The configured XMPP server's host serves the domain's HTTPS too (as it serves XMPP
    // for the domain's certificate).
    let connect_to = config
        .account
        .server
        .as_deref()
        .and_then(|s| socialvpn_core::config::parse_host_port(s, Some(5222)))
        .map(|(host, _)| host);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let reach = Reach {
        trust,
        dns: Default::default(),
        connect_to,
    };
    let token = runtime
        .block_on(password_grant(&jid, &password, &url, &reach))
        .map_err(|e| format!("sign-in at {url} failed: {e}"))?;
    drop(password);
    let stored = StoredToken {
        jid: jid.to_string(),
        expires_at: token.expires_at_unix(),
        access_token: token.secret,
    };
    ensure_private_dir(&config.state_dir)
        .map_err(|e| format!("state directory {}: {e}", config.state_dir.display()))?;
    let path = token_path(&config.state_dir);
    let bytes = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
    write_atomic(&path, &bytes, 0o600).map_err(|e| format!("{}: {e}", path.display()))?;
    let lifetime = match stored.expires_at {
        Some(at) => {
            let left = Duration::from_secs(at.saturating_sub(now_secs()));
            format!(", valid for {} days", left.as_secs().div_ceil(86_400))
        }
        None => String::new(),
    };
    println!(
        "signed in as {jid}; the token is in {}{lifetime}",
        path.display()
    );
    if config.account.password_file.is_some() || config.account.password_env.is_some() {
        println!(
            "`socialvpn up` now uses the token: the password_file/password_env setting can go"
        );
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The stored token for `jid`, if `socialvpn login` stored one. A file that cannot be read
/// or belongs to another account is an error (never silently a password prompt).
pub fn stored_token(state_dir: &Path, jid: &str) -> Result<Option<Credentials>, String> {
    let path = token_path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let stored: StoredToken = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: not a stored token ({e}); run `socialvpn login`",
            path.display()
        )
    })?;
    // Compared as JIDs: the stored one is normalised (`Alice@…` is `alice@…`).
    let same = match (stored.jid.parse::<BareJid>(), jid.parse::<BareJid>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(format!(
            "{} holds a token of another account; run `socialvpn login`",
            path.display()
        ));
    }
    if stored.expires_at.is_some_and(|at| at <= now_secs()) {
        tracing::warn!("the stored sign-in token has expired: run `socialvpn login`");
    }
    Ok(Some(Credentials::Token(stored.access_token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_token_is_read_back_only_for_its_account() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stored_token(dir.path(), "a@b.test"), Ok(None));
        let stored = StoredToken {
            jid: "a@b.test".into(),
            access_token: "tok".into(),
            expires_at: None,
        };
        std::fs::write(token_path(dir.path()), serde_json::to_vec(&stored).unwrap()).unwrap();
        assert_eq!(
            stored_token(dir.path(), "a@b.test"),
            Ok(Some(Credentials::Token("tok".into())))
        );
        assert!(stored_token(dir.path(), "c@b.test").is_err());
        assert!(stored_token(dir.path(), "A@b.test").unwrap().is_some());
        std::fs::write(token_path(dir.path()), b"{ half").unwrap();
        let err = stored_token(dir.path(), "a@b.test").unwrap_err();
        assert!(err.contains("socialvpn login"), "{err}");
    }
}
