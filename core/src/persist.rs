//! Atomic replacement of small state files.
//!
//! Every persisted file (device key, address book, later the toggles) is written to a temporary
//! file beside it, fsynced, renamed over the old one and the directory fsynced: a crash or a
//! full disk leaves either the old or the new content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically with the given Unix permission bits.
///
/// The temporary file has an unpredictable name and is created exclusively without
/// following links (`O_EXCL | O_NOFOLLOW`): someone who can write to the directory cannot
/// make a privileged daemon write through a link they planted.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let (tmp, mut file) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{:016x}.tmp", rand::random::<u64>()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // A name taken by chance (or planted): draw another.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates the state directory (0700) if it does not exist yet. An existing one must be a
/// real directory owned by this user; access for others is taken away.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        Err(e) => return Err(e),
    };
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != own_uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a directory owned by this user (uid {own_uid})",
                dir.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), "state directory was open to others; now 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes files in the background, the latest content of each path winning: the engine's
/// task hands over what changed and goes on (two fsyncs per write are no work for the task
/// that moves packets). [`Writer::finish`] (and drop) writes what is pending and waits.
pub struct Writer {
    shared: std::sync::Arc<WriterShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct WriterShared {
    state: std::sync::Mutex<WriterState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct WriterState {
    pending: std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    closed: bool,
}

impl Writer {
    pub fn new() -> io::Result<Writer> {
        let shared = std::sync::Arc::new(WriterShared::default());
        let worker = std::sync::Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("socialvpn-persist".into())
            .spawn(move || worker.run())?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `bytes` for `path` (0600), replacing what was queued for it.
    pub fn write(&self, path: std::path::PathBuf, bytes: Vec<u8>) {
        let mut state = self.shared.lock();
        state.pending.insert(path, bytes);
        self.shared.wake.notify_one();
    }

    /// Writes what is pending and stops.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WriterShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            let next = {
                let mut state = self.lock();
                loop {
                    if let Some(path) = state.pending.keys().next().cloned() {
                        let bytes = state.pending.remove(&path).unwrap_or_default();
                        break Some((path, bytes));
                    }
                    if state.closed {
                        break None;
                    }
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            let Some((path, bytes)) = next else { return };
            if let Err(e) = write_atomic(&path, &bytes, 0o600) {
                tracing::warn!(path = %path.display(), error = %e, "cannot save state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        // Links at every name an old, predictable temporary file had.
        for pid in [std::process::id(), 1, 2] {
            let planted = dir.path().join(format!(".state.json.tmp{pid}"));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        let path = dir.path().join("state.json");
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn an_open_state_directory_is_closed_and_a_foreign_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&state).unwrap();
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A link to a directory is not the state directory.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(ensure_private_dir(&link).is_err());
        // Nor is a directory owned by someone else.
        let foreign = dir.path().join("foreign");
        fs::create_dir(&foreign).unwrap();
        let path = std::ffi::CString::new(foreign.to_str().unwrap()).unwrap();
        // SAFETY: chown of a directory we just made, by a NUL-terminated path.
        if unsafe { libc::chown(path.as_ptr(), 65534, 65534) } == 0 {
            assert!(ensure_private_dir(&foreign).is_err());
        }
    }

    #[test]
    fn the_writer_keeps_the_latest_content_and_writes_it_before_finishing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.json");
        let writer = Writer::new().unwrap();
        for i in 0..100 {
            writer.write(path.clone(), format!("version {i}").into_bytes());
        }
        writer.finish();
        assert_eq!(fs::read_to_string(&path).unwrap(), "version 99");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn failed_write_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write_atomic(&path, b"old", 0o600).unwrap();
        // Renaming over a directory fails: the old content must survive.
        let target = dir.path().join("sub");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("f"), b"").unwrap();
        assert!(write_atomic(&target, b"new", 0o600).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
