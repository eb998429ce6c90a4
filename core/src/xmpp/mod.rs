//! The XMPP shell: login, reconnection and stanza translation for the social layer.

pub mod connect;
pub mod csi;
pub mod discovery;
pub mod extdisco;
pub mod sasl;
pub mod session;
mod stanzas;
pub mod trust;
pub use xmpp_parsers::jid::BareJid;
