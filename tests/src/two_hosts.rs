//! The smallest world: two namespaces joined by a veth, each running a data-plane node on a
//! real TUN, linked to each other. Users pick different subnets, so each sees the other at
//! an address of its own.

use crate::netns::{require_root, veth, Namespace};
use crate::node::DpNode;
use std::path::{Path, PathBuf};

pub const A_UNDERLAY: &str = "198.18.0.1";
pub const B_UNDERLAY: &str = "198.18.0.2";
pub const PORT: u16 = 51820;
pub const A_SUBNET: &str = "100.64.0.0/16";
pub const B_SUBNET: &str = "100.65.0.0/16";

/// A directory removed when dropped.
pub struct StateDir(pub PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct TwoHosts {
    // Field order is drop order: processes first, then namespaces, then state.
    pub node_a: DpNode,
    pub node_b: DpNode,
    pub a: Namespace,
    pub b: Namespace,
    /// B as A sees it, and A as B sees it.
    pub b_at_a: String,
    pub a_at_b: String,
    pub state: StateDir,
    bin: PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl TwoHosts {
    pub fn new(tag: &str, node_bin: &Path) -> TwoHosts {
        Self::with_env(tag, node_bin, &[])
    }

    /// Two hosts whose nodes run with extra environment (`SOCIALVPN_TUN_MODE=raw`: each
    /// engine gets its tun as a phone hands it over, without offloads).
    pub fn with_env(tag: &str, node_bin: &Path, env: &[(&'static str, &'static str)]) -> TwoHosts {
        require_root();
        let a = Namespace::new(&format!("{tag}a"));
        let b = Namespace::new(&format!("{tag}b"));
        veth(
            &a,
            "eth0",
            &format!("{A_UNDERLAY}/24"),
            &b,
            "eth0",
            &format!("{B_UNDERLAY}/24"),
        );
        let state = StateDir(std::env::temp_dir().join(format!("{}-state", a.name())));
        let mut node_a = start(node_bin, &a, &state.0.join("a"), A_SUBNET, A_UNDERLAY, env);
        let mut node_b = start(node_bin, &b, &state.0.join("b"), B_SUBNET, B_UNDERLAY, env);
        let b_at_a = node_a.add_peer(&node_b.public_key, &format!("{B_UNDERLAY}:{PORT}"));
        let a_at_b = node_b.add_peer(&node_a.public_key, &format!("{A_UNDERLAY}:{PORT}"));
        TwoHosts {
            node_a,
            node_b,
            a,
            b,
            b_at_a,
            a_at_b,
            state,
            bin: node_bin.to_path_buf(),
            env: env.to_vec(),
        }
    }

    /// Kills A's node (as a crash would) and starts it again on the same state directory.
    pub fn restart_a(&mut self) {
        self.node_a.kill();
        self.node_a = start(
            &self.bin,
            &self.a,
            &self.state.0.join("a"),
            A_SUBNET,
            A_UNDERLAY,
            &self.env,
        );
    }
}

fn start(
    bin: &Path,
    ns: &Namespace,
    state: &Path,
    subnet: &str,
    underlay: &str,
    env: &[(&str, &str)],
) -> DpNode {
    DpNode::start_with(
        bin,
        ns,
        state,
        "svpn0",
        subnet,
        &format!("{underlay}:{PORT}"),
        None,
        env,
    )
}

/// Pings `target` (IPv4 or IPv6) three times from inside `ns`; true when replies came back.
pub fn ping(ns: &Namespace, target: &str) -> bool {
    let mut args = vec!["-c", "3", "-i", "0.2", "-W", "2", "-w", "10"];
    if target.contains(':') {
        args.insert(0, "-6");
    }
    args.push(target);
    let out = ns.output("ping", &args);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
    out.status.success()
}
