//! The social layer: who the user's friends are, which of their devices run SocialVPN, and
//! the signalling that sets up links between devices.

pub mod payload;
pub mod proof;
pub mod state;
pub mod toggles;
