//! The daemon's control socket: the control protocol (`socialvpn_core::api`), one JSON
//! request line and one reply line per connection, over a Unix socket only its owner may use.

use socialvpn_core::api::{FriendView, Request, Response, StatusView, MAX_REQUEST};
use socialvpn_core::Engine;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};

/// Binds the socket (directory 0700, socket 0600), replacing a stale one of ours.
///
/// The directory must be ours, a real directory and closed to others: a daemon running as
/// root must not be steered through someone else's directory or symlink.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| refuse(format!("{} has no directory", path.display())))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != own_uid || meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "{} must be a directory owned by this user and writable by no one else",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(existing) => {
            if !existing.file_type().is_socket() || existing.uid() != own_uid {
                return Err(refuse(format!(
                    "{} exists and is not our socket",
                    path.display()
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("a daemon is already listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The socket is created 0600 from the start (no window in which others could connect).
    // SAFETY: umask only changes this process's file creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    listener
}

/// Serves one connection: one request line, one answer line.
pub async fn serve(stream: UnixStream, engine: &Engine) {
    // SAFETY: geteuid has no preconditions.
    let own_uid = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == own_uid => {}
        _ => return,
    }
    // One deadline for the whole exchange: a client that stalls cannot hold the daemon.
    let _ = tokio::time::timeout(Duration::from_secs(5), async move {
        let (read, mut write) = stream.into_split();
        // Bytes, not text: whatever arrives gets an answer (bad UTF-8 a `bad_request`).
        let mut line = Vec::new();
        let mut reader = AsyncBufReader::new(read).take(MAX_REQUEST as u64 + 1);
        let answer = match reader.read_until(b'\n', &mut line).await {
            Ok(n) if n > 0 => engine.handle_bytes(&line).await,
            _ => return,
        };
        // The newline written apart: the answer is sized exactly, and appending to it would
        // copy a large reply (a roster of 1 000 friends) into a buffer twice its size.
        if write.write_all(&answer).await.is_ok() {
            let _ = write.write_all(b"\n").await;
        }
    })
    .await;
}

/// Sends one request to the daemon and returns its answer; an error reply is the error.
pub fn request(path: &Path, request: &Request) -> Result<Response, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the daemon at {} ({e}); is `socialvpn up` running?",
            path.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(10));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut line = request.encode();
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .map_err(|e| format!("no answer from the daemon: {e}"))?;
    let response = Response::decode(&answer).map_err(|e| {
        format!("bad answer from the daemon ({e}); if it was started before an upgrade, restart it")
    })?;
    response.into_result().map_err(|e| e.message)
}

/// A request whose answer is `Done`.
pub fn done(path: &Path, request: &Request) -> Result<(), String> {
    match self::request(path, request)? {
        Response::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}

pub fn status(path: &Path) -> Result<StatusView, String> {
    match request(path, &Request::Status)? {
        Response::Status { status } => Ok(*status),
        other => Err(unexpected(&other)),
    }
}

pub fn roster(path: &Path) -> Result<Vec<FriendView>, String> {
    match request(path, &Request::Roster)? {
        Response::Roster { friends } => Ok(friends),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(response: &Response) -> String {
    format!("unexpected answer from the daemon: {response:?}")
}
