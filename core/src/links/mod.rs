//! Links between devices: candidate gathering (STUN, TURN), one ICE session per friend
//! device, and the signalling state machine that sets them up over XMPP.

pub mod host;
pub mod ice;
pub mod manager;
mod peer;
pub mod permits;
pub mod policy;
mod retired;
pub mod servers;
pub mod sessions;
mod turn_answers;
