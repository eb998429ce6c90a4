//! Small helpers the test world uses to write its files and wait for its servers.

use crate::netns::{ChildGuard, Namespace};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub(crate) fn check(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}

pub(crate) fn log_file(p: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `chown -R user:user dir`: servers that drop root read their own files.
pub(crate) fn chown(dir: &Path, user: &str) {
    let out = Command::new("chown")
        .args(["-R", &format!("{user}:{user}")])
        .arg(dir)
        .output()
        .expect("cannot run chown");
    check(out, &format!("chown {user}"));
}

/// Polls `probe` until it succeeds; panics with the logs if the process exits first or the
/// time runs out.
pub(crate) fn wait_ready(
    what: &str,
    child: &mut ChildGuard,
    logs: &[PathBuf],
    limit: Duration,
    mut probe: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        if probe() {
            return;
        }
        let exited = child.0.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let mut text = String::new();
            for l in logs {
                let s = std::fs::read_to_string(l).unwrap_or_default();
                let tail: Vec<&str> = s.lines().rev().take(40).collect();
                text.push_str(&format!("--- {}\n", l.display()));
                for line in tail.iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            match exited {
                Some(status) => panic!("{what} exited ({status}) before it was ready\n{text}"),
                None => panic!("{what} not ready after {limit:?}\n{text}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when a TCP connection to `addr` from inside `ns` succeeds within `timeout`.
pub fn wait_port(ns: &Namespace, addr: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
        .join()
        .unwrap_or(false)
}

/// Sends SIGTERM to a child and waits up to `grace` for it to exit; SIGKILL after that.
pub(crate) fn terminate(child: &mut ChildGuard, grace: Duration) {
    if let Ok(None) = child.0.try_wait() {
        // SAFETY: signalling our own unreaped child by its PID.
        unsafe { libc::kill(child.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child.kill();
}
