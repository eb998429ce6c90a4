//! Human-readable views of the daemon's answers.

use socialvpn_core::api::{FriendView, LinkPhase, StatusView};
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
pub fn link(link: Option<&LinkPhase>) -> (String, String) {
    match link {
        Some(LinkPhase::Connected { relayed, rtt_ms }) => {
            let path = if *relayed { "relayed" } else { "direct" };
            let rtt = rtt_ms.map_or("-".to_string(), |r| format!("{r:.2} ms"));
            (path.to_string(), rtt)
        }
        Some(LinkPhase::ClosedByPeer) => ("closed by friend".to_string(), "-".to_string()),
        Some(LinkPhase::Connecting) => ("connecting".to_string(), "-".to_string()),
        Some(LinkPhase::Retrying) => ("retrying".to_string(), "-".to_string()),
        Some(LinkPhase::Unknown) => ("?".to_string(), "-".to_string()),
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
pub fn status(status: &StatusView, roster: &[FriendView]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "device {}  address {} ({})  XMPP: {}",
        status.uid.chars().take(12).collect::<String>(),
        status.ipv4,
        status.subnet,
        status
            .xmpp
            .as_ref()
            .map_or("-".to_string(), ToString::to_string),
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
    for entry in roster {
        let jid = if entry.own {
            format!("{} (you)", entry.jid)
        } else {
            entry.jid.clone()
        };
        let switch = if entry.enabled { "on" } else { "off" };
        if entry.devices.is_empty() {
            rows.push(
                [&jid, "-", "no", switch, "-", "-", "-", "-"]
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
            );
        }
        for d in &entry.devices {
            let (path, rtt) = link(d.link.as_ref());
            let traffic = d.traffic.map_or("-".into(), |t| {
                format!("{} / {}", bytes(t.tx.bytes), bytes(t.rx.bytes))
            });
            let device = if d.socialvpn {
                d.resource.clone()
            } else {
                format!("{} (no SocialVPN)", d.resource)
            };
            let address = match (d.overlay_address, d.pinned) {
                (Some(a), true) => format!("{a} (pinned)"),
                (Some(a), false) => a.to_string(),
                (None, _) => "-".into(),
            };
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
fn refused(status: &StatusView) -> String {
    let social = status.social.unwrap_or_default();
    let links = status.links.unwrap_or_default();
    let counts = [
        (social.signals_rejected, "signals"),
        (social.device_claims_refused, "device claims"),
        (social.presences_ignored, "presences"),
        (social.requests_ignored, "declined requests"),
        (social.addresses_refused, "devices over their share"),
        (links.signals_refused, "sessions over the rate"),
        (links.stun_rejected, "STUN"),
        (links.candidates_dropped, "candidates"),
        (links.permits_refused, "relay permissions"),
    ];
    counts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The friends list with pending requests.
pub fn friends(roster: &[FriendView]) -> String {
    let mut rows = vec![vec![
        "JID".to_string(),
        "friend".into(),
        "switch".into(),
        "state".into(),
    ]];
    for entry in roster.iter().filter(|e| !e.own) {
        let jid = &entry.jid;
        let state = match (entry.pending_in, entry.pending_out) {
            (true, _) => format!("asks to be your friend: socialvpn friend accept {jid}"),
            (_, true) => "request sent, waiting for an answer".into(),
            _ => String::new(),
        };
        rows.push(vec![
            jid.to_string(),
            if entry.mutual { "yes" } else { "no" }.into(),
            if entry.enabled { "on" } else { "off" }.into(),
            state,
        ]);
    }
    columns(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socialvpn_core::api::{DeviceView, Subscription};
    use socialvpn_core::counters::{LinkTraffic, Traffic};

    fn device(resource: &str, address: &str, link: LinkPhase) -> DeviceView {
        DeviceView {
            resource: resource.into(),
            socialvpn: true,
            uid: None,
            overlay_address: Some(address.parse().unwrap()),
            pinned: false,
            link: Some(link),
            traffic: None,
        }
    }

    fn roster() -> Vec<FriendView> {
        let mut phone = device(
            "a-very-long-resource-name-of-a-phone-1234567890",
            "100.64.0.2",
            LinkPhase::Connected {
                relayed: false,
                rtt_ms: Some(1.5),
            },
        );
        phone.traffic = Some(LinkTraffic {
            tx: Traffic {
                packets: 2,
                bytes: 2048,
            },
            rx: Traffic {
                packets: 1,
                bytes: 10,
            },
        });
        let friend = |jid: &str, mutual: bool, pending_in: bool, devices| FriendView {
            jid: jid.into(),
            name: None,
            subscription: Subscription::Both,
            mutual,
            pending_in,
            pending_out: false,
            enabled: true,
            own: false,
            devices,
        };
        vec![
            friend(
                "bob@example.org",
                true,
                false,
                vec![
                    phone,
                    device("laptop", "100.64.0.3", LinkPhase::ClosedByPeer),
                ],
            ),
            friend("dave@example.org", false, true, vec![]),
        ]
    }

    fn status() -> StatusView {
        StatusView {
            uid: "0123456789abcdef".into(),
            ipv4: "100.64.0.1".parse().unwrap(),
            ipv6: "fd00::1".parse().unwrap(),
            subnet: "100.64.0.0/16".into(),
            tunnel: true,
            foreground: true,
            xmpp: Some(socialvpn_core::api::XmppStatus::Online),
            counters: Default::default(),
            social: Some(Default::default()),
            links: Some(Default::default()),
            candidates: None,
        }
    }

    #[test]
    fn long_names_keep_the_columns_aligned() {
        let text = super::status(&status(), &roster());
        let lines: Vec<&str> = text.lines().skip(1).collect();
        // Every row's address column starts where the header's does.
        let at = lines[0].find("address").unwrap();
        assert_eq!(lines[1].find("100.64.0.2"), Some(at), "{text}");
        assert_eq!(lines[2].find("100.64.0.3"), Some(at), "{text}");
        assert!(lines[2].contains("closed by friend"), "{text}");
        assert!(lines[1].contains("2.0 KiB / 10 B"), "{text}");
        assert!(
            text.starts_with(
                "device 0123456789ab  address 100.64.0.1 (100.64.0.0/16)  XMPP: online"
            ),
            "{text}"
        );
    }

    #[test]
    fn refused_attempts_are_summed_up_only_when_there_are_some() {
        let mut status = status();
        assert!(!super::status(&status, &roster()).contains("refused"));
        if let Some(s) = status.social.as_mut() {
            s.signals_rejected = 3;
        }
        if let Some(l) = status.links.as_mut() {
            l.candidates_dropped = 40;
        }
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
