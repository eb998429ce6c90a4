//! The user's per-friend switch, persisted. A friend without an explicit choice is enabled
//! (IPOP linked every friend); the user's own devices are always linked. Also the accounts
//! whose friend requests the user declined: their later requests are ignored until the user
//! adds or accepts them.

use crate::persist;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use xmpp_parsers::jid::BareJid;

pub const TOGGLES_FILE: &str = "friends.json";

#[derive(Debug, thiserror::Error)]
pub enum TogglesError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is invalid ({reason}); it was left untouched")]
    Corrupt { path: PathBuf, reason: String },
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Stored {
    /// Bare JID → enabled.
    enabled: BTreeMap<String, bool>,
    /// Bare JIDs whose friend requests were declined.
    #[serde(default)]
    declined: BTreeSet<String>,
}

pub struct Toggles {
    path: PathBuf,
    enabled: BTreeMap<BareJid, bool>,
    declined: BTreeSet<BareJid>,
}

impl Toggles {
    pub fn open(state_dir: &Path) -> Result<Toggles, TogglesError> {
        let path = state_dir.join(TOGGLES_FILE);
        let corrupt = |reason: String| TogglesError::Corrupt {
            path: path.clone(),
            reason,
        };
        let stored: Stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(TogglesError::Io { path, source }),
        };
        let parse = |jid: &str| {
            jid.parse::<BareJid>()
                .map_err(|_| corrupt(format!("'{jid}' is not a JID")))
        };
        let mut enabled = BTreeMap::new();
        for (jid, on) in &stored.enabled {
            enabled.insert(parse(jid)?, *on);
        }
        let declined = stored
            .declined
            .iter()
            .map(|j| parse(j))
            .collect::<Result<_, _>>()?;
        Ok(Toggles {
            path,
            enabled,
            declined,
        })
    }

    /// The user's choice for `jid`, or the default (on).
    pub fn is_enabled(&self, jid: &BareJid) -> bool {
        self.enabled.get(jid).copied().unwrap_or(true)
    }

    /// Records and persists the choice; returns whether the effective setting changed.
    pub fn set(&mut self, jid: &BareJid, on: bool) -> Result<bool, TogglesError> {
        if self.enabled.get(jid) == Some(&on) {
            return Ok(false);
        }
        let before = self.is_enabled(jid);
        let previous = self.enabled.insert(jid.clone(), on);
        if let Err(e) = self.save() {
            // Keep memory and disk in agreement.
            match previous {
                Some(p) => self.enabled.insert(jid.clone(), p),
                None => self.enabled.remove(jid),
            };
            return Err(e);
        }
        Ok(before != on)
    }

    /// Forgets the choice (a removed friend starts from the default if re-added).
    pub fn forget(&mut self, jid: &BareJid) -> Result<(), TogglesError> {
        if self.enabled.remove(jid).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// Whether the user declined `jid`'s friend request (and has not asked for them since).
    pub fn is_declined(&self, jid: &BareJid) -> bool {
        self.declined.contains(jid)
    }

    /// Records (and persists) that the user declined, or no longer declines, `jid`.
    pub fn set_declined(&mut self, jid: &BareJid, declined: bool) -> Result<(), TogglesError> {
        let changed = if declined {
            self.declined.insert(jid.clone())
        } else {
            self.declined.remove(jid)
        };
        if changed {
            if let Err(e) = self.save() {
                if declined {
                    self.declined.remove(jid);
                } else {
                    self.declined.insert(jid.clone());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn save(&self) -> Result<(), TogglesError> {
        let stored = Stored {
            enabled: self
                .enabled
                .iter()
                .map(|(j, on)| (j.to_string(), *on))
                .collect(),
            declined: self.declined.iter().map(ToString::to_string).collect(),
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| TogglesError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        persist::write_atomic(&self.path, &json, 0o600).map_err(|source| TogglesError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_on_and_choices_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let bob: BareJid = "bob@svpn.test".parse().unwrap();
        let carol: BareJid = "carol@svpn.test".parse().unwrap();
        let mut toggles = Toggles::open(dir.path()).unwrap();
        assert!(toggles.is_enabled(&bob));
        assert!(toggles.set(&bob, false).unwrap());
        assert!(!toggles.set(&bob, false).unwrap());
        let reopened = Toggles::open(dir.path()).unwrap();
        assert!(!reopened.is_enabled(&bob));
        assert!(reopened.is_enabled(&carol));
    }

    #[test]
    fn corrupt_file_is_an_error_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOGGLES_FILE);
        for bad in ["[", r#"{"enabled":{"@@":true}}"#] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(
                Toggles::open(dir.path()),
                Err(TogglesError::Corrupt { .. })
            ));
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
    }
}
