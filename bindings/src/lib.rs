//! SocialVPN for the Android and iOS apps: one [`SocialVpn`] object per signed-in account,
//! exported to Kotlin and Swift through uniffi.
//!
//! What the apps' screens need: a login (the config record and the XMPP state events), a
//! friends list with toggles (`roster`, the friend actions, roster events) and a status view
//! (`status`, `links`, link events). The engine runs on its own tokio runtime; the app calls
//! in from any thread and gets events on a thread of ours.

#[cfg(target_os = "android")]
mod android_trust;
mod config;
mod error;
mod events;
mod logging;
mod signin;
mod views;
mod vpn;

pub use config::{IceServer, LinkPolicyConfig, SignIn, VpnConfig};
pub use error::{CallbackError, VpnError};
pub use events::{LinkEvent, VpnEventListener, VpnState};
pub use logging::{set_log_level, LogLevel};
pub use signin::{
    oauth_browser_sign_in, oauth_password_grant, oauth_token_from_redirect, BrowserSignIn,
    CodeFlow, SignInError, SignInToken,
};
pub use views::{Device, Friend, LinkInfo, LinkState, Status, TunnelSettings};
pub use vpn::{SocialVpn, SocketProtector, TunFraming};

uniffi::setup_scaffolding!();
