//! A process's memory as Linux accounts for it, read from `/proc` (and glibc's own view
//! through gdb): what the benchmarks report about an engine process.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `Key: N kB` lines of a /proc file, in KiB.
pub fn kib_fields(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            (words.next() == Some("kB")).then(|| (key.trim().to_string(), n))
        })
        .collect()
}

/// `/proc/PID/status` as KiB fields (VmRSS, VmHWM, RssAnon, …) and the thread count.
pub fn proc_status(pid: u32) -> (BTreeMap<String, u64>, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = text
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    (kib_fields(&text), threads)
}

/// The resident set now (None once the process is gone).
pub fn vm_rss(pid: u32) -> Option<u64> {
    proc_status(pid).0.get("VmRSS").copied()
}

/// Resident KiB by kind of mapping (`/proc/PID/smaps`): the binary, shared libraries, the
/// brk heap, anonymous mappings (mmap'd malloc arenas and large blocks, thread stacks), the
/// main stack, the rest; and how many anonymous mappings there are.
pub fn smaps_breakdown(pid: u32) -> Value {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut rss: BTreeMap<&str, u64> = BTreeMap::new();
    let mut size: BTreeMap<&str, u64> = BTreeMap::new();
    let mut anon_mappings = 0;
    let mut kind = "other";
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let header = words.len() >= 5
            && words[0].contains('-')
            && words[0].chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if header {
            let name = words.get(5..).map(|w| w.join(" ")).unwrap_or_default();
            kind = if name.is_empty() {
                anon_mappings += 1;
                "anonymous"
            } else if !exe.is_empty() && name.starts_with(exe.as_str()) {
                "binary"
            } else if name == "[heap]" {
                "heap"
            } else if name == "[stack]" {
                "stack"
            } else if name.contains(".so") {
                "libraries"
            } else {
                "other"
            };
            continue;
        }
        if let [key, n, "kB"] = words.as_slice() {
            let n: u64 = n.parse().unwrap_or(0);
            match *key {
                "Rss:" => *rss.entry(kind).or_insert(0) += n,
                "Size:" => *size.entry(kind).or_insert(0) += n,
                _ => {}
            }
        }
    }
    json!({ "rss_kib": rss, "size_kib": size, "anonymous_mappings": anon_mappings })
}

pub fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name's closing parenthesis: fields 3…; utime and stime are 14 and 15.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / tck
}

/// glibc's own account of the daemon's heap, after the figures were taken: `malloc_stats()`
/// called in the daemon through gdb (it prints to the daemon's stderr, i.e. `log`). Bytes
/// the arenas hold from the system against bytes in live allocations — the difference is
/// free memory malloc keeps (fragmentation, trimmed only at the top). Then `malloc_trim(0)`
/// in the daemon and its VmRSS again: how much of that free memory was resident and can be
/// given back. None without gdb. Changes the process: call it after the figures.
pub fn malloc_stats(pid: u32, log: &Path) -> Option<Value> {
    let out = std::process::Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "call (void)malloc_stats()"])
        .args(["-ex", "call (int)malloc_trim(0)"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = std::fs::read_to_string(log).ok()?;
    let start = text.rfind("Arena 0:")?;
    // "Arena N:" blocks of "system bytes = …", "in use bytes = …", then "Total (incl.
    // mmap):" with those two and "max mmap regions/bytes"; the daemon's own log may follow.
    let mut arenas: Vec<BTreeMap<String, u64>> = Vec::new();
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    let mut in_total = false;
    for line in text[start..].lines() {
        let line = line.trim();
        if line.starts_with("Arena ") {
            arenas.push(BTreeMap::new());
            continue;
        }
        if line.starts_with("Total (incl. mmap)") {
            in_total = true;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            break;
        };
        let key = key.trim().replace(' ', "_");
        let Ok(value) = value.trim().parse::<u64>() else {
            break;
        };
        let into = if in_total {
            &mut total
        } else {
            arenas.last_mut()?
        };
        into.insert(key.clone(), value);
        if key == "max_mmap_bytes" {
            break;
        }
    }
    let after_trim = vm_rss(pid);
    Some(json!({ "arenas": arenas, "total": total, "rss_after_trim_kib": after_trim }))
}

/// Samples the daemon's VmRSS until dropped: (seconds since start, KiB).
pub struct Sampler {
    samples: Arc<Mutex<Vec<(f64, u64)>>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: u32, since: Instant, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (Arc::clone(&samples), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                match vm_rss(pid) {
                    Some(kib) => s.lock().unwrap().push((since.elapsed().as_secs_f64(), kib)),
                    None => return,
                }
                std::thread::sleep(every);
            }
        });
        Sampler {
            samples,
            done,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<(f64, u64)> {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// The RSS sampled closest after `t` seconds.
pub fn rss_at(samples: &[(f64, u64)], t: f64) -> Option<u64> {
    samples.iter().find(|(at, _)| *at >= t).map(|(_, kib)| *kib)
}
