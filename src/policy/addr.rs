//! The address check, run on every address the proxy is about to dial (after resolving,
//! before connecting): the built-in deny table, `upstream.deny_cidrs`, the exceptions in
//! `upstream.allow_cidrs`, and the proxy's own listeners. Pure.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::ip;

/// Which upstream addresses may be dialled.
#[derive(Debug, Clone, Default)]
pub struct AddrFilter {
    deny: Vec<IpNet>,
    allow: Vec<IpNet>,
    /// Addresses the proxy itself listens on; dialling one would loop the proxy into itself.
    own: Vec<SocketAddr>,
    /// Addresses of this host's interfaces, for listeners bound to 0.0.0.0 / [::].
    local_ips: Vec<IpAddr>,
}

impl AddrFilter {
    pub fn new(deny: Vec<IpNet>, allow: Vec<IpNet>) -> AddrFilter {
        AddrFilter {
            deny,
            allow,
            ..AddrFilter::default()
        }
    }

    /// Adds the proxy's own listeners and interface addresses to the self-loop check.
    pub fn with_own_addresses(mut self, own: Vec<SocketAddr>, local_ips: Vec<IpAddr>) -> Self {
        self.own = own;
        self.local_ips = local_ips.into_iter().map(|ip| ip.to_canonical()).collect();
        self
    }

    /// `Ok` if `addr` may be dialled, else a short explanation for the log and the 502 body.
    pub fn check(&self, addr: SocketAddr) -> Result<(), String> {
        let ip = addr.ip().to_canonical();
        if self.is_own_listener(ip, addr.port()) {
            return Err(format!("{addr} is one of the proxy's own listeners"));
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        if let Some(row) = ip::builtin_deny(ip) {
            return Err(format!("{ip} is in {} {}", row.net, row.what));
        }
        if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(format!("{ip} is in upstream.deny_cidrs {net}"));
        }
        Ok(())
    }

    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.own.iter().any(|own| {
            own.port() == port && {
                let own_ip = own.ip().to_canonical();
                own_ip == ip
                    || (own_ip.is_unspecified()
                        && (ip.is_loopback()
                            || ip.is_unspecified()
                            || self.local_ips.contains(&ip)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> AddrFilter {
        AddrFilter::new(
            vec!["203.0.114.0/24".parse().unwrap()],
            vec!["127.0.0.0/8".parse().unwrap()],
        )
        .with_own_addresses(
            vec![
                "127.0.0.1:3128".parse().unwrap(),
                "0.0.0.0:8443".parse().unwrap(),
            ],
            vec!["10.0.32.5".parse().unwrap()],
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn denies_metadata_and_private_ranges() {
        let f = AddrFilter::default();
        for a in [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "10.1.2.3:443",
            "[fd00:ec2::254]:80",
            "[::ffff:169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
        ] {
            assert!(f.check(sa(a)).is_err(), "{a} must be denied");
        }
        assert!(f.check(sa("93.184.215.14:443")).is_ok());
    }

    #[test]
    fn allow_cidrs_open_exceptions_and_mapped_forms_follow_them() {
        let f = filter();
        assert!(f.check(sa("127.0.0.1:443")).is_ok());
        assert!(f.check(sa("[::ffff:127.0.0.1]:443")).is_ok());
        assert!(f.check(sa("127.9.9.9:443")).is_ok());
        assert!(f.check(sa("10.0.0.1:443")).is_err());
    }

    #[test]
    fn deny_cidrs_add_to_the_builtin_list() {
        let f = filter();
        let err = f.check(sa("203.0.114.9:443")).unwrap_err();
        assert!(err.contains("deny_cidrs"), "{err}");
        assert!(f.check(sa("203.0.115.9:443")).is_ok());
    }

    #[test]
    fn denies_own_listeners_even_when_allowed() {
        let f = filter();
        assert!(f.check(sa("127.0.0.1:3128")).is_err());
        assert!(
            f.check(sa("127.0.0.2:8443")).is_err(),
            "0.0.0.0 listener covers loopback"
        );
        assert!(
            f.check(sa("10.0.32.5:8443")).is_err(),
            "and interface addresses"
        );
        assert!(f.check(sa("127.0.0.1:3129")).is_ok());
    }
}
