//! Which devices get links: a pure function of the devices the social layer wants and the
//! links that exist, so it is tested without any link machinery.

use crate::social::state::WantedDevice;
use crate::uid::Uid;
use std::collections::HashMap;
use std::time::Duration;
use xmpp_parsers::jid::BareJid;

/// Which devices get links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPolicy {
    /// Link every online, enabled friend device, up to `max_links` (IPOP's behaviour).
    Proactive { max_links: usize },
    /// Link when a packet is addressed to a device; close links idle for `idle_secs`. For
    /// large rosters: no keepalives or ICE sessions for friends one never talks to.
    OnDemand { max_links: usize, idle_secs: u64 },
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy::Proactive { max_links: 64 }
    }
}

impl LinkPolicy {
    pub fn max_links(&self) -> usize {
        match *self {
            LinkPolicy::Proactive { max_links } | LinkPolicy::OnDemand { max_links, .. } => {
                max_links
            }
        }
    }

    /// How long an on-demand link may stay idle.
    pub fn idle(&self) -> Option<Duration> {
        match *self {
            LinkPolicy::OnDemand { idle_secs, .. } => Some(Duration::from_secs(idle_secs.max(1))),
            LinkPolicy::Proactive { .. } => None,
        }
    }

    /// The wanted devices that keep or get a link, in the order they are served: the
    /// user's own devices first, then friends taking turns (each friend's first device,
    /// then each one's second, …) so that one friend's many devices cannot take every slot.
    /// Devices with a link (`linked`) keep it; new ones get one only under the proactive
    /// policy and while there are slots left (on demand, a packet asks for them).
    pub fn admit<'a>(
        &self,
        wanted: &'a [WantedDevice],
        linked: impl Fn(&Uid) -> bool,
    ) -> Vec<&'a WantedDevice> {
        let proactive = matches!(self, LinkPolicy::Proactive { .. });
        let mut rank: HashMap<BareJid, usize> = HashMap::new();
        let mut ordered: Vec<(bool, usize, usize, &WantedDevice)> = wanted
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let turn = rank.entry(w.jid.to_bare()).or_default();
                *turn += 1;
                (!w.own, *turn, i, w)
            })
            .collect();
        ordered.sort_by_key(|(friend, turn, i, _)| (*friend, *turn, *i));
        let mut admitted = Vec::new();
        for (_, _, _, w) in ordered {
            let exists = linked(&w.info.uid);
            if !exists && (!proactive || admitted.len() >= self.max_links()) {
                continue;
            }
            admitted.push(w);
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::social::payload::DeviceInfo;

    fn device(jid: &str, key: u8, own: bool) -> WantedDevice {
        WantedDevice {
            jid: jid.parse().unwrap(),
            info: DeviceInfo::new([key; 32]),
            own,
        }
    }

    fn jids(admitted: &[&WantedDevice]) -> Vec<String> {
        admitted.iter().map(|w| w.jid.to_string()).collect()
    }

    #[test]
    fn own_devices_first_then_friends_take_turns_up_to_the_cap() {
        let wanted = vec![
            device("mallory@x/1", 1, false),
            device("mallory@x/2", 2, false),
            device("mallory@x/3", 3, false),
            device("bob@x/1", 4, false),
            device("alice@x/tablet", 5, true),
            device("carol@x/1", 6, false),
        ];
        let policy = LinkPolicy::Proactive { max_links: 4 };
        assert_eq!(
            jids(&policy.admit(&wanted, |_| false)),
            ["alice@x/tablet", "mallory@x/1", "bob@x/1", "carol@x/1"]
        );
        // Links that exist stay, even past the cap.
        let mallory3 = wanted[2].info.uid;
        let kept = policy.admit(&wanted, |u| *u == mallory3);
        assert_eq!(kept.len(), 5);
        assert!(jids(&kept).contains(&"mallory@x/3".to_string()));
    }

    #[test]
    fn on_demand_keeps_links_and_starts_none() {
        let wanted = vec![device("bob@x/1", 4, false), device("carol@x/1", 6, false)];
        let policy = LinkPolicy::OnDemand {
            max_links: 8,
            idle_secs: 0,
        };
        assert!(policy.admit(&wanted, |_| false).is_empty());
        let bob = wanted[0].info.uid;
        assert_eq!(jids(&policy.admit(&wanted, |u| *u == bob)), ["bob@x/1"]);
        assert_eq!(policy.idle(), Some(Duration::from_secs(1)));
    }
}
