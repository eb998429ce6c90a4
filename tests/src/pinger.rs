//! A ping running in the background every 0.1 s (bounded by a count and a deadline), whose
//! replies are kept with their times: how many were lost, and when traffic came back.

use crate::netns::{ChildGuard, Namespace};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a pinger runs (its `-w` deadline), whatever the test does.
const LONGEST: Duration = Duration::from_secs(300);

pub struct Pinger {
    child: ChildGuard,
    target: String,
    /// icmp_seq → when its reply arrived (seconds since the epoch).
    replies: Arc<Mutex<BTreeMap<u64, f64>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What a pinger saw.
#[derive(Debug, Clone)]
pub struct PingReport {
    pub target: String,
    /// Replies by sequence number, with their arrival times.
    pub replies: BTreeMap<u64, f64>,
}

impl Pinger {
    /// Pings `target` from `ns` every 0.1 s until [`Pinger::stop`] (at most 5 minutes).
    pub fn start(ns: &Namespace, target: &str) -> Pinger {
        let deadline = LONGEST.as_secs().to_string();
        let count = (LONGEST.as_secs() * 10).to_string();
        let mut child = ns
            .command("ping")
            .args([
                "-D", "-n", "-i", "0.1", "-W", "1", "-c", &count, "-w", &deadline,
            ])
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run ping");
        let stdout = child.stdout.take().expect("piped stdout");
        let replies = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = Arc::clone(&replies);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((seq, at)) = parse_reply(&line) {
                    if let Ok(mut r) = sink.lock() {
                        r.insert(seq, at);
                    }
                }
            }
        });
        Pinger {
            child: ChildGuard(child),
            target: target.to_string(),
            replies,
            reader: Some(reader),
        }
    }

    /// Stops pinging (SIGINT, as Ctrl-C) and returns what was seen.
    pub fn stop(mut self) -> PingReport {
        // SAFETY: signalling our own unreaped child by its PID.
        unsafe { libc::kill(self.child.pid() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.0.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let replies = self.replies.lock().map(|r| r.clone()).unwrap_or_default();
        PingReport {
            target: self.target.clone(),
            replies,
        }
    }
}

/// `[1764606000.123456] 64 bytes from 100.64.0.2: icmp_seq=12 ttl=64 time=0.5 ms`
fn parse_reply(line: &str) -> Option<(u64, f64)> {
    let at: f64 = line.strip_prefix('[')?.split(']').next()?.parse().ok()?;
    if !line.contains(" bytes from ") {
        return None;
    }
    let seq = line.split("icmp_seq=").nth(1)?.split_whitespace().next()?;
    Some((seq.parse().ok()?, at))
}

/// Now, as ping's `-D` timestamps count.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl PingReport {
    /// Requests without a reply, among those sent before the last reply (the ones after it
    /// were in flight when the pinger stopped).
    pub fn lost(&self) -> Vec<u64> {
        let Some((&last, _)) = self.replies.last_key_value() else {
            return vec![];
        };
        (1..last)
            .filter(|s| !self.replies.contains_key(s))
            .collect()
    }

    pub fn received(&self) -> usize {
        self.replies.len()
    }

    /// When the first reply at or after `t` (seconds since the epoch) arrived.
    pub fn first_reply_after(&self, t: f64) -> Option<f64> {
        self.replies
            .values()
            .copied()
            .filter(|at| *at >= t)
            .reduce(f64::min)
    }

    /// Longest time between two replies (seconds).
    pub fn longest_gap(&self) -> f64 {
        let mut times: Vec<f64> = self.replies.values().copied().collect();
        times.sort_by(f64::total_cmp);
        times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }

    /// Seconds from `t` until traffic flowed again (the first reply after `t`).
    pub fn back_after(&self, t: f64) -> Option<f64> {
        self.first_reply_after(t).map(|at| at - t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_losses_are_read_from_pings_output() {
        assert_eq!(
            parse_reply(
                "[1764606000.250000] 64 bytes from 100.64.0.2: icmp_seq=12 ttl=64 time=0.5 ms"
            ),
            Some((12, 1_764_606_000.25))
        );
        assert_eq!(
            parse_reply("[1764606000.250000] no answer yet for icmp_seq=13"),
            None
        );
        let report = PingReport {
            target: "x".into(),
            replies: [(1, 1.0), (2, 1.1), (4, 3.0), (5, 3.1)]
                .into_iter()
                .collect(),
        };
        assert_eq!(report.lost(), vec![3]);
        assert_eq!(report.back_after(2.0), Some(1.0));
    }
}
