//! The world's DNS server: dnsmasq (Debian's `dnsmasq-base`, no service) in the internet
//! namespace, serving only the records a test gives it — SRV records and the addresses of
//! their targets, nothing on the bare domain, so a client that ignores SRV fails.

use crate::netns::{ChildGuard, Namespace};
use crate::world_files::{log_file, terminate, wait_ready};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// One record the server answers with.
#[derive(Clone, Debug)]
pub enum DnsRecord {
    /// `_service._tcp.domain` → `target:port`.
    Srv {
        name: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
    /// `name` → an IPv4 address.
    A { name: String, addr: Ipv4Addr },
}

pub(crate) struct Dnsmasq {
    dir: PathBuf,
    listen: Ipv4Addr,
    process: Option<ChildGuard>,
}

impl Dnsmasq {
    pub(crate) fn new(state: &Path, listen: Ipv4Addr) -> Dnsmasq {
        let dir = state.join("dns");
        crate::world_files::mkdir(&dir, 0o755);
        Dnsmasq {
            dir,
            listen,
            process: None,
        }
    }

    /// The queries it was asked, one per line (dnsmasq's `--log-queries`).
    pub(crate) fn queries(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("dnsmasq.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("query["))
            .map(str::to_string)
            .collect()
    }

    /// (Re)starts the server answering with `records` only, and waits until it listens.
    pub(crate) fn serve(&mut self, inet: &Namespace, records: &[DnsRecord]) {
        if let Some(mut old) = self.process.take() {
            terminate(&mut old, Duration::from_secs(2));
        }
        let log = self.dir.join("dnsmasq.log");
        let out = log_file(&log);
        let mut cmd = inet.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--bind-interfaces",
            "--port=53",
            "--local=/test/",
            "--log-queries",
            "--log-facility=-",
        ])
        .arg(format!("--listen-address={}", self.listen));
        for record in records {
            cmd.arg(match record {
                DnsRecord::Srv {
                    name,
                    target,
                    port,
                    priority,
                    weight,
                } => format!("--srv-host={name},{target},{port},{priority},{weight}"),
                DnsRecord::A { name, addr } => format!("--host-record={name},{addr}"),
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("cannot start dnsmasq");
        let mut child = ChildGuard(child);
        let listening = format!("{}:53 ", self.listen);
        wait_ready(
            "dnsmasq",
            &mut child,
            &[log],
            Duration::from_secs(10),
            || {
                let out = inet.output("ss", &["-lun"]);
                String::from_utf8_lossy(&out.stdout).contains(&listening)
            },
        );
        self.process = Some(child);
    }
}
