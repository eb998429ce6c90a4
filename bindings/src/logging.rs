//! Logging per platform: logcat on Android, the unified log on Apple platforms, stderr
//! elsewhere (the JVM tests, Linux). The level can change at run time.

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

/// Sets the level of the library's logs (installing the platform's logger on first use).
#[uniffi::export]
pub fn set_log_level(level: LogLevel) {
    platform::set_level(level);
}

/// Installs the logger at the default level (Info) unless `set_log_level` came first.
pub(crate) fn init() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| platform::set_level(LogLevel::Info));
}

#[cfg(any(target_os = "android", target_vendor = "apple"))]
mod platform {
    use super::LogLevel;

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

    #[cfg(target_os = "android")]
    fn install() {
        android_logger::init_once(
            android_logger::Config::default()
                .with_tag("SocialVPN")
                .with_max_level(log::LevelFilter::Trace),
        );
    }

    #[cfg(target_vendor = "apple")]
    fn install() {
        static LOGGER: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        LOGGER.get_or_init(|| {
            // Fails only if a logger is already set (by the app): then that one is used.
            let _ = oslog::OsLogger::new("org.socialvpn.core").init();
        });
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
            let installed = tracing_subscriber::registry()
                .with(layer)
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
