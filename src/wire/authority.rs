//! Splitting `host:port` as a client writes it in a CONNECT target or a `Host` header, before
//! the host is parsed and judged. Pure and strict: anything odd is an error, never a guess.

/// `host[:port]` → the host text (IPv6 keeps its brackets) and the port if one was given.
pub fn split_authority(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    if text.is_empty() {
        return Err("empty authority");
    }
    if text.contains('@') {
        return Err("user information ('@') is not allowed in the authority");
    }
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']').ok_or("unclosed '[' in an IPv6 authority")?;
        match &text[end + 1..] {
            "" => (&text[..=end], None),
            rest => match rest.strip_prefix(':') {
                Some(port) => (&text[..=end], Some(port)),
                None => return Err("unexpected text after ']'"),
            },
        }
    } else {
        match text.rsplit_once(':') {
            // A second ':' means an unbracketed IPv6 literal, which is ambiguous with a port.
            Some((host, _)) if host.contains(':') => {
                return Err("an IPv6 literal must be in brackets");
            }
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("empty host");
    }
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

/// 1–65535 in plain decimal digits: no sign, no spaces, at most five digits.
fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be 1-65535 in decimal digits");
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port must be 1-65535 in decimal digits"),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_ipv4_and_bracketed_ipv6() {
        assert_eq!(
            split_authority("example.com:443"),
            Ok(("example.com", Some(443)))
        );
        assert_eq!(split_authority("example.com"), Ok(("example.com", None)));
        assert_eq!(split_authority("127.0.0.1:80"), Ok(("127.0.0.1", Some(80))));
        assert_eq!(split_authority("[::1]:8443"), Ok(("[::1]", Some(8443))));
        assert_eq!(
            split_authority("[::ffff:127.0.0.1]"),
            Ok(("[::ffff:127.0.0.1]", None))
        );
    }

    #[test]
    fn rejects_hostile_and_ambiguous_forms() {
        for bad in [
            "",
            ":443",
            "user@example.com:443",
            "example.com@evil.com:443",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+443",
            "example.com: 443",
            "example.com:0443x",
            "example.com:000443",
            "::1:443",
            "[::1",
            "[::1]x:443",
            "[::1]:",
        ] {
            assert!(split_authority(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
