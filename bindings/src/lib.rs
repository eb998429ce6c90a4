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
mod control;
mod error;
mod events;
mod logging;
mod signin;
mod tunnel_fd;
mod views;
mod vpn;
mod words;

pub use config::{IceServer, LinkPolicyConfig, SignIn, VpnConfig};
pub use control::{
    decode_control_reply, encode_control_request, ControlEvent, ControlReply, ControlRequest,
};
pub use error::{CallbackError, VpnError};
pub use events::{LinkEvent, VpnEventListener, VpnState};
pub use logging::{set_log_level, LogLevel};
pub use signin::{
    oauth_browser_sign_in, oauth_password_grant, oauth_token_from_redirect, BrowserSignIn,
    CodeFlow, SignInError, SignInToken,
};
pub use tunnel_fd::{find_tunnel_fd, TunnelFd};
pub use views::{Device, Friend, LinkInfo, LinkState, Status, TunnelSettings};
pub use vpn::{SocialVpn, SocketProtector, TunFraming};
pub use words::{describe_error, describe_link, describe_sign_in_error, describe_state};

uniffi::setup_scaffolding!();
