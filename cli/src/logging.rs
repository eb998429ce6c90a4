//! The daemon's and the commands' log: stderr, at `RUST_LOG` if set, else warnings;
//! `socialvpn log-level` changes the daemon's level while it runs.
//!
//! Every filter is a global one (a layer of its own, not a filter of the output layer), so
//! the subscriber's "is this enabled?" answers what is really written. That matters for
//! libraries that log through the `log` crate: tokio-xmpp copies every byte it reads into a
//! buffer whenever `log_enabled!(Trace)` says its raw-stream target is wanted, and a
//! per-layer filter made that answer "yes" for every target: the daemon held a second copy
//! of each stanza (0.5–0.7 MiB for a roster of 1 000) only to drop the record.

use socialvpn_core::api::LogLevel;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::reload;

/// Other crates' warnings (ICE checks of stale sessions, WireGuard retries) describe their
/// internals, not something a user can act on: SocialVPN reports what matters.
const QUIET_OTHERS: &str = "boringtun=off,rtc_ice=off,rtc_turn=off,rtc_stun=off";

/// `rust_log` takes a default level and `target=level` pairs (`warn,socialvpn_core=debug`),
/// not `EnvFilter`'s span and field-value matches: their regular expressions would add a
/// third of a megabyte to every daemon's resident code. One it cannot read is named on
/// stderr and the default kept.
pub fn init(rust_log: Option<String>) {
    use std::io::IsTerminal;
    let filter = match rust_log.as_deref().map(str::trim) {
        None | Some("") => default(),
        Some(asked) => directives(asked).unwrap_or_else(|e| {
            eprintln!(
                "socialvpn: RUST_LOG ignored ({e}); it takes LEVEL and TARGET=LEVEL, comma-separated"
            );
            default()
        }),
    };
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        // Never the raw XMPP stream (it carries the password), at any level.
        .with(tracing_subscriber::filter::filter_fn(|m| {
            !socialvpn_core::logging::is_never_logged(m.target())
        }))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .init();
    socialvpn_core::logging::set_level_control(move |level| {
        let _ = handle.modify(|f| *f = for_level(level));
    });
}

/// Without `RUST_LOG`: warnings, and other crates' internals quiet.
fn default() -> Targets {
    for_level(LogLevel::Warn)
}

/// What `socialvpn log-level` asks for: up to warnings, every crate at that level; above,
/// SocialVPN's own records at that level and others' warnings only.
fn for_level(level: LogLevel) -> Targets {
    let name = level.name();
    let asked = match level {
        LogLevel::Off | LogLevel::Error | LogLevel::Warn => format!("{name},{QUIET_OTHERS}"),
        _ => format!("warn,{QUIET_OTHERS},socialvpn_core={name},socialvpn={name}"),
    };
    directives(&asked).unwrap_or_default()
}

/// `LEVEL` and `TARGET=LEVEL`, comma-separated, spaces around each allowed. Refused rather
/// than half-read: an empty piece (which `Targets` would take for a target matching
/// everything, at TRACE), a target with a space in it, and `EnvFilter`'s span and field
/// filters (`target[span]=level`, which `Targets` would take for a target nothing has or a
/// filter on a field's presence).
fn directives(s: &str) -> Result<Targets, String> {
    let mut pieces = Vec::new();
    for piece in s.split(',').map(str::trim) {
        if piece.is_empty() {
            return Err("an empty directive".into());
        }
        if let Some(c) = piece
            .chars()
            .find(|c| c.is_whitespace() || "[]{}".contains(*c))
        {
            return Err(format!("{c:?} in {piece:?}"));
        }
        pieces.push(piece);
    }
    pieces.join(",").parse().map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::directives;
    use log::Level;
    use socialvpn_core::api::LogLevel;
    use tracing::Level as L;

    #[test]
    fn rust_log_is_read_whole_or_refused() {
        let read = directives(" warn , socialvpn_core=debug,tokio_xmpp=3 ").unwrap();
        assert!(read.would_enable("socialvpn_core::links", &L::DEBUG));
        assert!(!read.would_enable("socialvpn_core::links", &L::TRACE));
        assert!(read.would_enable("tokio_xmpp::stanzastream", &L::INFO));
        assert!(read.would_enable("hickory_resolver", &L::WARN));
        assert!(!read.would_enable("hickory_resolver", &L::INFO));
        for refused in [
            "warn,",
            "a=debug,,b=info",
            ",",
            "warn,socialvpn core=debug",
            "socialvpn_core[link]=debug",
            "socialvpn_core[{peer=alice}]=debug",
            "warn,socialvpn_core=verbose",
            "a=b=c",
        ] {
            assert!(directives(refused).is_err(), "{refused:?} was read");
        }
        let default = super::default();
        assert!(default.would_enable("socialvpn_core::links", &L::WARN));
        assert!(!default.would_enable("socialvpn_core::links", &L::INFO));
        assert!(!default.would_enable("boringtun::noise", &L::ERROR));
    }

    // The only test here that installs the process's logger.
    #[test]
    fn what_is_enabled_is_what_is_written() {
        // The user's own directive for the raw stream does not bring it back.
        super::init(Some("trace,tokio_xmpp::xmlstream=trace".into()));
        let wanted = |target: &str, level: Level| log::log_enabled!(target: target, level);
        // tokio-xmpp asks this before it captures its raw stream for a record.
        assert!(!wanted("tokio_xmpp::xmlstream::capture", Level::Trace));
        assert!(!wanted("tokio_xmpp::xmlstream", Level::Error));
        assert!(wanted("tokio_xmpp::stanzastream", Level::Trace));
        assert!(
            wanted("boringtun::noise", Level::Trace),
            "RUST_LOG=trace is everything"
        );
        assert!(socialvpn_core::logging::set_level(LogLevel::Warn));
        assert!(!wanted("boringtun::noise", Level::Error));
        assert!(!wanted("tokio_xmpp::stanzastream", Level::Trace));
        assert!(!wanted("hickory_resolver", Level::Info));
        assert!(wanted("hickory_resolver", Level::Warn));
        assert!(socialvpn_core::logging::set_level(LogLevel::Debug));
        assert!(wanted("socialvpn_core::links", Level::Debug));
        assert!(!wanted("socialvpn_core::links", Level::Trace));
        assert!(!wanted("hickory_resolver", Level::Info));
        assert!(!wanted("tokio_xmpp::xmlstream::capture", Level::Trace));
    }
}
