//! Human-readable views of the daemon's answers.

use serde_json::Value;
use std::fmt::Write;

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// One line describing a link phase.
pub fn link(link: &Value) -> (String, String) {
    match link["state"].as_str() {
        Some("connected") => {
            let path = if link["relayed"] == true {
                "relayed"
            } else {
                "direct"
            };
            let rtt = link["rtt_ms"]
                .as_f64()
                .map_or("-".to_string(), |r| format!("{r:.2} ms"));
            (path.to_string(), rtt)
        }
        Some(other) => (other.to_string(), "-".to_string()),
        None => ("-".to_string(), "-".to_string()),
    }
}

/// The status table: the device, then one row per friend device.
pub fn status(status: &Value, roster: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "device {}  address {} ({})  XMPP: {}",
        status["uid"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(12)
            .collect::<String>(),
        status["ipv4"].as_str().unwrap_or("?"),
        status["subnet"].as_str().unwrap_or("?"),
        status["xmpp"].as_str().unwrap_or("-"),
    );
    let _ = writeln!(
        out,
        "{:<28} {:<20} {:<6} {:<6} {:<15} {:<9} {:<9} traffic (sent / received)",
        "JID", "device", "online", "switch", "address", "path", "RTT"
    );
    for entry in roster.as_array().into_iter().flatten() {
        let jid = entry["jid"].as_str().unwrap_or("");
        let jid = if entry["own"] == true {
            format!("{jid} (you)")
        } else {
            jid.to_string()
        };
        let switch = if entry["enabled"] == true {
            "on"
        } else {
            "off"
        };
        let devices = entry["devices"].as_array().cloned().unwrap_or_default();
        if devices.is_empty() {
            let _ = writeln!(
                out,
                "{jid:<28} {:<20} {:<6} {switch:<6} {:<15} {:<9} {:<9} -",
                "-", "no", "-", "-", "-"
            );
        }
        for d in devices {
            let (path, rtt) = link(&d["link"]);
            let traffic = match (
                d["traffic"]["tx"]["bytes"].as_u64(),
                d["traffic"]["rx"]["bytes"].as_u64(),
            ) {
                (Some(tx), Some(rx)) => format!("{} / {}", bytes(tx), bytes(rx)),
                _ => "-".into(),
            };
            let device = if d["socialvpn"] == true {
                d["resource"].as_str().unwrap_or("").to_string()
            } else {
                format!("{} (no SocialVPN)", d["resource"].as_str().unwrap_or(""))
            };
            let _ = writeln!(
                out,
                "{jid:<28} {device:<20} {:<6} {switch:<6} {:<15} {path:<9} {rtt:<9} {traffic}",
                "yes",
                d["overlay_address"].as_str().unwrap_or("-"),
            );
        }
    }
    out
}

/// The friends list with pending requests.
pub fn friends(roster: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<32} {:<10} {:<8} state", "JID", "friend", "switch");
    for entry in roster.as_array().into_iter().flatten() {
        if entry["own"] == true {
            continue;
        }
        let state = match (entry["pending_in"] == true, entry["pending_out"] == true) {
            (true, _) => "asks to be your friend: socialvpn friend accept JID",
            (_, true) => "request sent, waiting for an answer",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{:<32} {:<10} {:<8} {state}",
            entry["jid"].as_str().unwrap_or(""),
            if entry["mutual"] == true { "yes" } else { "no" },
            if entry["enabled"] == true {
                "on"
            } else {
                "off"
            },
        );
    }
    out
}
