//! `socialvpn up` daemons in the social world, driven through the `socialvpn` command line
//! as a user would (the CLI's end-to-end test, and the Rust peers of the JVM bindings test).

use crate::netns::ChildGuard;
use crate::social_world::{SocialWorld, TURN_PASSWORD, TURN_USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct CliDaemon {
    pub process: ChildGuard,
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    bin: PathBuf,
}

/// Writes the daemon's config (password `pw-USER`, the world's servers) under the world's
/// state directory; returns the config, control socket and log paths.
pub fn config(
    w: &SocialWorld,
    host: &str,
    user: &str,
    subnet: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let dir = w.state_dir().join(format!("cli-{host}"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    std::fs::write(dir.join("password"), format!("pw-{user}\n")).unwrap();
    let _ = std::fs::set_permissions(
        dir.join("password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    let path = dir.join("socialvpn.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\ncontrol_socket = \"{}\"\n[account]\njid = \"{user}@svpn.test\"\n\
             password_file = \"{}\"\nserver = \"{}\"\nca_file = \"{}\"\n[network]\nsubnet = \"{subnet}\"\n\
             [ice]\nstun = \"{}\"\nturn = \"{}\"\nturn_user = \"{TURN_USER}\"\nturn_password = \"{TURN_PASSWORD}\"\n",
            dir.join("state").display(),
            socket.display(),
            dir.join("password").display(),
            w.xmpp_addr(),
            w.ca_cert_path().display(),
            w.stun_addr(),
            w.turn_addr(),
        ),
    )
    .unwrap();
    (path, socket, dir.join("daemon.log"))
}

/// Starts `BIN up` on `host` as `user@svpn.test` and waits until it is logged in.
pub fn up(bin: &Path, w: &SocialWorld, host: &str, user: &str, subnet: &str) -> CliDaemon {
    up_with_log(bin, w, host, user, subnet, None)
}

/// [`up`] with `RUST_LOG` set to `log_filter`.
pub fn up_with_log(
    bin: &Path,
    w: &SocialWorld,
    host: &str,
    user: &str,
    subnet: &str,
    log_filter: Option<&str>,
) -> CliDaemon {
    let (path, socket, log) = config(w, host, user, subnet);
    let d = start(bin, w, host, (path, socket, log), log_filter);
    assert!(
        d.wait(Duration::from_secs(20), &["status"], |out| out
            .contains("XMPP: online")),
        "daemon did not log in: {}",
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    d
}

/// Starts `BIN up` on `host` with the (config, control socket, log) that [`config`] wrote
/// (perhaps edited since); does not wait for anything.
pub fn start(
    bin: &Path,
    w: &SocialWorld,
    host: &str,
    (path, socket, log): (PathBuf, PathBuf, PathBuf),
    log_filter: Option<&str>,
) -> CliDaemon {
    let file = std::fs::File::create(&log).unwrap();
    let mut command = w.host(host).command(bin.to_str().expect("UTF-8 path"));
    if let Some(filter) = log_filter {
        command.env("RUST_LOG", filter);
    }
    let process = command
        .args(["up", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    CliDaemon {
        process: ChildGuard(process),
        socket,
        config: path.clone(),
        log,
        bin: bin.to_path_buf(),
    }
}

impl CliDaemon {
    /// Runs `BIN ARGS --socket SOCKET`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .args(["--socket", self.socket.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// Runs `BIN ARGS --config CONFIG`: the socket comes from the daemon's configuration.
    pub fn cli_by_config(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .args(["--config", self.config.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// The command's stdout; panics if it fails.
    pub fn text(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Repeats the command until `pred` holds on its output (false after `within`).
    pub fn wait(&self, within: Duration, args: &[&str], pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let out = self.cli(args);
            if out.status.success() && pred(&String::from_utf8_lossy(&out.stdout)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }
}
