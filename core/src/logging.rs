//! What the logs never carry, whatever level is asked for.
//!
//! tokio-xmpp logs every byte of the XMPP stream at TRACE (target
//! `tokio_xmpp::xmlstream::…`): the SASL `<auth>` element with the base64 PLAIN password or
//! the SCRAM proof, and every stanza. A user asked for a trace to attach to a bug report must
//! not hand over their password: every front end (CLI, apps, test nodes) drops these targets.

use crate::api::LogLevel;
use std::sync::{Arc, RwLock};

type LevelControl = Arc<dyn Fn(LogLevel) + Send + Sync>;

static LEVEL_CONTROL: RwLock<Option<LevelControl>> = RwLock::new(None);

/// Installed by the front end that owns the process's logger (the CLI daemon, the bindings):
/// how `Request::SetLogLevel` changes its level.
pub fn set_level_control(control: impl Fn(LogLevel) + Send + Sync + 'static) {
    let mut slot = LEVEL_CONTROL.write().unwrap_or_else(|e| e.into_inner());
    *slot = Some(Arc::new(control));
}

/// Changes the level through the installed control; false when no front end installed one.
pub fn set_level(level: LogLevel) -> bool {
    let control = LEVEL_CONTROL
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match control {
        Some(control) => {
            control(level);
            true
        }
        None => false,
    }
}

/// Log targets (and their sub-targets) that are never written.
pub const NEVER_LOGGED: &[&str] = &["tokio_xmpp::xmlstream"];

/// Whether records of `target` must be dropped.
pub fn is_never_logged(target: &str) -> bool {
    NEVER_LOGGED.iter().any(|p| {
        target
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_xmpp_stream_is_never_logged() {
        assert!(is_never_logged("tokio_xmpp::xmlstream"));
        assert!(is_never_logged("tokio_xmpp::xmlstream::capture"));
        assert!(!is_never_logged("tokio_xmpp::xmlstreamer"));
        assert!(!is_never_logged("tokio_xmpp::stanzastream::worker"));
        assert!(!is_never_logged("socialvpn_core::xmpp::session"));
    }
}
