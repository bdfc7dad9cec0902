//! Server-side request forgery guards: addresses the gateway refuses to reach on anyone's behalf.
//!
//! A gateway holds network positions its clients do not: an upstream URL from a config file, a
//! per-user endpoint, or a resource URI a client asks an upstream to read can all point at the
//! cloud metadata service or another link-local address. By default these are refused:
//!
//! | refused | why |
//! |---|---|
//! | `169.254.0.0/16`, `fe80::/10` | link-local, where every cloud's metadata service lives (`169.254.169.254`) |
//! | `fd00:ec2::254` | AWS's IPv6 metadata address |
//! | `0.0.0.0`, `::` | "this host", reaches local services on some systems |
//! | IPv4-mapped forms of the above (`::ffff:169.254.169.254`) | same address, other spelling |
//! | `metadata.google.internal`, `metadata.goog`, `metadata`, `instance-data` (and `.` suffixed forms) | metadata host names |
//!
//! Loopback and private ranges stay allowed: upstreams on 127.0.0.1 or inside the company network
//! are what a gateway is for. Names are checked twice: as written, and (for upstream URLs) every
//! address they resolve to, through [`GuardedResolver`], so DNS cannot smuggle a refused address in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is refused, or `None` when it may be reached.
pub fn refused_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            if v6.is_unspecified() {
                Some("the unspecified address")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("the cloud metadata address")
            } else {
                None
            }
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("the cloud metadata address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else {
        None
    }
}

/// Why a host (a name or an IP literal, IPv6 with or without brackets) is refused, or `None`.
pub fn refused_host(host: &str) -> Option<&'static str> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return refused_ip(ip);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    const METADATA_NAMES: [&str; 4] = [
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
    ];
    METADATA_NAMES
        .contains(&name.as_str())
        .then_some("a cloud metadata host name")
}

/// Why a URL's host is refused, or `None`. URLs that do not parse, or have no host, are not
/// this module's business (they fail elsewhere with their own error).
pub fn refused_url(url: &str) -> Option<(String, &'static str)> {
    let uri = url.parse::<http::Uri>().ok()?;
    let host = uri.host()?;
    refused_host(host).map(|why| (host.to_owned(), why))
}

/// A DNS resolver for upstream HTTP clients that drops refused addresses from every answer, and
/// fails the lookup when nothing is left.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if let Some(why) = refused_host(&host) {
                return Err(format!("refused to connect to {host}: {why}").into());
            }
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| refused_ip(a.ip()).is_none())
                .collect();
            if allowed.is_empty() && !all.is_empty() {
                let why = refused_ip(all[0].ip()).unwrap_or("a refused address");
                return Err(format!("refused to connect to {host}: it resolves to {why}").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_are_refused_in_every_spelling() {
        for host in [
            "169.254.169.254",
            "169.254.1.1",
            "[fe80::1]",
            "fe80::1",
            "fd00:ec2::254",
            "[::ffff:169.254.169.254]",
            "0.0.0.0",
            "::",
            "metadata.google.internal",
            "METADATA.GOOGLE.INTERNAL.",
            "metadata",
            "instance-data",
        ] {
            assert!(refused_host(host).is_some(), "{host} must be refused");
        }
    }

    #[test]
    fn loopback_private_and_public_hosts_pass() {
        for host in [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "10.0.0.5",
            "192.168.1.10",
            "172.16.0.1",
            "example.com",
            "metadata.example.com",
            "169.254.169.254.example.com",
        ] {
            assert!(refused_host(host).is_none(), "{host} must pass");
        }
    }

    #[test]
    fn urls_are_checked_by_host() {
        assert!(refused_url("http://169.254.169.254/latest/meta-data/").is_some());
        assert!(refused_url("http://[fe80::1]:8443/mcp").is_some());
        assert!(refused_url("http://127.0.0.1:3001/mcp").is_none());
        assert!(refused_url("not a url").is_none());
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_and_passes_loopback() {
        use reqwest::dns::Resolve;
        let r = GuardedResolver;
        let ok: Vec<SocketAddr> = r
            .resolve("localhost".parse().unwrap())
            .await
            .expect("localhost resolves")
            .collect();
        assert!(ok.iter().all(|a| a.ip().is_loopback()), "{ok:?}");
        let err = match r.resolve("metadata.google.internal".parse().unwrap()).await {
            Ok(_) => panic!("a metadata name must not resolve"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("metadata"), "{err}");
    }
}
