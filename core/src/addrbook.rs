//! The user's address book: this device's overlay address and one stable address per friend
//! device, all inside the user's own subnet.
//!
//! Addresses are chosen once (starting from a hash of the UID, so a friend tends to land on
//! the same address even in a fresh install), kept across restarts and may be pinned by the
//! user. Each records the account it belongs to: one account holds at most
//! [`MAX_PER_OWNER`] addresses (a friend minting device keys takes the addresses of their
//! own stale devices, never anyone else's), and a full subnet makes room by giving away
//! addresses unseen for [`STALE_AFTER`] seconds. New addresses are written out in the
//! background ([`AddressBook::take_dirty`]); pins are written before they are used.

use crate::fast_map::FastMap;
use crate::persist;
use crate::subnet::Ipv4Subnet;
use crate::uid::Uid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const ADDRESS_BOOK_FILE: &str = "addresses.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AddressBookError {
    #[error("cannot read or write the address book {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the address book {path} is invalid ({reason}); it was left untouched")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{addr} is not a host address of the subnet {subnet}")]
    OutsideSubnet { addr: Ipv4Addr, subnet: Ipv4Subnet },
    #[error("{addr} is already pinned to another device")]
    AddressTaken { addr: Ipv4Addr },
    #[error("the subnet {0} is full")]
    Full(Ipv4Subnet),
    #[error("no device with that UID is in the address book")]
    UnknownDevice,
    #[error("{0} already has the most devices one account may have, all pinned or in use")]
    TooManyDevices(String),
}

/// Most addresses the devices of one account hold.
pub const MAX_PER_OWNER: usize = 16;
/// An unpinned address unseen this long (seconds) may go to another device when the subnet
/// is full.
pub const STALE_AFTER: u64 = 30 * 86_400;
/// How often (seconds) a device's last sighting is brought up to date (each time is a write).
const SEEN_GRANULARITY: u64 = 3_600;

/// One friend device's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressEntry {
    pub addr: Ipv4Addr,
    /// Chosen by the user: never moved to make room for another device.
    #[serde(default)]
    pub pinned: bool,
    /// The account (bare JID) the device belongs to, when known.
    #[serde(default)]
    pub owner: Option<String>,
    /// When the device was last wanted or heard from (seconds since the epoch).
    #[serde(default)]
    pub last_seen: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    subnet: Ipv4Subnet,
    own: Ipv4Addr,
    devices: BTreeMap<Uid, AddressEntry>,
}

pub struct AddressBook {
    path: PathBuf,
    subnet: Ipv4Subnet,
    own: Ipv4Addr,
    devices: BTreeMap<Uid, AddressEntry>,
    by_addr: FastMap<Ipv4Addr, Uid>,
    /// Changed since the last [`AddressBook::take_dirty`].
    dirty: bool,
}

impl AddressBook {
    /// Opens the book in `state_dir`, creating it for `subnet` on first start. When the
    /// configured subnet differs from the stored one, every address keeps its host offset
    /// in the new subnet where it fits and is re-chosen where it does not.
    pub fn open(state_dir: &Path, subnet: Ipv4Subnet) -> Result<AddressBook, AddressBookError> {
        let path = state_dir.join(ADDRESS_BOOK_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => Some(Self::decode(&path, &bytes)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(AddressBookError::Io { path, source }),
        };
        let mut book = AddressBook {
            path,
            subnet,
            own: subnet.host(1),
            devices: BTreeMap::new(),
            by_addr: FastMap::default(),
            dirty: false,
        };
        match stored {
            Some(stored) if stored.subnet == subnet => {
                book.own = stored.own;
                for (uid, entry) in stored.devices {
                    book.by_addr.insert(entry.addr, uid);
                    book.devices.insert(uid, entry);
                }
            }
            Some(stored) => {
                tracing::info!(old = %stored.subnet, new = %subnet, "overlay subnet changed; moving addresses");
                book.own = rebase(stored.subnet, subnet, stored.own);
                // Pinned entries first so they keep their offsets when possible.
                let mut entries: Vec<_> = stored.devices.into_iter().collect();
                entries.sort_by_key(|(_, e)| !e.pinned);
                for (uid, entry) in entries {
                    let wanted = rebase(stored.subnet, subnet, entry.addr);
                    let addr = if book.is_free(wanted) {
                        wanted
                    } else {
                        book.free_address_for(&uid)?
                    };
                    book.insert(uid, AddressEntry { addr, ..entry });
                }
                book.save()?;
            }
            None => {
                persist::ensure_private_dir(state_dir).map_err(|source| AddressBookError::Io {
                    path: book.path.clone(),
                    source,
                })?;
                book.save()?;
            }
        }
        Ok(book)
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Stored, AddressBookError> {
        let corrupt = |reason: String| AddressBookError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if stored.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "unknown format version {}",
                stored.version
            )));
        }
        if !stored.subnet.is_host(stored.own) {
            return Err(corrupt(format!(
                "own address {} outside {}",
                stored.own, stored.subnet
            )));
        }
        let mut seen = std::collections::HashSet::from([stored.own]);
        for entry in stored.devices.values() {
            if !stored.subnet.is_host(entry.addr) || !seen.insert(entry.addr) {
                return Err(corrupt(format!(
                    "address {} outside the subnet or used twice",
                    entry.addr
                )));
            }
        }
        Ok(stored)
    }

    fn encode(&self) -> Result<Vec<u8>, AddressBookError> {
        let stored = Stored {
            version: FORMAT_VERSION,
            subnet: self.subnet,
            own: self.own,
            devices: self.devices.clone(),
        };
        // Serializing plain data cannot fail; map it anyway instead of unwrapping.
        serde_json::to_vec_pretty(&stored).map_err(|e| AddressBookError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })
    }

    /// Writes the book now (pins, and the first start).
    fn save(&mut self) -> Result<(), AddressBookError> {
        let json = self.encode()?;
        persist::write_atomic(&self.path, &json, 0o600).map_err(|source| AddressBookError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.dirty = false;
        Ok(())
    }

    /// The book's file and what to write to it, if it changed since the last call: the
    /// engine writes it off its own task ([`crate::persist::Writer`]). A crash before the
    /// write loses only new addresses, which the same devices mostly get again (they start
    /// from a hash of the UID).
    pub fn take_dirty(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        match self.encode() {
            Ok(json) => Some((self.path.clone(), json)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the address book");
                None
            }
        }
    }

    pub fn subnet(&self) -> Ipv4Subnet {
        self.subnet
    }

    pub fn own_address(&self) -> Ipv4Addr {
        self.own
    }

    pub fn address_of(&self, uid: &Uid) -> Option<Ipv4Addr> {
        self.devices.get(uid).map(|e| e.addr)
    }

    pub fn entry(&self, uid: &Uid) -> Option<&AddressEntry> {
        self.devices.get(uid)
    }

    pub fn device_at(&self, addr: Ipv4Addr) -> Option<Uid> {
        self.by_addr.get(&addr).copied()
    }

    pub fn devices(&self) -> impl Iterator<Item = (&Uid, &AddressEntry)> {
        self.devices.iter()
    }

    /// The device's address, choosing one if it has none yet (a device configured by hand).
    pub fn assign(&mut self, uid: Uid) -> Result<Ipv4Addr, AddressBookError> {
        self.claim(uid, None, 0, |_| false)
    }

    /// The address of `uid`, a device of `owner` (when known) seen at `now` (seconds since
    /// the epoch), choosing one if it has none yet. An owner at [`MAX_PER_OWNER`] gives up
    /// the address of its least recently seen unpinned device that is not `in_use` (wanted or
    /// linked right now); a full subnet, the least recently seen unpinned address unseen for
    /// [`STALE_AFTER`]. A device recorded without an owner (a book from before owners were
    /// kept) counts against the owner that claims it.
    pub fn claim(
        &mut self,
        uid: Uid,
        owner: Option<&str>,
        now: u64,
        in_use: impl Fn(&Uid) -> bool,
    ) -> Result<Ipv4Addr, AddressBookError> {
        if let Some(entry) = self.devices.get(&uid) {
            let (ownerless, pinned) = (entry.owner.is_none(), entry.pinned);
            if let (true, Some(owner)) = (ownerless, owner) {
                if let Err(e) = self.make_room(owner, &uid, &in_use) {
                    if !pinned {
                        self.remove_entry(&uid);
                    }
                    return Err(e);
                }
            }
            let Some(entry) = self.devices.get_mut(&uid) else {
                return Err(AddressBookError::UnknownDevice);
            };
            if entry.owner.is_none() && owner.is_some() {
                entry.owner = owner.map(str::to_string);
                self.dirty = true;
            }
            // (A sighting in the future is a clock that was wrong: corrected by this one.)
            if entry.last_seen > now || now >= entry.last_seen.saturating_add(SEEN_GRANULARITY) {
                entry.last_seen = now;
                self.dirty = true;
            }
            return Ok(entry.addr);
        }
        if let Some(owner) = owner {
            self.make_room(owner, &uid, &in_use)?;
        }
        let addr = match self.free_address_for(&uid) {
            Ok(addr) => addr,
            Err(AddressBookError::Full(_)) => {
                let stale = self.oldest_unpinned(|u, e| {
                    !in_use(u) && now >= e.last_seen.saturating_add(STALE_AFTER)
                });
                let stale = stale.ok_or(AddressBookError::Full(self.subnet))?;
                tracing::debug!(device = %stale, "a long unseen device gives up its address");
                self.remove_entry(&stale);
                self.free_address_for(&uid)?
            }
            Err(e) => return Err(e),
        };
        self.insert(
            uid,
            AddressEntry {
                addr,
                pinned: false,
                owner: owner.map(str::to_string),
                last_seen: now,
            },
        );
        Ok(addr)
    }

    /// Makes room for one more device of `owner` (`uid`, not counted): at the cap, its least
    /// recently seen unpinned device not in use gives up its address.
    fn make_room(
        &mut self,
        owner: &str,
        uid: &Uid,
        in_use: &impl Fn(&Uid) -> bool,
    ) -> Result<(), AddressBookError> {
        let held = self
            .devices
            .iter()
            .filter(|(u, e)| *u != uid && e.owner.as_deref() == Some(owner))
            .count();
        if held < MAX_PER_OWNER {
            return Ok(());
        }
        let oldest = self
            .oldest_unpinned(|u, e| u != uid && !in_use(u) && e.owner.as_deref() == Some(owner));
        let Some(oldest) = oldest else {
            return Err(AddressBookError::TooManyDevices(owner.to_string()));
        };
        tracing::debug!(device = %oldest, "an account's oldest device gives up its address");
        self.remove_entry(&oldest);
        Ok(())
    }

    /// The least recently seen unpinned device among those `pick` selects.
    fn oldest_unpinned(&self, pick: impl Fn(&Uid, &AddressEntry) -> bool) -> Option<Uid> {
        self.devices
            .iter()
            .filter(|(u, e)| !e.pinned && pick(u, e))
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(u, _)| *u)
    }

    /// Pins the device to `addr`. An unpinned device holding `addr` moves elsewhere. All or
    /// nothing: on any error (no address left for the device moved away, the file cannot
    /// be written) the book is as it was. Written before it returns (a user's decision).
    pub fn pin(&mut self, uid: Uid, addr: Ipv4Addr) -> Result<(), AddressBookError> {
        if !self.subnet.is_host(addr) || addr == self.own {
            return Err(AddressBookError::OutsideSubnet {
                addr,
                subnet: self.subnet,
            });
        }
        let (owner, last_seen) = self
            .devices
            .get(&uid)
            .map(|e| (e.owner.clone(), e.last_seen))
            .unwrap_or_default();
        let pinned = AddressEntry {
            addr,
            pinned: true,
            owner,
            last_seen,
        };
        // Where the device holding `addr` goes, found before anything changes.
        let moved = match self.device_at(addr).filter(|h| *h != uid) {
            Some(holder) => {
                let Some(held) = self.devices.get(&holder).cloned() else {
                    return Err(AddressBookError::UnknownDevice);
                };
                if held.pinned {
                    return Err(AddressBookError::AddressTaken { addr });
                }
                Some((holder, held, self.free_address_for(&holder)?))
            }
            None => None,
        };
        let undo = (self.devices.clone(), self.by_addr.clone(), self.dirty);
        if let Some((holder, held, to)) = moved {
            self.remove_entry(&holder);
            self.insert(holder, AddressEntry { addr: to, ..held });
        }
        self.insert(uid, pinned);
        self.save().inspect_err(|_| {
            (self.devices, self.by_addr, self.dirty) = undo;
        })
    }

    /// Lets the device keep its address but allows it to be moved again.
    pub fn unpin(&mut self, uid: &Uid) -> Result<(), AddressBookError> {
        let entry = self
            .devices
            .get_mut(uid)
            .ok_or(AddressBookError::UnknownDevice)?;
        entry.pinned = false;
        self.save().inspect_err(|_| {
            if let Some(entry) = self.devices.get_mut(uid) {
                entry.pinned = true;
            }
        })
    }

    fn insert(&mut self, uid: Uid, entry: AddressEntry) {
        self.remove_entry(&uid);
        self.by_addr.insert(entry.addr, uid);
        self.devices.insert(uid, entry);
        self.dirty = true;
    }

    fn remove_entry(&mut self, uid: &Uid) {
        if let Some(old) = self.devices.remove(uid) {
            self.by_addr.remove(&old.addr);
            self.dirty = true;
        }
    }

    fn is_free(&self, addr: Ipv4Addr) -> bool {
        self.subnet.is_host(addr) && addr != self.own && !self.by_addr.contains_key(&addr)
    }

    /// First free host address at or after a UID-derived starting point.
    fn free_address_for(&self, uid: &Uid) -> Result<Ipv4Addr, AddressBookError> {
        let hosts = self.subnet.host_count();
        let b = uid.as_bytes();
        let start = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) % hosts;
        (0..hosts)
            .map(|i| self.subnet.host((start + i) % hosts + 1))
            .find(|a| self.is_free(*a))
            .ok_or(AddressBookError::Full(self.subnet))
    }
}

fn rebase(from: Ipv4Subnet, to: Ipv4Subnet, addr: Ipv4Addr) -> Ipv4Addr {
    let offset = from.offset_of(addr);
    let candidate = Ipv4Addr::from(u32::from(to.network()) | (offset & !to.mask()));
    if to.is_host(candidate) {
        candidate
    } else {
        to.host(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Ipv4Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/16")).unwrap();
        let uids: Vec<Uid> = (0..50u8).map(|i| Uid([i; 20])).collect();
        let addrs: Vec<_> = uids.iter().map(|u| book.assign(*u).unwrap()).collect();
        let (path, bytes) = book.take_dirty().expect("new addresses to write");
        persist::write_atomic(&path, &bytes, 0o600).unwrap();
        assert!(book.take_dirty().is_none());
        let mut unique = addrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), addrs.len());
        assert!(addrs
            .iter()
            .all(|a| book.subnet().is_host(*a) && *a != book.own_address()));
        book.pin(uids[0], Ipv4Addr::new(100, 64, 9, 9)).unwrap();

        let reopened = AddressBook::open(dir.path(), subnet("100.64.0.0/16")).unwrap();
        assert_eq!(reopened.own_address(), book.own_address());
        for (uid, addr) in uids.iter().zip(&addrs).skip(1) {
            assert_eq!(reopened.address_of(uid), Some(*addr));
            assert_eq!(reopened.device_at(*addr), Some(*uid));
        }
        let pinned = reopened.entry(&uids[0]).unwrap();
        assert_eq!(
            (pinned.addr, pinned.pinned),
            (Ipv4Addr::new(100, 64, 9, 9), true)
        );
    }

    #[test]
    fn pinning_moves_unpinned_holder_and_refuses_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.7.0/24")).unwrap();
        let (a, b, c) = (Uid([1; 20]), Uid([2; 20]), Uid([3; 20]));
        let addr_a = book.assign(a).unwrap();
        book.assign(b).unwrap();
        book.pin(b, addr_a).unwrap();
        assert_eq!(book.address_of(&b), Some(addr_a));
        assert_ne!(book.address_of(&a), Some(addr_a));
        assert!(book.address_of(&a).is_some());
        assert!(matches!(
            book.pin(c, addr_a),
            Err(AddressBookError::AddressTaken { .. })
        ));
        assert!(matches!(
            book.pin(c, Ipv4Addr::new(100, 64, 8, 1)),
            Err(AddressBookError::OutsideSubnet { .. })
        ));
        assert!(matches!(
            book.pin(c, book.own_address()),
            Err(AddressBookError::OutsideSubnet { .. })
        ));
    }

    #[test]
    fn a_pin_that_cannot_be_carried_out_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Six hosts: ours and five devices fill it.
        let mut book = AddressBook::open(dir.path(), subnet("100.64.7.0/29")).unwrap();
        let uids: Vec<Uid> = (1..=5).map(|i| Uid([i; 20])).collect();
        for uid in &uids {
            book.assign(*uid).unwrap();
        }
        let _ = book.take_dirty();
        let before: Vec<_> = uids.iter().map(|u| book.address_of(u)).collect();
        // Pinning device 1 to device 2's address would leave device 2 nowhere to go.
        let to = book.address_of(&uids[1]).unwrap();
        assert!(matches!(
            book.pin(uids[0], to).unwrap_err(),
            AddressBookError::Full(_)
        ));
        let after: Vec<_> = uids.iter().map(|u| book.address_of(u)).collect();
        assert_eq!(before, after);
        assert!(uids.iter().all(|u| !book.entry(u).unwrap().pinned));
        assert!(book.take_dirty().is_none(), "nothing to write");
        // A write that fails leaves the book as it was too.
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let free_pin = book.pin(uids[0], book.address_of(&uids[0]).unwrap());
        assert!(free_pin.is_err());
        assert!(!book.entry(&uids[0]).unwrap().pinned);
    }

    #[test]
    fn one_account_cannot_take_more_than_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/16")).unwrap();
        let friend = book
            .claim(Uid([200; 20]), Some("bob@svpn.test"), 1000, |_| false)
            .unwrap();
        // mallory mints device keys: each new one takes her oldest device's address.
        for i in 0..1000u32 {
            let mut key = [7u8; 20];
            key[..4].copy_from_slice(&i.to_be_bytes());
            book.claim(
                Uid(key),
                Some("mallory@svpn.test"),
                2000 + u64::from(i),
                |_| false,
            )
            .unwrap();
        }
        let mallory = book
            .devices()
            .filter(|(_, e)| e.owner.as_deref() == Some("mallory@svpn.test"))
            .count();
        assert_eq!(mallory, MAX_PER_OWNER);
        assert_eq!(
            book.address_of(&Uid([200; 20])),
            Some(friend),
            "bob keeps his"
        );
        // With all her devices pinned by the user, she gets no more.
        let held: Vec<Uid> = book
            .devices()
            .filter(|(_, e)| e.owner.as_deref() == Some("mallory@svpn.test"))
            .map(|(u, _)| *u)
            .collect();
        for (i, uid) in held.into_iter().enumerate() {
            book.pin(uid, Ipv4Addr::new(100, 64, 200, i as u8 + 1))
                .unwrap();
        }
        assert!(matches!(
            book.claim(Uid([9; 20]), Some("mallory@svpn.test"), 9000, |_| false),
            Err(AddressBookError::TooManyDevices(_))
        ));
    }

    #[test]
    fn devices_in_use_keep_their_addresses_and_ownerless_ones_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/16")).unwrap();
        let mallory = Some("mallory@svpn.test");
        // All seen in the same second (a flood): ties must not evict a device in use.
        let held: Vec<Uid> = (0..MAX_PER_OWNER as u8).map(|i| Uid([i; 20])).collect();
        for uid in &held {
            book.claim(*uid, mallory, 5000, |_| false).unwrap();
        }
        let in_use = |u: &Uid| held.contains(u);
        assert!(matches!(
            book.claim(Uid([99; 20]), mallory, 5000, in_use),
            Err(AddressBookError::TooManyDevices(_))
        ));
        for uid in &held {
            assert!(
                book.address_of(uid).is_some(),
                "a device in use lost its address"
            );
        }
        // A device recorded without an owner (a manual peer, an old book) is not a way
        // around the cap: claimed by a full owner, it gives up its address.
        let legacy = Uid([77; 20]);
        book.assign(legacy).unwrap();
        assert!(matches!(
            book.claim(legacy, mallory, 5000, in_use),
            Err(AddressBookError::TooManyDevices(_))
        ));
        assert_eq!(book.address_of(&legacy), None);
        let count = book
            .devices()
            .filter(|(_, e)| e.owner.as_deref() == mallory)
            .count();
        assert_eq!(count, MAX_PER_OWNER);
        // Once one is no longer in use, a newcomer takes its place.
        let newcomer = book.claim(Uid([99; 20]), mallory, 5000, |u| *u != held[3]);
        assert!(newcomer.is_ok());
        assert_eq!(book.address_of(&held[3]), None);
    }

    #[test]
    fn a_full_subnet_gives_away_long_unseen_addresses_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/29")).unwrap();
        // Five host addresses besides ours: all taken, one long unseen.
        for i in 0..5u8 {
            let seen = if i == 0 { 0 } else { STALE_AFTER };
            book.claim(Uid([i; 20]), Some(&format!("f{i}@svpn.test")), seen, |_| {
                false
            })
            .unwrap();
        }
        let now = STALE_AFTER + 10;
        let new = book
            .claim(Uid([9; 20]), Some("g@svpn.test"), now, |_| false)
            .unwrap();
        assert_eq!(book.address_of(&Uid([0; 20])), None, "the stale one went");
        assert_eq!(book.device_at(new), Some(Uid([9; 20])));
        assert!(matches!(
            book.claim(Uid([10; 20]), Some("h@svpn.test"), now, |_| false),
            Err(AddressBookError::Full(_))
        ));
    }

    #[test]
    fn full_subnet_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/30")).unwrap();
        book.assign(Uid([1; 20])).unwrap();
        assert!(matches!(
            book.assign(Uid([2; 20])),
            Err(AddressBookError::Full(_))
        ));
    }

    #[test]
    fn subnet_change_keeps_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = AddressBook::open(dir.path(), subnet("100.64.0.0/16")).unwrap();
        let uid = Uid([5; 20]);
        book.pin(uid, Ipv4Addr::new(100, 64, 3, 4)).unwrap();
        let moved = AddressBook::open(dir.path(), subnet("100.70.0.0/16")).unwrap();
        assert_eq!(moved.address_of(&uid), Some(Ipv4Addr::new(100, 70, 3, 4)));
        assert_eq!(moved.own_address(), Ipv4Addr::new(100, 70, 0, 1));
    }

    #[test]
    fn corrupt_file_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADDRESS_BOOK_FILE);
        for bad in [
            "{",
            r#"{"version":1,"subnet":"100.64.0.0/16","own":"100.65.0.1","devices":{}}"#,
            r#"{"version":1,"subnet":"100.64.0.0/16","own":"100.64.0.1","devices":{},"x":1}"#,
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = AddressBook::open(dir.path(), subnet("100.64.0.0/16"))
                .err()
                .unwrap();
            assert!(matches!(err, AddressBookError::Corrupt { .. }), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
    }
}
