//! Views over IP packets in the buffers we already hold: validation, checksums, translation
//! and the UID header. Nothing here allocates or copies a packet.

pub mod checksum;
pub mod gro;
pub mod gso;
pub mod ip;
pub mod translate;
pub mod uid_header;
