//! The built-in deny table for upstream addresses: checked after a name is resolved (or an IP
//! literal allowed by a rule) and before the address is dialled. Pure.
//!
//! IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4, Teredo, ...) are judged by the
//! IPv4 they carry too: otherwise `64:ff9b::a9fe:a9fe` would reach IMDS through a NAT64.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One row of the built-in deny table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyRange {
    pub net: IpNet,
    /// What the range is and where it is defined, for logs and 502 bodies.
    pub what: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, what: &'static str) -> DenyRange {
    DenyRange {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)),
        what,
    }
}

const fn v6(segments: [u16; 8], len: u8, what: &'static str) -> DenyRange {
    let [a, b, c, d, e, f, g, h] = segments;
    DenyRange {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            len,
        )),
        what,
    }
}

/// The built-in deny table. First match wins, so `::` and `::1` come before `::/96`.
pub static BUILTIN_DENY: &[DenyRange] = &[
    v4(0, 0, 0, 0, 8, "\"this network\" (RFC 791, RFC 1122); 0.0.0.0 reaches the local host"),
    v4(10, 0, 0, 0, 8, "private network (RFC 1918)"),
    v4(100, 64, 0, 0, 10, "shared address space / carrier-grade NAT (RFC 6598)"),
    v4(127, 0, 0, 0, 8, "loopback (RFC 1122)"),
    v4(169, 254, 0, 0, 16, "link-local (RFC 3927); includes AWS IMDS 169.254.169.254 and ECS credentials 169.254.170.2"),
    v4(172, 16, 0, 0, 12, "private network (RFC 1918)"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignments (RFC 6890)"),
    v4(192, 0, 2, 0, 24, "documentation TEST-NET-1 (RFC 5737)"),
    v4(192, 168, 0, 0, 16, "private network (RFC 1918)"),
    v4(198, 18, 0, 0, 15, "benchmarking (RFC 2544)"),
    v4(198, 51, 100, 0, 24, "documentation TEST-NET-2 (RFC 5737)"),
    v4(203, 0, 113, 0, 24, "documentation TEST-NET-3 (RFC 5737)"),
    v4(224, 0, 0, 0, 4, "multicast (RFC 1112, RFC 5771)"),
    v4(240, 0, 0, 0, 4, "reserved (RFC 1112); includes limited broadcast 255.255.255.255 (RFC 919)"),
    v6([0; 8], 128, "unspecified (RFC 4291)"),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback (RFC 4291)"),
    v6([0; 8], 96, "IPv4-compatible IPv6, deprecated (RFC 4291)"),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only (RFC 6666)"),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking (RFC 5180)"),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "ORCHID, deprecated (RFC 4843)"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation (RFC 3849)"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation (RFC 9637)"),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing SIDs, not globally reachable (RFC 9602)"),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local (RFC 4193); includes AWS IMDS fd00:ec2::254 and EKS Pod Identity fd00:ec2::23"),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local (RFC 4291)"),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local, deprecated (RFC 3879)"),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast (RFC 4291)"),
];

/// The row that denies `ip`, or `None` if it may be dialled. For an IPv6 address carrying a
/// denied IPv4 address this is that IPv4 address's row; [`builtin_deny_via`] says which one.
pub fn builtin_deny(ip: IpAddr) -> Option<&'static DenyRange> {
    builtin_deny_via(ip).map(|(row, _)| row)
}

/// Like [`builtin_deny`], also giving the embedded IPv4 address the denial came through.
pub fn builtin_deny_via(ip: IpAddr) -> Option<(&'static DenyRange, Option<Ipv4Addr>)> {
    if let IpAddr::V6(v6) = ip {
        // Embeddings first, so that `::7f00:1` is reported as loopback, not just deprecated.
        for carried in embedded_ipv4s(v6) {
            if let Some(row) = builtin_row(IpAddr::V4(carried)) {
                return Some((row, Some(carried)));
            }
        }
    }
    builtin_row(ip).map(|row| (row, None))
}

/// The first row containing `ip` itself, not looking at the IPv4 addresses it carries; for
/// callers that judge each carried address on its own (see `AddrFilter::check`).
pub fn builtin_row(ip: IpAddr) -> Option<&'static DenyRange> {
    BUILTIN_DENY.iter().find(|row| row.net.contains(&ip))
}

/// The IPv4 address an IPv6 address carries, if any: IPv4-mapped `::ffff:0:0/96`,
/// IPv4-compatible `::/96` (not `::` or `::1`), IPv4-translated `::ffff:0:0:0/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`
/// (last 32 bits), 6to4 `2002::/16`, or the Teredo client (`2001::/32`, last 32 bits inverted).
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments() {
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0 | 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 1, ..] => Some(last),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last))),
        _ => None,
    }
}

/// Every IPv4 address `ip` may carry: [`embedded_ipv4`], the Teredo server, and for the
/// local-use NAT64 prefix `64:ff9b:1::/48` also the RFC 6052 readings for /48, /56 and /64
/// prefixes, since a deployment may use any of them (an attacker's DNS picks the bits).
pub fn embedded_ipv4s(ip: Ipv6Addr) -> impl Iterator<Item = Ipv4Addr> {
    let o = ip.octets();
    let mut found: [Option<Ipv4Addr>; 4] = [embedded_ipv4(ip), None, None, None];
    match ip.segments() {
        [0x2001, 0, ..] => found[1] = Some(Ipv4Addr::new(o[4], o[5], o[6], o[7])),
        [0x64, 0xff9b, 1, ..] => {
            // Octet 8 (bits 64..72) is always zero in RFC 6052, so the IPv4 skips it.
            let readings = [
                Ipv4Addr::new(o[12], o[13], o[14], o[15]),
                Ipv4Addr::new(o[6], o[7], o[9], o[10]),
                Ipv4Addr::new(o[7], o[9], o[10], o[11]),
                Ipv4Addr::new(o[9], o[10], o[11], o[12]),
            ];
            // Zero padding makes the wrong readings start with 0: keep only readings outside
            // 0.0.0.0/8 when there are any, so every public address stays dialable.
            let real = |v4: &Ipv4Addr| v4.octets()[0] != 0;
            if readings.iter().any(real) {
                found = readings.map(|v4| Some(v4).filter(real));
            }
        }
        _ => {}
    }
    found.into_iter().flatten()
}

const AWS_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254), // IMDS
    Ipv4Addr::new(169, 254, 170, 2),   // ECS task credentials
    Ipv4Addr::new(169, 254, 170, 23),  // EKS Pod Identity credentials
];
const AWS_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // IMDS
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),  // EKS Pod Identity credentials
];

/// Whether `ip` is an AWS instance/task credential endpoint (in any IPv6 embedding), so a
/// denial can point the client at VPC endpoints or NO_PROXY instead.
pub fn is_aws_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => AWS_V4.contains(&v4),
        IpAddr::V6(v6) => AWS_V6.contains(&v6) || embedded_ipv4s(v6).any(|e| AWS_V4.contains(&e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn denied_by(s: &str) -> Option<String> {
        builtin_deny(ip(s)).map(|row| row.net.to_string())
    }

    /// Every IPv6 form that carries `v4`, by name (Teredo client and server separately).
    pub(crate) fn embeddings(v4: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
        let [a, b, c, d] = v4.octets();
        let hi = u16::from_be_bytes([a, b]);
        let lo = u16::from_be_bytes([c, d]);
        let public = u32::from(Ipv4Addr::new(65, 54, 227, 120));
        vec![
            ("mapped", v4.to_ipv6_mapped()),
            ("translated", Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo)),
            ("compatible", v4.to_ipv6_compatible()),
            ("nat64", Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo)),
            (
                "nat64 local /96",
                Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, hi, lo),
            ),
            (
                "nat64 local /48",
                Ipv6Addr::new(0x64, 0xff9b, 1, hi, u16::from(c), u16::from(d) << 8, 0, 0),
            ),
            (
                "nat64 local /56",
                Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    1,
                    u16::from(a),
                    u16::from(b),
                    u16::from_be_bytes([c, d]),
                    0,
                    0,
                ),
            ),
            (
                "nat64 local /64",
                Ipv6Addr::new(
                    0x64,
                    0xff9b,
                    1,
                    0,
                    u16::from(a),
                    u16::from_be_bytes([b, c]),
                    u16::from(d) << 8,
                    0,
                ),
            ),
            ("6to4", Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1)),
            (
                "teredo client",
                Ipv6Addr::new(0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, !hi, !lo),
            ),
            (
                "teredo server",
                Ipv6Addr::new(
                    0x2001,
                    0,
                    hi,
                    lo,
                    0x8000,
                    0x63bf,
                    !(public >> 16) as u16,
                    !public as u16,
                ),
            ),
        ]
    }

    #[test]
    fn every_row_denies_its_first_and_last_address() {
        for row in BUILTIN_DENY {
            for addr in [row.net.network(), row.net.broadcast()] {
                let got = builtin_deny(addr).unwrap_or_else(|| panic!("{addr} not denied"));
                // ::/96's ends are :: (own row) and ::255.255.255.255 (carries broadcast).
                if row.net.to_string() != "::/96" {
                    assert_eq!(got, row, "{addr}");
                }
            }
            assert!(row.what.contains("RFC"), "{}", row.what);
        }
        assert_eq!(BUILTIN_DENY.len(), 27);
    }

    #[test]
    fn each_range_by_address() {
        for (addr, net) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("10.1.2.3", "10.0.0.0/8"),
            ("100.64.0.1", "100.64.0.0/10"),
            ("100.127.255.255", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("169.254.169.254", "169.254.0.0/16"),
            ("169.254.170.2", "169.254.0.0/16"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.1", "192.0.2.0/24"),
            ("192.168.1.1", "192.168.0.0/16"),
            ("198.19.255.255", "198.18.0.0/15"),
            ("198.51.100.7", "198.51.100.0/24"),
            ("203.0.113.9", "203.0.113.0/24"),
            ("239.255.255.250", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("100::1", "100::/64"),
            ("2001:2::1", "2001:2::/48"),
            ("2001:2:0:ffff::1", "2001:2::/48"),
            ("2001:10::1", "2001:10::/28"),
            ("5f00:1::1", "5f00::/16"),
            ("2001:db8::1", "2001:db8::/32"),
            ("3fff:fff::1", "3fff::/20"),
            ("fd00:ec2::254", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("fec0::1", "fec0::/10"),
            ("ff02::1", "ff00::/8"),
        ] {
            assert_eq!(denied_by(addr).as_deref(), Some(net), "{addr}");
        }
    }

    #[test]
    fn just_outside_and_public_addresses_pass() {
        for addr in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "8.8.8.8",
            "1.1.1.1",
            "100:0:0:1::",
            "2001:20::1",
            "2001:1::1",     // PCP anycast (RFC 7723): globally reachable
            "2001:2:1::1",   // just past benchmarking
            "2001:3::1",     // AMT (RFC 7450)
            "2001:4:112::1", // AS112 (RFC 7535)
            "5eff:ffff::1",
            "5f01::1",
            "2001:db7:ffff::1",
            "2001:db9::",
            "3fff:1000::",
            "fbff::1",
            "fe00::1",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(denied_by(addr), None, "{addr}");
        }
    }

    #[test]
    fn embeddings_of_denied_ipv4_are_denied() {
        for v4 in [
            "127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
            "192.168.0.1",
            "0.0.0.0",
        ] {
            let v4: Ipv4Addr = v4.parse().unwrap();
            let row = builtin_deny(IpAddr::V4(v4)).unwrap();
            for (form, v6) in embeddings(v4) {
                if v6.is_unspecified() {
                    assert_eq!(denied_by("::").as_deref(), Some("::/128"));
                    continue;
                }
                assert_eq!(
                    embedded_ipv4s(v6).find(|e| *e == v4),
                    Some(v4),
                    "{form} {v6}"
                );
                let got = builtin_deny_via(IpAddr::V6(v6));
                if form.starts_with("nat64 local /") && form != "nat64 local /96" {
                    // Several RFC 6052 readings; another one may be the denied one reported.
                    assert!(got.is_some(), "{form} {v6}");
                } else {
                    assert_eq!(got, Some((row, Some(v4))), "{form} {v6}");
                }
            }
        }
    }

    #[test]
    fn embeddings_of_public_ipv4_pass_except_deprecated_compatible() {
        let v4 = Ipv4Addr::new(8, 8, 8, 8);
        for (form, v6) in embeddings(v4) {
            if form == "compatible" {
                assert_eq!(denied_by(&v6.to_string()).as_deref(), Some("::/96"));
            } else {
                assert_eq!(builtin_deny(IpAddr::V6(v6)), None, "{form} {v6}");
            }
        }
    }

    #[test]
    fn embedded_ipv4_primary_forms() {
        for (v6, v4) in [
            ("::ffff:1.2.3.4", Some("1.2.3.4")),
            ("::1.2.3.4", Some("1.2.3.4")),
            ("::", None),
            ("::1", None),
            ("64:ff9b::1.2.3.4", Some("1.2.3.4")),
            ("64:ff9b:1::1.2.3.4", Some("1.2.3.4")),
            ("2002:102:304::", Some("1.2.3.4")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("192.0.2.45")), // RFC 4380's example
            ("2606:4700::1111", None),
        ] {
            let got = embedded_ipv4(v6.parse().unwrap());
            assert_eq!(got, v4.map(|s| s.parse().unwrap()), "{v6}");
        }
        let teredo: Vec<_> =
            embedded_ipv4s("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap()).collect();
        assert_eq!(
            teredo,
            [
                Ipv4Addr::new(192, 0, 2, 45),
                Ipv4Addr::new(65, 54, 227, 120)
            ]
        );
    }

    #[test]
    fn aws_metadata_endpoints() {
        for addr in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:aa02::",
            "64:ff9b::a9fe:aa02",
        ] {
            assert!(is_aws_metadata(ip(addr)), "{addr}");
            assert!(builtin_deny(ip(addr)).is_some(), "{addr}");
        }
        assert!(builtin_deny(ip("169.254.169.254"))
            .unwrap()
            .what
            .contains("IMDS"));
        assert!(builtin_deny(ip("fd00:ec2::254"))
            .unwrap()
            .what
            .contains("fd00:ec2::254"));
        for addr in [
            "169.254.169.253",
            "fd00:ec2::1",
            "8.8.8.8",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_aws_metadata(ip(addr)), "{addr}");
        }
    }
}
