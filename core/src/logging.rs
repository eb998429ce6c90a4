//! What the logs never carry, whatever level is asked for.
//!
//! tokio-xmpp logs every byte of the XMPP stream at TRACE (target
//! `tokio_xmpp::xmlstream::…`): the SASL `<auth>` element with the base64 PLAIN password or
//! the SCRAM proof, and every stanza. A user asked for a trace to attach to a bug report must
//! not hand over their password: every front end (CLI, apps, test nodes) drops these targets.

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
