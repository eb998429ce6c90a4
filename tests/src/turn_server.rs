//! The world's STUN/TURN server (coturn) and a small STUN client to probe it.

use crate::netns::{ChildGuard, Namespace};
use crate::world_files::{log_file, mkdir, terminate, wait_ready};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(10);

/// coturn with long-term credentials on UDP, listening on two addresses (RFC 5780).
/// How coturn checks credentials.
pub(crate) enum CoturnAuth {
    /// One static long-term user, `user:password`.
    LongTerm(String),
    /// The TURN REST API's shared secret: usernames carry their expiry, passwords are
    /// HMACs of them (what XMPP servers hand out by XEP-0215).
    SharedSecret(String),
}

pub(crate) struct Coturn {
    dir: PathBuf,
    listen: [Ipv4Addr; 2],
    port: u16,
    relay_ports: (u16, u16),
    auth: CoturnAuth,
    realm: String,
    process: Option<ChildGuard>,
}

impl Coturn {
    pub(crate) fn new(
        state: &Path,
        listen: [Ipv4Addr; 2],
        port: u16,
        relay_ports: (u16, u16),
        auth: CoturnAuth,
        realm: &str,
    ) -> Coturn {
        let dir = state.join(match auth {
            CoturnAuth::LongTerm(_) => "turn",
            CoturnAuth::SharedSecret(_) => "turn-rest",
        });
        mkdir(&dir, 0o755);
        Coturn {
            dir,
            listen,
            port,
            relay_ports,
            auth,
            realm: realm.to_string(),
            process: None,
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("turnserver.log")
    }

    /// Starts coturn (if it is not running) and waits until it answers a STUN binding. Its
    /// allocations do not survive a restart.
    pub(crate) fn start(&mut self, inet: &Namespace) {
        if self.pid().is_some() {
            return;
        }
        let stdout = self.dir.join("stdout.log");
        let out = log_file(&stdout);
        let p = |name: &str| self.dir.join(name).to_str().expect("UTF-8").to_string();
        let (min, max) = (
            self.relay_ports.0.to_string(),
            self.relay_ports.1.to_string(),
        );
        let child = inet
            .command("turnserver")
            .args([
                "-n",
                "--db",
                &p("turndb"),
                "--pidfile",
                &p("turnserver.pid"),
            ])
            .args(["--log-file", &p("turnserver.log"), "--simple-log"])
            .args(["--listening-ip", &self.listen[0].to_string()])
            .args(["--listening-ip", &self.listen[1].to_string()])
            .args(["--relay-ip", &self.listen[0].to_string()])
            .args(["--listening-port", &self.port.to_string()])
            .args(["--min-port", &min, "--max-port", &max])
            .args(match &self.auth {
                CoturnAuth::LongTerm(user) => ["--lt-cred-mech", "--user", user],
                CoturnAuth::SharedSecret(secret) => {
                    ["--use-auth-secret", "--static-auth-secret", secret]
                }
            })
            .args(["--realm", &self.realm])
            .args(["--fingerprint", "--no-tls", "--no-dtls", "--no-cli"])
            // The log names every request's user and outcome: tests read which credentials
            // (their expiry) each allocation was made with, and which requests were refused.
            .arg("--verbose")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("cannot start turnserver");
        let mut child = ChildGuard(child);
        let server = SocketAddr::V4(SocketAddrV4::new(self.listen[0], self.port));
        wait_ready(
            "coturn",
            &mut child,
            &[stdout, self.log_path()],
            READY,
            || stun_binding(inet, server, Duration::from_millis(200)).is_some(),
        );
        self.process = Some(child);
    }

    pub(crate) fn pid(&mut self) -> Option<u32> {
        self.process.as_mut()?.running_pid()
    }

    /// Stops coturn (SIGTERM, SIGKILL after a second): every allocation is gone.
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            terminate(&mut p, Duration::from_secs(1));
        }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }
}

/// One STUN Binding request from a fresh UDP socket inside `ns`; the mapped address the
/// server saw, or None if no answer came within `timeout`.
pub fn stun_binding(ns: &Namespace, server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
        stun_mapped(&sock, server, timeout)
    })
    .join()
    .ok()
    .flatten()
}

/// Sends a STUN Binding request from `sock` to `server` (retransmitting every 100 ms) and
/// returns the (XOR-)MAPPED-ADDRESS of the answer, or None after `timeout`.
pub fn stun_mapped(sock: &UdpSocket, server: SocketAddr, timeout: Duration) -> Option<SocketAddr> {
    static REQUESTS: AtomicU32 = AtomicU32::new(0);
    let mut txid = [0u8; 12];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos()
        ^ (u128::from(std::process::id()) << 64)
        ^ (u128::from(REQUESTS.fetch_add(1, Ordering::Relaxed)) << 32);
    txid.copy_from_slice(&seed.to_be_bytes()[4..16]);
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&txid);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&req, server).ok()?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100))
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(wait)).ok()?;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == server && n >= 20 && buf[..2] == [0x01, 0x01] && buf[8..20] == txid {
                return parse_mapped(&buf[..n]);
            }
        }
    }
    None
}

fn parse_mapped(msg: &[u8]) -> Option<SocketAddr> {
    let len = u16::from_be_bytes([msg[2], msg[3]]) as usize;
    let body = msg.get(20..20 + len)?;
    let mut plain = None;
    let mut i = 0;
    while i + 4 <= body.len() {
        let t = u16::from_be_bytes([body[i], body[i + 1]]);
        let l = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let v = body.get(i + 4..i + 4 + l)?;
        if (t == 0x0020 || t == 0x0001) && l == 8 && v[1] == 1 {
            let mut port = u16::from_be_bytes([v[2], v[3]]);
            let mut ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]);
            if t == 0x0020 {
                port ^= 0x2112;
                ip ^= 0x2112_a442;
                return Some(SocketAddr::from((Ipv4Addr::from(ip), port)));
            }
            plain = Some(SocketAddr::from((Ipv4Addr::from(ip), port)));
        }
        i += 4 + l.div_ceil(4) * 4;
    }
    plain
}
