//! The daemon's control socket: JSON lines over a Unix socket only its owner may use.

use serde_json::{json, Value};
use socialvpn_core::control::{Request, MAX_REQUEST};
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
        let mut line = String::new();
        let mut reader = AsyncBufReader::new(read).take(MAX_REQUEST as u64);
        let answer = match reader.read_line(&mut line).await {
            Ok(n) if n > 0 => match Request::parse(line.as_bytes()) {
                Ok(request) => handle(engine, request).await,
                Err(e) => json!({ "error": e.to_string() }),
            },
            _ => return,
        };
        let mut text = answer.to_string();
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    })
    .await;
}

async fn handle(engine: &Engine, request: Request) -> Value {
    fn reply<T: serde::Serialize, E: std::fmt::Display>(r: Result<T, E>) -> Value {
        match r {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
    match request {
        Request::Status => reply(engine.status().await),
        Request::Roster => reply(engine.roster().await),
        Request::NetworkChanged => reply(engine.network_changed().await),
        Request::Friend { action, jid } => reply(engine.friend(action, &jid).await),
    }
}

/// Sends one request to the daemon and returns its answer (the `ok` value).
pub fn request(path: &Path, request: &Request) -> Result<Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the daemon at {} ({e}); is `socialvpn up` running?",
            path.display()
        )
    })?;
    let timeout = Some(Duration::from_secs(10));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    writeln!(stream, "{}", request.to_line()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from the daemon: {e}"))?;
    let answer: Value = serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))?;
    match answer.get("error") {
        Some(e) => Err(e.as_str().unwrap_or("error").to_string()),
        None => Ok(answer["ok"].clone()),
    }
}
