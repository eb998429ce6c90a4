//! SocialVPN nodes with XMPP accounts inside the social world's hosts.

use crate::node::DpNode;
use crate::social_world::{SocialWorld, XmppServerKind, DOMAIN, TURN_PASSWORD, TURN_USER};
use serde_json::Value;
use socialvpn_core::api::{FriendAction, Request};
use std::path::Path;
use std::time::Duration;

/// Overlay subnet of each user (each user picks their own; devices of one user share it).
pub fn subnet_of(user: &str) -> &'static str {
    match user {
        "alice" => "100.64.0.0/16",
        "bob" => "100.65.0.0/16",
        "carol" => "100.66.0.0/16",
        _ => "100.67.0.0/16",
    }
}

/// The social world with `kind` as its XMPP server and an account `USER` with the password
/// `pw-USER` for each of `users`.
pub fn world_with_users(kind: XmppServerKind, tag: &str, users: &[&str]) -> SocialWorld {
    let w = SocialWorld::with_server(tag, kind);
    let passwords: Vec<String> = users.iter().map(|u| format!("pw-{u}")).collect();
    let accounts: Vec<(&str, &str)> = users
        .iter()
        .zip(&passwords)
        .map(|(u, p)| (*u, p.as_str()))
        .collect();
    w.register_all(&accounts);
    w
}

/// [`start_node_with`], then waits until the node is logged in.
pub fn online_node(
    w: &SocialWorld,
    node_bin: &Path,
    host: &str,
    user: &str,
    settings: Value,
) -> DpNode {
    let mut n = start_node_with(w, node_bin, host, user, settings);
    assert!(
        n.wait_until(Request::Status, Duration::from_secs(20), |s| s["xmpp"]
            ["state"]
            == "online"),
        "{host} did not log in"
    );
    n
}

/// Starts a node on `host` logged in as `user` (registered with password "pw-USER") with
/// resource `host`.
pub fn start_node(w: &SocialWorld, node_bin: &Path, host: &str, user: &str) -> DpNode {
    start_node_with(w, node_bin, host, user, serde_json::json!({}))
}

/// Like [`start_node`], with more settings of the node's social configuration (`policy` as
/// in the engine's `LinkPolicy`, `watch_network`).
pub fn start_node_with(
    w: &SocialWorld,
    node_bin: &Path,
    host: &str,
    user: &str,
    settings: Value,
) -> DpNode {
    let state = w.state_dir().join(format!("node-{host}"));
    start_node_in(w, node_bin, host, user, &state, settings)
}

/// Like [`start_node_with`], keeping the node's key and address book in `state`.
pub fn start_node_in(
    w: &SocialWorld,
    node_bin: &Path,
    host: &str,
    user: &str,
    state: &Path,
    settings: Value,
) -> DpNode {
    std::fs::create_dir_all(state).expect("state dir");
    let social = state.join("social.json");
    let mut config = serde_json::json!({
        "jid": format!("{user}@{}", w.domain()),
        "password": format!("pw-{user}"),
        "resource": host,
        "server": w.xmpp_addr().to_string(),
        "ca_file": w.ca_cert_path(),
        "stun": w.stun_addr().to_string(),
        "turn": w.turn_addr().to_string(),
        "turn_user": TURN_USER,
        "turn_password": TURN_PASSWORD,
        "policy": { "proactive": { "max_links": 64 } },
    });
    if let (Some(config), Some(settings)) = (config.as_object_mut(), settings.as_object()) {
        config.extend(settings.clone());
    }
    std::fs::write(&social, config.to_string()).expect("social config");
    let listen = format!("0.0.0.0:{}", 40000 + host.len() as u16);
    DpNode::start_with(
        node_bin,
        w.host(host),
        state,
        "svpn0",
        subnet_of(user),
        &listen,
        Some(&social),
        &[],
    )
}

/// The account `user` has on the world's XMPP server.
pub fn jid(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

/// A counter of a `status` answer by its path, e.g. "social.signals_rejected".
pub fn counter(status: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(status, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {path} in {status}"))
}

/// The roster entry for `jid` in a `roster` answer.
pub fn entry<'a>(roster: &'a Value, jid: &str) -> Option<&'a Value> {
    roster.as_array()?.iter().find(|e| e["jid"] == jid)
}

/// The device with `uid` anywhere in a `roster` answer.
pub fn device<'a>(roster: &'a Value, uid: &str) -> Option<&'a Value> {
    roster
        .as_array()?
        .iter()
        .flat_map(|e| e["devices"].as_array().into_iter().flatten())
        .find(|d| d["uid"] == uid)
}

/// The devices listed under `account` in a `roster` answer.
pub fn devices<'a>(roster: &'a Value, account: &str) -> Vec<&'a Value> {
    entry(roster, account)
        .and_then(|e| e["devices"].as_array())
        .map(|d| d.iter().collect())
        .unwrap_or_default()
}

/// The device `uid` as listed under `account` (a device may be listed under others too).
pub fn device_under<'a>(roster: &'a Value, account: &str, uid: &str) -> Option<&'a Value> {
    devices(roster, account)
        .into_iter()
        .find(|d| d["uid"] == uid)
}

/// Waits until `node` shows a connected link to the device `uid`; returns that link phase.
pub fn wait_linked(node: &mut DpNode, uid: &str, within: Duration) -> Option<Value> {
    let mut found = None;
    node.wait_until(Request::Roster, within, |r| {
        device(r, uid).is_some_and(|d| d["link"]["state"] == "connected")
    });
    let roster = node.ask(Request::Roster);
    if let Some(d) = device(&roster, uid) {
        if d["link"]["state"] == "connected" {
            found = Some(d["link"].clone());
        }
    }
    found
}

/// The overlay address `node` gave the device `uid`.
pub fn address_of(node: &mut DpNode, uid: &str) -> Option<String> {
    let roster = node.ask(Request::Roster);
    device(&roster, uid)?["overlay_address"]
        .as_str()
        .map(str::to_string)
}

/// How long a friend request may take: servers drop subscription stanzas beyond a rate
/// (ejabberd's default: 5 a minute per session and direction), and the engine sends a
/// dropped request again after a minute.
const BEFRIEND_WITHIN: Duration = Duration::from_secs(100);

/// Makes `a` and `b` mutual friends through the engine API.
pub fn befriend(a: &mut DpNode, a_jid: &str, b: &mut DpNode, b_jid: &str) {
    a.friend(FriendAction::Add, b_jid);
    assert!(
        b.wait_until(Request::Roster, BEFRIEND_WITHIN, |r| {
            entry(r, a_jid).is_some_and(|e| e["pending_in"] == true)
        }),
        "{b_jid} never saw the request from {a_jid}"
    );
    b.friend(FriendAction::Accept, a_jid);
    for (node, other) in [(a, b_jid), (b, a_jid)] {
        assert!(
            node.wait_until(Request::Roster, BEFRIEND_WITHIN, |r| {
                entry(r, other).is_some_and(|e| e["mutual"] == true)
            }),
            "not mutual with {other}"
        );
    }
}
