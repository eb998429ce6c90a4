//! The device's long-term X25519 key and the UID derived from it.

use crate::persist;
use crate::uid::Uid;
use boringtun::x25519::{PublicKey, StaticSecret};
use std::io;
use std::path::{Path, PathBuf};

/// File name of the private key inside the state directory.
pub const KEY_FILE: &str = "device.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the device key {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the device key file {path} is corrupt (expected 64 hex characters); it was left untouched"
    )]
    Corrupt { path: PathBuf },
}

/// A device's static key pair and UID.
#[derive(Clone)]
pub struct DeviceIdentity {
    secret: StaticSecret,
    public: PublicKey,
    uid: Uid,
}

impl DeviceIdentity {
    /// Makes a fresh random identity.
    pub fn generate() -> DeviceIdentity {
        Self::from_secret(StaticSecret::random_from_rng(rand_core::OsRng))
    }

    pub fn from_secret(secret: StaticSecret) -> DeviceIdentity {
        let public = PublicKey::from(&secret);
        let uid = Uid::from_public_key(public.as_bytes());
        DeviceIdentity {
            secret,
            public,
            uid,
        }
    }

    /// Loads the key from `state_dir`, creating it (0600) on first start.
    ///
    /// A corrupt key file is an error, never silently replaced: the UID is how friends know
    /// this device, and replacing the key would change it.
    pub fn load_or_create(state_dir: &Path) -> Result<DeviceIdentity, IdentityError> {
        let path = state_dir.join(KEY_FILE);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        // Ours, a real directory, closed to others: checked at every start, not only the
        // first (the key is read from it).
        persist::ensure_private_dir(state_dir).map_err(io_err)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut bytes)
                    .map_err(|_| IdentityError::Corrupt { path: path.clone() })?;
                Ok(Self::from_secret(StaticSecret::from(bytes)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = Self::generate();
                let text = format!("{}\n", hex::encode(identity.secret.to_bytes()));
                persist::write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err)?;
                tracing::info!("created a new device key");
                Ok(identity)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// The key this device shares with the holder of `peer` (X25519, hashed with a label):
    /// only the two key holders can compute it. None for a peer key that makes the exchange
    /// non-contributory (a low-order point: anyone could compute the result).
    pub fn shared_key(&self, peer: &[u8; 32], label: &[u8]) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        if !shared.was_contributory() {
            return None;
        }
        let mut hash = Sha256::new();
        hash.update(label);
        hash.update(shared.as_bytes());
        Some(hash.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = DeviceIdentity::load_or_create(&state).unwrap();
        let second = DeviceIdentity::load_or_create(&state).unwrap();
        assert_eq!(first.uid(), second.uid());
        assert_eq!(first.public_key(), second.public_key());
        assert_eq!(
            first.uid(),
            Uid::from_public_key(first.public_key().as_bytes())
        );
        let mode = std::fs::metadata(state.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_key_is_an_error_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "not a key").unwrap();
        let err = DeviceIdentity::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}
