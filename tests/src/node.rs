//! A `socialvpn-dpnode` process inside a namespace, driven over its stdin/stdout.

use crate::netns::{ChildGuard, Namespace};
use serde_json::Value;
use socialvpn_core::api::{FriendAction, Request};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct DpNode {
    child: ChildGuard,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    pub uid: String,
    pub public_key: String,
    pub ipv4: String,
    pub ipv6: String,
}

impl DpNode {
    /// Starts the node and waits for its hello line (identity and own addresses).
    pub fn start(
        bin: &Path,
        ns: &Namespace,
        state: &Path,
        tun: &str,
        subnet: &str,
        listen: &str,
    ) -> DpNode {
        Self::start_with(bin, ns, state, tun, subnet, listen, None, &[])
    }

    /// Starts a node that logs in to XMPP with the JSON social configuration at `social`,
    /// with extra environment (`SOCIALVPN_TUN_MODE=raw`: the tun as a phone hands it over).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        bin: &Path,
        ns: &Namespace,
        state: &Path,
        tun: &str,
        subnet: &str,
        listen: &str,
        social: Option<&Path>,
        env: &[(&str, &str)],
    ) -> DpNode {
        let mut args = vec![state.to_str().unwrap_or_default(), tun, subnet, listen];
        if let Some(path) = social {
            args.push(path.to_str().unwrap_or_default());
        }
        let mut child = ns
            .command(bin.to_str().unwrap_or_default())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = DpNode {
            child: ChildGuard(child),
            stdin,
            lines,
            uid: String::new(),
            public_key: String::new(),
            ipv4: String::new(),
            ipv6: String::new(),
        };
        let hello = node.read_reply();
        let field = |k: &str| {
            hello[k]
                .as_str()
                .unwrap_or_else(|| panic!("hello lacks {k}: {hello}"))
                .to_string()
        };
        node.uid = field("uid");
        node.public_key = field("public_key");
        node.ipv4 = field("ipv4");
        node.ipv6 = field("ipv6");
        node
    }

    fn read_reply(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("node {} did not answer", self.child.pid()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line}: {e}"))
    }

    /// Sends one request of the control protocol and returns what its reply carries: the
    /// status object, the friends or links array, the added peer (`{"uid"}`), `{"done":
    /// true}`; an error reply fails the test.
    pub fn ask(&mut self, request: Request) -> Value {
        let reply = self.try_ask(request.clone());
        assert!(reply.get("error").is_none(), "{request:?}: {reply}");
        reply
    }

    /// Adds, accepts, declines, removes, enables or disables a friend.
    pub fn friend(&mut self, action: FriendAction, jid: &str) -> Value {
        self.ask(Request::Friend {
            action,
            jid: jid.to_string(),
        })
    }

    /// Adds `other` as a peer reachable at `endpoint`; returns the overlay address this node
    /// gave it.
    pub fn add_peer(&mut self, public_key: &str, endpoint: &str) -> String {
        let request = Request::AddPeer {
            public_key: public_key.to_string(),
            endpoint: endpoint.parse().expect("endpoint"),
            keepalive_secs: None,
        };
        let uid = self.ask(request)["uid"].as_str().expect("uid").to_string();
        self.address_of(&uid)
    }

    pub fn address_of(&mut self, uid: &str) -> String {
        let links = self.ask(Request::Links);
        links
            .as_array()
            .and_then(|l| l.iter().find(|l| l["uid"] == uid))
            .and_then(|l| l["overlay_address"].as_str())
            .unwrap_or_else(|| panic!("no link to {uid}: {links}"))
            .to_string()
    }

    pub fn drops(&mut self, reason: &str) -> u64 {
        self.ask(Request::Status)["counters"]["drops"][reason]
            .as_u64()
            .unwrap_or(0)
    }

    /// Asks `request` every 200 ms until `pred` holds (true) or `within` passes (false).
    pub fn wait_until(
        &mut self,
        request: Request,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if pred(&self.ask(request.clone())) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends a request whose answer may be an error (returned as `{"error": {"kind",
    /// "message"}}`, not a panic).
    pub fn try_ask(&mut self, request: Request) -> Value {
        self.stdin
            .write_all(&request.encode())
            .and_then(|()| self.stdin.write_all(b"\n"))
            .expect("node stdin");
        let mut reply = self.read_reply();
        assert_eq!(reply["v"], socialvpn_core::api::API_VERSION, "{reply}");
        let payload = match reply["reply"].as_str() {
            Some("status") => reply["status"].take(),
            Some("roster") => reply["friends"].take(),
            Some("links") => reply["links"].take(),
            Some("peer_added") => serde_json::json!({ "uid": reply["uid"].take() }),
            Some("done") => serde_json::json!({ "done": true }),
            Some("error") => serde_json::json!({ "error": reply["error"].take() }),
            _ => panic!("not a reply: {reply}"),
        };
        payload
    }

    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Closes stdin, as a clean shutdown (the node closes its links, releases its TURN
    /// allocation and signs off), and waits up to 10 s for it to exit; true if it did.
    pub fn stop(self) -> bool {
        let DpNode {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(child.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}
