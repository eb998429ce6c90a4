//! The test world: network namespaces made and removed by the tests themselves, and
//! processes started inside them and killed by PID when the test ends, even by a panic.
//!
//! Addresses: underlay 198.18.0.0/15, overlay 100.64.0.0/10. Nothing is routed from the
//! host namespace into the world: both ends of every veth are created inside namespaces.

/// One `#[test]` per XMPP server (prosody, ejabberd) for each scenario `fn name(kind:
/// XmppServerKind)` named: users run both.
#[macro_export]
macro_rules! on_both_servers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn prosody() {
                super::$name($crate::xmpp_server::XmppServerKind::Prosody);
            }
            #[test]
            fn ejabberd() {
                super::$name($crate::xmpp_server::XmppServerKind::Ejabberd);
            }
        }
    )*};
}

pub mod attacker;
pub mod auth_server;
pub mod certs;
pub mod cli_daemon;
pub mod dns_server;
pub mod netns;
pub mod node;
pub mod pinger;
pub mod proc_memory;
pub mod social_nodes;
pub mod social_world;
pub mod traffic;
pub mod turn_server;
pub mod two_hosts;
pub mod utun_relay;
mod world_files;
mod world_net;
pub mod xmpp_server;
