//! The world's own OAuth authorization server (`tests/world/oauth_server.py`, on Debian's
//! python3-oauthlib): the authorization code with PKCE for the app's browser sign-in, and the
//! token look-ups ejabberd makes with `oauth_db_type: rest`, so that its tokens log in over
//! SASL X-OAUTH2. It runs in the internet namespace at [`AUTH_SERVER_ADDR`] under the name
//! [`AUTH_SERVER_NAME`] (the world's certificate names `*.svpn.test`), with its own accounts:
//! an identity provider apart from the XMPP server.

use crate::netns::{ChildGuard, Namespace};
use crate::world_files::{log_file, terminate, wait_port, wait_ready, write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub const AUTH_SERVER_NAME: &str = "as.svpn.test";
pub const AUTH_SERVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 4), 8443);
/// The app's registration at the server (a public client: no secret).
pub const AUTH_CLIENT_ID: &str = "socialvpn";
/// Redirects go to a loopback listener of the app (RFC 8252).
const REDIRECT_PREFIX: &str = "http://127.0.0.1:";
/// Shared by ejabberd (`ext_api_headers`) and the tests' revocations.
pub(crate) const API_SECRET: &str = "world-token-lookup-secret";
const INTERPRETER: &str = "/usr/bin/python3";

pub(crate) struct AuthServer {
    dir: PathBuf,
    ca_cert: PathBuf,
    process: Option<ChildGuard>,
}

impl AuthServer {
    /// Starts the server with `accounts` (JID, password) and waits until it listens.
    pub(crate) fn start(
        state: &Path,
        inet: &Namespace,
        certs: &crate::certs::WorldCerts,
        accounts: &[(String, String)],
    ) -> AuthServer {
        let dir = state.join("auth-server");
        crate::world_files::mkdir(&dir, 0o700);
        let users: serde_json::Map<String, serde_json::Value> = accounts
            .iter()
            .map(|(jid, pw)| (jid.clone(), serde_json::Value::String(pw.clone())))
            .collect();
        let users_file = dir.join("users.json");
        write(&users_file, &serde_json::Value::Object(users).to_string());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("world/oauth_server.py");
        let log = dir.join("server.log");
        let out = log_file(&log);
        let child = inet
            .command(INTERPRETER)
            .arg(&script)
            .arg("--listen")
            .arg(AUTH_SERVER_ADDR.to_string())
            .arg("--cert")
            .arg(&certs.server_cert)
            .arg("--key")
            .arg(&certs.server_key)
            .arg("--users")
            .arg(&users_file)
            .args(["--client-id", AUTH_CLIENT_ID])
            .args(["--redirect-uri-prefix", REDIRECT_PREFIX])
            .args(["--secret", API_SECRET])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the authorization server: {e}"));
        let mut child = ChildGuard(child);
        wait_ready(
            "the authorization server",
            &mut child,
            std::slice::from_ref(&log),
            Duration::from_secs(20),
            || {
                wait_port(
                    inet,
                    SocketAddr::V4(AUTH_SERVER_ADDR),
                    Duration::from_millis(200),
                )
            },
        );
        AuthServer {
            dir,
            ca_cert: certs.ca_cert.clone(),
            process: Some(child),
        }
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Revokes a token at once (ejabberd asks on every login: no cache).
    pub(crate) fn revoke(&self, inet: &Namespace, token: &str) {
        let url = format!(
            "https://{AUTH_SERVER_NAME}:{}/admin/revoke",
            AUTH_SERVER_ADDR.port()
        );
        let resolve = format!(
            "{AUTH_SERVER_NAME}:{}:{}",
            AUTH_SERVER_ADDR.port(),
            AUTH_SERVER_ADDR.ip()
        );
        let body = serde_json::json!({ "token": token }).to_string();
        let out = inet.output(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "10",
                "--cacert",
                self.ca_cert.to_str().expect("UTF-8 path"),
                "--resolve",
                &resolve,
                "-H",
                &format!("Authorization: Bearer {API_SECRET}"),
                "-H",
                "content-type: application/json",
                "--data",
                &body,
                &url,
            ],
        );
        assert!(
            out.status.success(),
            "revoke: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            terminate(&mut p, Duration::from_secs(2));
        }
    }
}
