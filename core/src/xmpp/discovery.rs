//! Finding a domain's XMPP server: DNS SRV records for direct TLS (`_xmpps-client._tcp`,
//! XEP-0368) and STARTTLS (`_xmpp-client._tcp`, RFC 6120), tried by priority and weight
//! (RFC 2782), then the domain itself on 5222. Name look-ups go through hickory-resolver,
//! given its name servers by the platform (Android has no resolv.conf for us) or reading
//! the system's.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::Rng;

/// The port of a domain's XMPP server without SRV records.
pub const DEFAULT_PORT: u16 = 5222;
/// Most targets tried per login (a hostile zone cannot make a login take forever).
const MAX_TARGETS: usize = 8;

/// Which name servers answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dns {
    /// The platform's name servers (Android's `LinkProperties.getDnsServers()`); empty:
    /// the system's configuration (`/etc/resolv.conf`).
    pub servers: Vec<IpAddr>,
}

/// How a connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// TLS first, with ALPN `xmpp-client` (XEP-0368).
    DirectTls,
    /// A plain stream upgraded by STARTTLS.
    StartTls,
}

/// One place to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

/// An SRV answer's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Without the trailing dot; "." (service decidedly not available) is empty.
    pub target: String,
}

/// The order to try the records of both services in: by priority; at equal priority direct
/// TLS first (XEP-0368), each in RFC 2782's weighted random order. A service whose only
/// record is "." is decidedly not offered; if that leaves nothing, there is nothing to try.
/// Without any record at all: the domain on 5222.
pub fn targets(
    domain: &str,
    direct: Vec<SrvRecord>,
    starttls: Vec<SrvRecord>,
    rng: &mut impl Rng,
) -> Vec<Target> {
    let refused = direct.iter().chain(&starttls).any(|r| r.target.is_empty());
    let usable = |records: Vec<SrvRecord>, security: Security| {
        records
            .into_iter()
            .filter(|r| !r.target.is_empty() && r.port != 0)
            .map(move |r| (r, security))
    };
    let mut all: Vec<(SrvRecord, Security)> = usable(direct, Security::DirectTls)
        .chain(usable(starttls, Security::StartTls))
        .collect();
    if all.is_empty() {
        if refused {
            return Vec::new();
        }
        return vec![Target {
            host: domain.to_string(),
            port: DEFAULT_PORT,
            security: Security::StartTls,
        }];
    }
    all.sort_by_key(|(r, s)| (r.priority, *s == Security::StartTls));
    let mut ordered = Vec::with_capacity(all.len());
    let mut rest = all.as_slice();
    while let Some((first, security)) = rest.first() {
        let group_len = rest
            .iter()
            .take_while(|(r, s)| r.priority == first.priority && s == security)
            .count();
        let (group, tail) = rest.split_at(group_len);
        ordered.extend(
            weighted(group.iter().map(|(r, _)| r.clone()).collect(), rng)
                .into_iter()
                .map(|r| Target {
                    host: r.target,
                    port: r.port,
                    security: *security,
                }),
        );
        rest = tail;
    }
    ordered.truncate(MAX_TARGETS);
    ordered
}

/// RFC 2782's selection within one priority: weight-0 records first in the list (so they
/// keep a small chance), then repeatedly one picked with probability by weight.
fn weighted(mut group: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    group.sort_by_key(|r| r.weight != 0);
    let mut ordered = Vec::with_capacity(group.len());
    while !group.is_empty() {
        let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
        let pick = rng.gen_range(0..=total);
        let mut running = 0;
        let index = group
            .iter()
            .position(|r| {
                running += u32::from(r.weight);
                running >= pick
            })
            .unwrap_or(0);
        ordered.push(group.remove(index));
    }
    ordered
}

/// The resolver for `dns` (the system's configuration if it names no server).
fn resolver(dns: &Dns) -> Option<TokioResolver> {
    let builder = if dns.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| tracing::debug!(error = %e, "no system DNS configuration"))
            .ok()?
    } else {
        let servers = dns
            .servers
            .iter()
            .map(|ip| NameServerConfig::udp_and_tcp(*ip))
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        // The platform's servers answer, not this machine's hosts file.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    builder
        .build()
        .map_err(|e| tracing::debug!(error = %e, "cannot build a DNS resolver"))
        .ok()
}

/// Where `domain`'s XMPP service is, in the order to try.
pub async fn discover(dns: &Dns, domain: &str) -> Vec<Target> {
    let Some(resolver) = resolver(dns) else {
        return targets(domain, vec![], vec![], &mut rand::thread_rng());
    };
    let srv = |service: &'static str| {
        let resolver = resolver.clone();
        let name = format!("{service}.{domain}.");
        async move {
            match resolver.srv_lookup(name.as_str()).await {
                Ok(lookup) => lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::SRV(srv) => Some(SrvRecord {
                            priority: srv.priority,
                            weight: srv.weight,
                            port: srv.port,
                            target: srv.target.to_utf8().trim_end_matches('.').to_string(),
                        }),
                        _ => None,
                    })
                    .collect(),
                Err(e) => {
                    tracing::debug!(%name, error = %e, "no SRV records");
                    Vec::new()
                }
            }
        }
    };
    let (direct, starttls) = futures::join!(srv("_xmpps-client._tcp"), srv("_xmpp-client._tcp"));
    let found = targets(domain, direct, starttls, &mut rand::thread_rng());
    tracing::debug!(?found, "XMPP server targets");
    found
}

/// The addresses of `host` (an IP literal, or a name looked up like the SRV records).
pub async fn addresses(dns: &Dns, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if dns.servers.is_empty() {
        return Ok(tokio::net::lookup_host((host, port)).await?.collect());
    }
    let resolver = resolver(dns).ok_or_else(|| std::io::Error::other("no DNS resolver"))?;
    let found = resolver
        .lookup_ip(format!("{host}."))
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
    Ok(found.iter().map(|ip| SocketAddr::new(ip, port)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn srv(priority: u16, weight: u16, target: &str, port: u16) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn hosts(t: &[Target]) -> Vec<(&str, u16, Security)> {
        t.iter()
            .map(|t| (t.host.as_str(), t.port, t.security))
            .collect()
    }

    #[test]
    fn without_records_the_domain_itself_on_5222() {
        let mut rng = StdRng::seed_from_u64(1);
        let t = targets("example.org", vec![], vec![], &mut rng);
        assert_eq!(hosts(&t), [("example.org", 5222, Security::StartTls)]);
        // "." means decidedly not offered: nothing to try, not the domain.
        let t = targets("example.org", vec![srv(0, 0, "", 0)], vec![], &mut rng);
        assert!(t.is_empty());
        // Direct TLS not offered, STARTTLS is.
        let t = targets(
            "example.org",
            vec![srv(0, 0, "", 0)],
            vec![srv(0, 1, "c2s.example.org", 5222)],
            &mut rng,
        );
        assert_eq!(hosts(&t), [("c2s.example.org", 5222, Security::StartTls)]);
    }

    #[test]
    fn priority_first_then_direct_tls_at_equal_priority() {
        let mut rng = StdRng::seed_from_u64(2);
        let t = targets(
            "example.org",
            vec![
                srv(10, 1, "tls.example.org", 5223),
                srv(5, 1, "tls2.example.org", 443),
            ],
            vec![
                srv(10, 1, "c2s.example.org", 5222),
                srv(1, 1, "first.example.org", 5222),
            ],
            &mut rng,
        );
        assert_eq!(
            hosts(&t),
            [
                ("first.example.org", 5222, Security::StartTls),
                ("tls2.example.org", 443, Security::DirectTls),
                ("tls.example.org", 5223, Security::DirectTls),
                ("c2s.example.org", 5222, Security::StartTls),
            ]
        );
    }

    #[test]
    fn weights_share_the_first_place_and_a_zone_cannot_list_forever() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let t = targets(
                "example.org",
                vec![],
                vec![srv(0, 90, "heavy", 5222), srv(0, 10, "light", 5222)],
                &mut rng,
            );
            assert_eq!(t.len(), 2);
            heavy_first += usize::from(t[0].host == "heavy");
        }
        assert!((850..=950).contains(&heavy_first), "{heavy_first}");
        let many: Vec<SrvRecord> = (0..100).map(|i| srv(i, 1, "h", 5222)).collect();
        assert_eq!(
            targets("example.org", vec![], many, &mut rng).len(),
            MAX_TARGETS
        );
    }
}
