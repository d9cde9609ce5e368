//! The address check, run on every address the proxy is about to dial (after resolving,
//! before connecting): the built-in deny table, `upstream.deny_cidrs`, the exceptions in
//! `upstream.allow_cidrs`, and the proxy's own listeners. Pure.
//!
//! An IPv6 address may carry IPv4 addresses (IPv4-mapped, -compatible and -translated forms,
//! NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4, Teredo client and server): dialling it can
//! reach those IPv4 hosts through a translator or relay. So every rule applies to the address
//! itself *and* to each IPv4 it carries ([`ip::embedded_ipv4s`]), and the address is refused if
//! any of them is refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    ///
    /// The address is judged as every address it stands for: itself as written, its canonical
    /// form (`::ffff:a.b.c.d` is `a.b.c.d`), and each IPv4 address it carries. Each of those
    /// goes through the whole check on its own, and one refusal refuses the address:
    ///
    /// - the own-listener check can't be opened by anything, in any form;
    /// - an `allow_cidrs` entry exempts only the addresses it contains. `allow_cidrs:
    ///   [127.0.0.0/8]` lets `64:ff9b::7f00:1` through (it carries only 127.0.0.1), but not a
    ///   Teredo address whose client is in 127/8 and whose server is 10.x, nor an IPv6 address
    ///   that is itself in a denied IPv6 range (`::7f00:1`, deprecated IPv4-compatible). An
    ///   allow entry can never make an address *more* reachable than each of its parts;
    /// - built-in rows and `deny_cidrs` entries, IPv4 or IPv6, refuse whatever they contain.
    pub fn check(&self, addr: SocketAddr) -> Result<(), String> {
        let written = addr.ip();
        let ip = written.to_canonical();
        let carried = carried_ipv4s(ip);
        let port = addr.port();
        if self.is_own_listener(ip, port) {
            return Err(format!("{addr} is one of the proxy's own listeners"));
        }
        if let Some(v4) = carried
            .iter()
            .find(|v4| self.is_own_listener(IpAddr::V4(**v4), port))
        {
            return Err(format!(
                "{ip} carries {v4}, and {} is one of the proxy's own listeners",
                SocketAddr::new(IpAddr::V4(*v4), port)
            ));
        }
        // Carried addresses first, so that `::7f00:1` is reported as loopback rather than as
        // deprecated IPv4-compatible.
        for v4 in carried {
            self.judge(IpAddr::V4(v4))
                .map_err(|why| format!("{ip} carries {v4}, which is in {why}"))?;
        }
        self.judge(ip).map_err(|why| format!("{ip} is in {why}"))?;
        if written != ip {
            // `::ffff:a.b.c.d` against an IPv6 deny entry such as ::/64 or ::ffff:0:0/96.
            self.judge(written)
                .map_err(|why| format!("{written} is in {why}"))?;
        }
        Ok(())
    }

    /// Whether dialling `addr` would loop into one of the proxy's own listeners (in any form
    /// that carries one): what `Proxy-Status` calls `proxy_loop_detected`.
    pub fn loops_into_proxy(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.is_own_listener(ip, addr.port())
            || carried_ipv4s(ip)
                .iter()
                .any(|v4| self.is_own_listener(IpAddr::V4(*v4), addr.port()))
    }

    /// One address (not what it carries) through the allow exceptions, the built-in table and
    /// `deny_cidrs`; `Err` names the range that refuses it.
    fn judge(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        if let Some(row) = ip::builtin_row(ip) {
            return Err(format!("{} {}", row.net, row.what));
        }
        if let Some(net) = self.deny.iter().find(|net| net.contains(&ip)) {
            return Err(format!("upstream.deny_cidrs {net}"));
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

/// The IPv4 addresses `ip` carries (none for an IPv4 address).
fn carried_ipv4s(ip: IpAddr) -> Vec<Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => ip::embedded_ipv4s(v6).collect(),
        IpAddr::V4(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

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

    fn deny_44() -> AddrFilter {
        AddrFilter::new(vec!["44.0.0.0/8".parse().unwrap()], Vec::new())
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    /// 44.0.0.1 (and 45.0.0.1, just outside 44/8) in every IPv6 form that carries it, written
    /// out by hand rather than computed, so a shared bug in the test and the code can't hide.
    const CARRY_44_0_0_1: &[(&str, &str, &str)] = &[
        ("mapped", "::ffff:44.0.0.1", "::ffff:45.0.0.1"),
        ("translated (SIIT)", "::ffff:0:2c00:1", "::ffff:0:2d00:1"),
        ("nat64 well-known", "64:ff9b::2c00:1", "64:ff9b::2d00:1"),
        (
            "nat64 local-use /96",
            "64:ff9b:1::2c00:1",
            "64:ff9b:1::2d00:1",
        ),
        (
            "nat64 local-use /48",
            "64:ff9b:1:2c00:0:100::",
            "64:ff9b:1:2d00:0:100::",
        ),
        (
            "nat64 local-use /56",
            "64:ff9b:1:2c:0:1::",
            "64:ff9b:1:2d:0:1::",
        ),
        ("6to4", "2002:2c00:1::1", "2002:2d00:1::1"),
        // Client 44.0.0.1 is stored inverted in the last 32 bits; server 65.54.227.120.
        (
            "teredo client",
            "2001:0:4136:e378:8000:63bf:d3ff:fffe",
            "2001:0:4136:e378:8000:63bf:d2ff:fffe",
        ),
        // Server 44.0.0.1 in bits 32-63; client 65.54.227.120.
        (
            "teredo server",
            "2001:0:2c00:1:8000:63bf:bec9:1c87",
            "2001:0:2d00:1:8000:63bf:bec9:1c87",
        ),
    ];

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
    fn builtin_denial_of_an_embedding_names_the_carried_address() {
        let err = AddrFilter::default()
            .check(sa("[64:ff9b::a9fe:a9fe]:80"))
            .unwrap_err();
        assert!(
            err.contains("carries 169.254.169.254") && err.contains("169.254.0.0/16"),
            "{err}"
        );
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
    fn deny_cidrs_apply_to_every_ipv6_form_carrying_a_denied_ipv4() {
        let f = deny_44();
        assert!(f.check(at("44.0.0.1", 443)).is_err());
        assert!(f.check(at("45.0.0.1", 443)).is_ok());
        for (form, inside, outside) in CARRY_44_0_0_1 {
            let err = f
                .check(at(inside, 443))
                .expect_err(&format!("{form} {inside} carries 44.0.0.1"));
            assert!(
                err.contains("44.0.0.1") && err.contains("upstream.deny_cidrs 44.0.0.0/8"),
                "{form}: {err}"
            );
            assert_eq!(f.check(at(outside, 443)), Ok(()), "{form} {outside}");
        }
    }

    #[test]
    fn deny_cidrs_apply_to_the_deprecated_compatible_form_too() {
        // ::/96 is refused anyway; the reason given is the operator's range it reaches.
        let err = deny_44().check(at("::2c00:1", 443)).unwrap_err();
        assert!(err.contains("upstream.deny_cidrs 44.0.0.0/8"), "{err}");
    }

    #[test]
    fn dns64_answer_pair_is_refused_both_ways() {
        // A 44.0.0.1 and the AAAA a DNS64 resolver synthesises from it.
        let f = deny_44();
        for answer in ["44.0.0.1", "64:ff9b::2c00:1"] {
            assert!(f.check(at(answer, 443)).is_err(), "{answer}");
        }
    }

    #[test]
    fn ipv6_deny_cidrs_match_the_address_itself() {
        let f = AddrFilter::new(
            vec![
                "64:ff9b::/96".parse().unwrap(),
                "2600:1f00::/24".parse().unwrap(),
                "::/64".parse().unwrap(),
            ],
            Vec::new(),
        );
        for (a, net) in [
            ("64:ff9b::808:808", "64:ff9b::/96"),
            ("2600:1f18::1", "2600:1f00::/24"),
            // A mapped address written as IPv6 is judged as written too.
            ("::ffff:8.8.8.8", "::/64"),
        ] {
            let err = f.check(at(a, 443)).unwrap_err();
            assert!(err.contains(&format!("deny_cidrs {net}")), "{a}: {err}");
        }
        for a in ["2600:1e00::1", "8.8.8.8", "64:ff9b:1::808:808"] {
            assert_eq!(f.check(at(a, 443)), Ok(()), "{a}");
        }
    }

    #[test]
    fn allow_cidrs_do_not_open_an_embedding_that_carries_a_denied_address() {
        let f = filter(); // allow 127.0.0.0/8
                          // Teredo: client 127.0.0.1 (allowed), server 10.0.0.1 (private).
        let err = f
            .check(at("2001:0:a00:1:8000:63bf:80ff:fffe", 443))
            .unwrap_err();
        assert!(err.contains("10.0.0.1"), "{err}");
        // Teredo: server 127.0.0.1 (allowed), client 203.0.114.1 (deny_cidrs).
        let err = f
            .check(at("2001:0:7f00:1:8000:63bf:34ff:8dfe", 443))
            .unwrap_err();
        assert!(err.contains("203.0.114.1"), "{err}");
        // The deprecated IPv4-compatible form is refused as itself, whatever it carries.
        let err = f.check(at("::7f00:1", 443)).unwrap_err();
        assert!(err.contains("::/96"), "{err}");
    }

    #[test]
    fn allow_cidrs_open_an_embedding_whose_every_part_is_allowed() {
        let f = filter(); // allow 127.0.0.0/8
        for a in [
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            // Teredo: server 127.0.0.1, client 127.0.0.2.
            "2001:0:7f00:1:8000:63bf:80ff:fffd",
        ] {
            assert_eq!(f.check(at(a, 443)), Ok(()), "{a}");
        }
        // Without the exception, the same addresses are refused.
        for a in ["64:ff9b::7f00:1", "2002:7f00:1::1"] {
            assert!(AddrFilter::default().check(at(a, 443)).is_err(), "{a}");
        }
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

    #[test]
    fn denies_own_listeners_in_every_embedded_form() {
        let f = filter(); // allow 127.0.0.0/8, so only the self-loop check can refuse these
        for (a, port) in [
            ("::ffff:127.0.0.1", 3128),
            ("::ffff:0:7f00:1", 3128),
            ("64:ff9b::7f00:1", 3128),
            ("64:ff9b:1::7f00:1", 3128),
            ("2002:7f00:1::1", 3128),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", 3128), // Teredo client 127.0.0.1
            ("64:ff9b::7f00:2", 8443),                      // 0.0.0.0:8443 covers loopback
            ("64:ff9b::a00:2005", 8443),                    // and 10.0.32.5
            ("2002:a00:2005::1", 8443),
        ] {
            let err = f.check(at(a, port)).unwrap_err();
            assert!(err.contains("own listeners"), "{a} port {port}: {err}");
        }
        for (a, port) in [("64:ff9b::7f00:1", 3129), ("64:ff9b::7f00:2", 8444)] {
            assert_eq!(f.check(at(a, port)), Ok(()), "{a} port {port}");
        }
    }

    fn v4_net() -> impl Strategy<Value = (ipnet::Ipv4Net, Ipv4Addr)> {
        (any::<u32>(), 1u8..=32, any::<u32>()).prop_map(|(base, len, host)| {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base), len)
                .unwrap()
                .trunc();
            let inside = u32::from(net.network()) | (host & u32::from(net.hostmask()));
            (net, Ipv4Addr::from(inside))
        })
    }

    proptest! {
        // Nothing written beside the crate: a failure prints its minimal input.
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// For any IPv4 in a deny_cidrs range, every IPv6 form carrying it is refused; and the
        /// common forms of an address just outside the range (and the built-in table) pass.
        #[test]
        fn any_address_in_deny_cidrs_is_refused_in_every_embedded_form(
            (net, v4) in v4_net()
        ) {
            let f = AddrFilter::new(vec![IpNet::V4(net)], Vec::new());
            prop_assert!(f.check(SocketAddr::new(IpAddr::V4(v4), 443)).is_err());
            for (form, v6) in ip::tests::embeddings(v4) {
                // Local-use NAT64 with a /48-/64 prefix can't tell 0.0.0.0/8 from zero padding
                // (see ip::embedded_ipv4s); 0/8 is built-in denied and unroutable anyway.
                if v4.octets()[0] == 0 && form.starts_with("nat64 local /") && form != "nat64 local /96" {
                    continue;
                }
                prop_assert!(
                    f.check(SocketAddr::new(IpAddr::V6(v6), 443)).is_err(),
                    "{} {} carries {} in {}", form, v6, v4, net
                );
            }
            // Flip the lowest network bit: outside `net`.
            let outside = Ipv4Addr::from(u32::from(v4) ^ (1u32 << (32 - net.prefix_len())));
            // The Teredo forms' other half is 65.54.227.120, which `net` may hold.
            let teredo_ok = !net.contains(&Ipv4Addr::new(65, 54, 227, 120));
            if ip::builtin_deny(IpAddr::V4(outside)).is_none() {
                for (form, v6) in ip::tests::embeddings(outside) {
                    if ["mapped", "nat64", "6to4"].contains(&form)
                        || (teredo_ok && form.starts_with("teredo"))
                    {
                        prop_assert_eq!(
                            f.check(SocketAddr::new(IpAddr::V6(v6), 443)),
                            Ok(()),
                            "{} {} carries {}, outside {}", form, v6, outside, net
                        );
                    }
                }
            }
        }

        /// An allow entry covering one part of a Teredo address never opens it when the other
        /// part is denied.
        #[test]
        fn allowed_teredo_half_never_opens_a_denied_half(
            (net, v4) in v4_net(), loopback in any::<u32>()
        ) {
            let allowed = Ipv4Addr::from(0x7f00_0000 | (loopback & 0x00ff_ffff));
            prop_assume!(!IpNet::V4(net).contains(&IpAddr::V4(allowed)));
            prop_assume!(!(IpAddr::V4(v4)).is_loopback());
            let f = AddrFilter::new(vec![IpNet::V4(net)], vec!["127.0.0.0/8".parse().unwrap()]);
            let [s1, s2, s3, s4] = v4.octets();
            let client = !u32::from(allowed);
            let server_denied = Ipv6Addr::new(
                0x2001, 0, u16::from_be_bytes([s1, s2]), u16::from_be_bytes([s3, s4]),
                0, 0, (client >> 16) as u16, client as u16,
            );
            let [a1, a2, a3, a4] = allowed.octets();
            let client = !u32::from(v4);
            let client_denied = Ipv6Addr::new(
                0x2001, 0, u16::from_be_bytes([a1, a2]), u16::from_be_bytes([a3, a4]),
                0, 0, (client >> 16) as u16, client as u16,
            );
            for v6 in [server_denied, client_denied] {
                prop_assert!(f.check(SocketAddr::new(IpAddr::V6(v6), 443)).is_err(), "{}", v6);
            }
        }
    }
}
