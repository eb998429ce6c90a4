//! The files in the state directory, as a crash, a full disk or another program may leave
//! them: each loads or is refused with an error, never a panic; what loads keeps its
//! invariants and survives being written back and read again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socialvpn_core::addrbook::{AddressBook, ADDRESS_BOOK_FILE};
use socialvpn_core::identity::{DeviceIdentity, KEY_FILE};
use socialvpn_core::social::toggles::{Toggles, TOGGLES_FILE};
use socialvpn_core::Uid;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("svpn-fuzz-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        dir
    })
}

const SUBNETS: [&str; 3] = ["100.64.0.0/16", "100.64.7.0/24", "100.100.0.0/30"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, content)) = data.split_first() else {
        return;
    };
    let dir = dir();
    for f in [ADDRESS_BOOK_FILE, TOGGLES_FILE, KEY_FILE] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    match mode % 3 {
        0 => address_book(dir, content, SUBNETS[(mode as usize / 3) % SUBNETS.len()]),
        1 => toggles(dir, content),
        _ => identity(dir, content),
    }
});

fn address_book(dir: &PathBuf, content: &[u8], subnet: &str) {
    std::fs::write(dir.join(ADDRESS_BOOK_FILE), content).unwrap();
    let subnet = subnet.parse().unwrap();
    let Ok(mut book) = AddressBook::open(dir, subnet) else {
        return;
    };
    let mut seen = HashSet::new();
    assert!(book.subnet().contains(book.own_address()));
    seen.insert(book.own_address());
    for (_, entry) in book.devices() {
        assert!(
            book.subnet().contains(entry.addr),
            "{entry:?} outside {subnet}"
        );
        assert!(seen.insert(entry.addr), "{} given twice", entry.addr);
    }
    // A new device of a known owner, seen now: an address or a clear refusal.
    let owner = book.devices().find_map(|(_, e)| e.owner.clone());
    let newcomer = Uid::from_public_key(&[7; 32]);
    let _ = book.claim(newcomer, owner.as_deref(), 1_900_000_000, |_| false);
    let before: Vec<_> = book.devices().map(|(u, e)| (*u, e.clone())).collect();
    if let Some((path, bytes)) = book.take_dirty() {
        std::fs::write(path, bytes).unwrap();
        let again = AddressBook::open(dir, subnet).expect("a book we wrote does not load");
        let after: Vec<_> = again.devices().map(|(u, e)| (*u, e.clone())).collect();
        assert_eq!(before, after);
        assert_eq!(again.own_address(), book.own_address());
    }
}

fn toggles(dir: &PathBuf, content: &[u8]) {
    std::fs::write(dir.join(TOGGLES_FILE), content).unwrap();
    let Ok(mut toggles) = Toggles::open(dir) else {
        return;
    };
    let bob = "bob@svpn.test".parse().unwrap();
    let _ = toggles.set(&bob, false).unwrap();
    let again = Toggles::open(dir).expect("toggles we wrote do not load");
    assert!(!again.is_enabled(&bob));
}

fn identity(dir: &PathBuf, content: &[u8]) {
    std::fs::write(dir.join(KEY_FILE), content).unwrap();
    let Ok(identity) = DeviceIdentity::load_or_create(dir) else {
        return;
    };
    let again = DeviceIdentity::load_or_create(dir).expect("the key loaded once, not twice");
    assert_eq!(identity.uid(), again.uid());
}
