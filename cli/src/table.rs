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

/// A link phase as (path, RTT) columns.
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
        Some("closed_by_peer") => ("closed by friend".to_string(), "-".to_string()),
        Some(other) => (other.to_string(), "-".to_string()),
        None => ("-".to_string(), "-".to_string()),
    }
}

/// Rows as aligned columns: every column as wide as its widest cell, the last unpadded.
fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
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
    let header = [
        "JID",
        "device",
        "online",
        "switch",
        "address",
        "path",
        "RTT",
        "traffic (sent / received)",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
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
            rows.push(
                [&jid, "-", "no", switch, "-", "-", "-", "-"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
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
            let resource = d["resource"].as_str().unwrap_or("");
            let device = if d["socialvpn"] == true {
                resource.to_string()
            } else {
                format!("{resource} (no SocialVPN)")
            };
            let address = d["overlay_address"].as_str().unwrap_or("-").to_string();
            rows.push(vec![
                jid.clone(),
                device,
                "yes".into(),
                switch.into(),
                address,
                path,
                rtt,
                traffic,
            ]);
        }
    }
    out.push_str(&columns(&rows));
    let refused = refused(status);
    if !refused.is_empty() {
        let _ = writeln!(out, "refused: {refused}");
    }
    out
}

/// What peers, strangers and servers tried that was refused, from the status counters; empty
/// when nothing was.
fn refused(status: &Value) -> String {
    let counts = [
        ("social", "signals_rejected", "signals"),
        ("social", "device_claims_refused", "device claims"),
        ("social", "presences_ignored", "presences"),
        ("social", "requests_ignored", "declined requests"),
        ("social", "addresses_refused", "devices over their share"),
        ("links", "signals_refused", "sessions over the rate"),
        ("links", "stun_rejected", "STUN"),
        ("links", "candidates_dropped", "candidates"),
        ("links", "permits_refused", "relay permissions"),
    ];
    counts
        .iter()
        .filter_map(|(part, key, what)| {
            let n = status[part][key].as_u64().filter(|n| *n > 0)?;
            Some(format!("{n} {what}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The friends list with pending requests.
pub fn friends(roster: &Value) -> String {
    let mut rows = vec![vec![
        "JID".to_string(),
        "friend".into(),
        "switch".into(),
        "state".into(),
    ]];
    for entry in roster.as_array().into_iter().flatten() {
        if entry["own"] == true {
            continue;
        }
        let jid = entry["jid"].as_str().unwrap_or("");
        let state = match (entry["pending_in"] == true, entry["pending_out"] == true) {
            (true, _) => format!("asks to be your friend: socialvpn friend accept {jid}"),
            (_, true) => "request sent, waiting for an answer".into(),
            _ => String::new(),
        };
        rows.push(vec![
            jid.to_string(),
            if entry["mutual"] == true { "yes" } else { "no" }.into(),
            if entry["enabled"] == true {
                "on"
            } else {
                "off"
            }
            .into(),
            state,
        ]);
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roster() -> Value {
        json!([
            { "jid": "bob@example.org", "mutual": true, "enabled": true, "own": false,
              "pending_in": false, "pending_out": false, "devices": [
                { "resource": "a-very-long-resource-name-of-a-phone-1234567890",
                  "socialvpn": true, "overlay_address": "100.64.0.2",
                  "link": { "state": "connected", "relayed": false, "rtt_ms": 1.5 },
                  "traffic": { "tx": { "bytes": 2048 }, "rx": { "bytes": 10 } } },
                { "resource": "laptop", "socialvpn": true, "overlay_address": "100.64.0.3",
                  "link": { "state": "closed_by_peer" } } ] },
            { "jid": "dave@example.org", "mutual": false, "enabled": true, "own": false,
              "pending_in": true, "pending_out": false, "devices": [] }
        ])
    }

    #[test]
    fn long_names_keep_the_columns_aligned() {
        let status = json!({ "uid": "0123456789abcdef", "ipv4": "100.64.0.1",
                             "subnet": "100.64.0.0/16", "xmpp": "online" });
        let text = super::status(&status, &roster());
        let lines: Vec<&str> = text.lines().skip(1).collect();
        // Every row's address column starts where the header's does.
        let at = lines[0].find("address").unwrap();
        assert_eq!(lines[1].find("100.64.0.2"), Some(at), "{text}");
        assert_eq!(lines[2].find("100.64.0.3"), Some(at), "{text}");
        assert!(lines[2].contains("closed by friend"), "{text}");
        assert!(lines[1].contains("2.0 KiB / 10 B"), "{text}");
    }

    #[test]
    fn refused_attempts_are_summed_up_only_when_there_are_some() {
        let mut status = json!({ "uid": "01", "social": { "signals_rejected": 0 },
                                 "links": { "stun_rejected": 0 } });
        assert!(!super::status(&status, &roster()).contains("refused"));
        status["social"]["signals_rejected"] = json!(3);
        status["links"]["candidates_dropped"] = json!(40);
        let text = super::status(&status, &roster());
        assert!(
            text.ends_with("refused: 3 signals, 40 candidates\n"),
            "{text}"
        );
    }

    #[test]
    fn a_request_names_the_command_to_accept_it() {
        let text = friends(&roster());
        assert!(
            text.contains("socialvpn friend accept dave@example.org"),
            "{text}"
        );
        assert!(!text.contains("accept JID"), "{text}");
    }
}
