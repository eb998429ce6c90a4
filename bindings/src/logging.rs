//! Logging per platform: logcat on Android, the unified log on Apple platforms, stderr
//! elsewhere (the JVM tests, Linux). The level can change at run time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    /// Includes personal data (JIDs, addresses): for bug reports the user agreed to.
    Debug,
    /// Per packet: for development only.
    Trace,
}

/// Set once the app chose a level, which the default must then not override.
static CHOSEN: AtomicBool = AtomicBool::new(false);

/// Sets the level of the library's logs (installing the platform's logger on first use).
#[uniffi::export]
pub fn set_log_level(level: LogLevel) {
    CHOSEN.store(true, Ordering::SeqCst);
    platform::set_level(level);
}

/// Installs the logger at the default level (Info) unless `set_log_level` came first.
/// Also lets the control protocol's `set_log_level` reach this logger.
pub(crate) fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if !CHOSEN.load(Ordering::SeqCst) {
            platform::set_level(LogLevel::Info);
        }
        socialvpn_core::logging::set_level_control(|level| platform::set_level(level.into()));
    });
}

impl From<socialvpn_core::api::LogLevel> for LogLevel {
    fn from(level: socialvpn_core::api::LogLevel) -> LogLevel {
        use socialvpn_core::api::LogLevel as L;
        match level {
            L::Off => LogLevel::Off,
            L::Error => LogLevel::Error,
            L::Warn => LogLevel::Warn,
            L::Info => LogLevel::Info,
            L::Debug => LogLevel::Debug,
            L::Trace => LogLevel::Trace,
        }
    }
}

impl From<LogLevel> for socialvpn_core::api::LogLevel {
    fn from(level: LogLevel) -> socialvpn_core::api::LogLevel {
        use socialvpn_core::api::LogLevel as L;
        match level {
            LogLevel::Off => L::Off,
            LogLevel::Error => L::Error,
            LogLevel::Warn => L::Warn,
            LogLevel::Info => L::Info,
            LogLevel::Debug => L::Debug,
            LogLevel::Trace => L::Trace,
        }
    }
}

/// A platform logger that drops what must never be logged (the raw XMPP stream, which
/// carries the password: see `socialvpn_core::logging`), whatever the level. (Built for
/// the tests too, so that it is tested here, where no Android or Apple build runs.)
#[cfg(any(test, target_os = "android", target_vendor = "apple"))]
struct Guarded<L>(L);

#[cfg(any(test, target_os = "android", target_vendor = "apple"))]
impl<L: log::Log> log::Log for Guarded<L> {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        !socialvpn_core::logging::is_never_logged(metadata.target()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(any(target_os = "android", target_vendor = "apple"))]
mod platform {
    use super::{Guarded, LogLevel};

    fn filter(level: LogLevel) -> log::LevelFilter {
        match level {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }

    // tracing (built with its `log` feature) forwards to the `log` facade, whose logger is
    // the platform's; `log::set_max_level` filters at run time.
    pub(super) fn set_level(level: LogLevel) {
        install();
        log::set_max_level(filter(level));
    }

    /// Installs the platform's logger behind the guard, once. Fails only if a logger is
    /// already set (by the app): then that one is used.
    fn install() {
        static LOGGER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        LOGGER.get_or_init(|| {
            let _ = log::set_boxed_logger(Box::new(Guarded(platform_logger())));
        });
    }

    #[cfg(target_os = "android")]
    fn platform_logger() -> android_logger::AndroidLogger {
        android_logger::AndroidLogger::new(
            android_logger::Config::default()
                .with_tag("SocialVPN")
                .with_max_level(log::LevelFilter::Trace),
        )
    }

    #[cfg(target_vendor = "apple")]
    fn platform_logger() -> oslog::OsLogger {
        oslog::OsLogger::new("org.socialvpn.core")
    }
}

#[cfg(not(any(target_os = "android", target_vendor = "apple")))]
mod platform {
    use super::LogLevel;
    use std::sync::OnceLock;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::reload;

    type Handle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

    fn filter(level: LogLevel) -> LevelFilter {
        match level {
            LogLevel::Off => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }

    pub(super) fn set_level(level: LogLevel) {
        static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
        let handle = HANDLE.get_or_init(|| {
            let (layer, handle) = reload::Layer::new(filter(level));
            let never = tracing_subscriber::filter::filter_fn(|m| {
                !socialvpn_core::logging::is_never_logged(m.target())
            });
            // Both filters global, not the output layer's own: then "is this enabled?"
            // answers what is written, and tokio-xmpp (which asks it through `log`) does not
            // copy its raw stream for records that are dropped (see the CLI's `logging`).
            let installed = tracing_subscriber::registry()
                .with(layer)
                .with(never)
                .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
                .try_init()
                .is_ok();
            // Another subscriber (the host program's) keeps the logs: leave it alone.
            installed.then_some(handle)
        });
        if let Some(handle) = handle {
            let _ = handle.modify(|f| *f = filter(level));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Guarded;
    use log::Log;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<String>>);

    impl Log for Sink {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            self.0.lock().unwrap().push(format!("{}", record.args()));
        }
        fn flush(&self) {}
    }

    #[test]
    fn the_platform_logger_never_gets_the_raw_xmpp_stream() {
        let guarded = Guarded(Sink::default());
        let record = |target: &'static str, text: &'static str| {
            guarded.log(
                &log::Record::builder()
                    .level(log::Level::Trace)
                    .target(target)
                    .args(format_args!("{text}"))
                    .build(),
            );
        };
        record(
            "tokio_xmpp::xmlstream::capture",
            "SEND <auth>c2VjcmV0</auth>",
        );
        record("socialvpn_core::engine", "link up");
        assert_eq!(*guarded.0 .0.lock().unwrap(), vec!["link up".to_string()]);
    }

    // Linux (the JVM tests). One test, because the level is the process's: another test
    // here that set it, or made a `SocialVpn`, would race with it.
    #[cfg(not(any(target_os = "android", target_vendor = "apple")))]
    #[test]
    fn the_level_the_app_chose_holds_and_the_raw_stream_is_never_captured() {
        let wanted = |target: &str, level| log::log_enabled!(target: target, level);
        // An app may set its level before the first `SocialVpn`, whose `init` keeps it.
        super::set_log_level(super::LogLevel::Debug);
        super::init();
        assert!(wanted("socialvpn_core::links", log::Level::Debug));
        assert!(!wanted("socialvpn_core::links", log::Level::Trace));
        // What the subscriber says is enabled is what it writes, so tokio-xmpp never
        // captures its raw stream for a record that would be dropped.
        super::set_log_level(super::LogLevel::Trace);
        assert!(!wanted("tokio_xmpp::xmlstream::capture", log::Level::Trace));
        assert!(wanted("tokio_xmpp::stanzastream", log::Level::Trace));
        super::set_log_level(super::LogLevel::Info);
        assert!(!wanted("tokio_xmpp::stanzastream", log::Level::Trace));
    }
}
