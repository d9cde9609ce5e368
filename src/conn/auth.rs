//! Who is asking, on the explicit listener: `Proxy-Authorization: Basic base64(name:token)`
//! checked against `principals:` (SHA-256 digests, compared in constant time). Failures are
//! throttled per client address, so a brute-force loop gets slower, not faster. The token is
//! never logged, echoed or kept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{HeaderMap, PROXY_AUTHORIZATION};

use crate::policy::Principals;

/// What a request's credentials say.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No `Proxy-Authorization` header.
    Absent,
    /// Valid credentials for this workload.
    Valid(String),
    /// Present but not valid; the text says why without the token.
    Invalid(String),
}

/// Reads and verifies the request's proxy credentials.
pub fn credentials(headers: &HeaderMap, principals: &Principals) -> Credentials {
    let mut values = headers.get_all(PROXY_AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Credentials::Absent;
    };
    if values.next().is_some() {
        return Credentials::Invalid("more than one Proxy-Authorization header".into());
    }
    let Some((scheme, encoded)) = value.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return Credentials::Invalid("Proxy-Authorization is not `Basic <base64>`".into());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Invalid(format!(
            "Proxy-Authorization scheme {scheme:?} is not supported: use Basic"
        ));
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Credentials::Invalid("Proxy-Authorization is not valid base64".into());
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return Credentials::Invalid("Proxy-Authorization holds no `name:token`".into());
    };
    let (name, token) = (&decoded[..colon], &decoded[colon + 1..]);
    let Ok(name) = std::str::from_utf8(name) else {
        return Credentials::Invalid("the principal name is not UTF-8".into());
    };
    if principals.verify(name, token) {
        Credentials::Valid(name.to_owned())
    } else {
        // The name is safe to say (it is not a secret); the token is not.
        let shown: String = name.chars().take(64).filter(|c| !c.is_control()).collect();
        Credentials::Invalid(format!("the token for principal '{shown}' is not valid"))
    }
}

/// Failures before the throttle starts to slow a client down.
const FREE_FAILURES: u32 = 3;
/// The longest a failed attempt is held before its 407.
const MAX_PENALTY: Duration = Duration::from_secs(10);
/// A client with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Clients tracked at once; beyond this the oldest are forgotten first.
const TRACKED: usize = 65_536;

/// Recent credential failures per client address.
#[derive(Default)]
pub struct Throttle {
    strikes: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Records a failure from `client` and says how long to hold its answer: nothing for the
    /// first few, then doubling from 100 ms up to [`MAX_PENALTY`].
    pub fn failed(&self, client: IpAddr) -> Duration {
        let now = Instant::now();
        let mut strikes = self
            .strikes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if strikes.len() >= TRACKED {
            strikes.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        }
        let entry = strikes.entry(client.to_canonical()).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        penalty(entry.0)
    }
}

fn penalty(failures: u32) -> Duration {
    if failures <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES - 1).min(10);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(MAX_PENALTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn principals() -> Principals {
        use sha2::Digest;
        let mut p = Principals::default();
        p.insert("glue-etl", vec![sha2::Sha256::digest(b"s3cret").into()]);
        p
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(PROXY_AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(userpass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userpass)
        )
    }

    #[test]
    fn valid_wrong_and_absent_credentials() {
        let p = principals();
        assert_eq!(credentials(&HeaderMap::new(), &p), Credentials::Absent);
        assert_eq!(
            credentials(&with(&basic("glue-etl:s3cret")), &p),
            Credentials::Valid("glue-etl".into())
        );
        // The scheme is case-insensitive; a token may itself hold colons.
        assert_eq!(
            credentials(
                &with(&basic("glue-etl:s3cret").replace("Basic", "bAsIc")),
                &p
            ),
            Credentials::Valid("glue-etl".into())
        );
        for bad in [
            basic("glue-etl:wrong"),
            basic("glue-etl:s3cret "),
            basic("other:s3cret"),
            basic("glue-etl"),
            "Bearer abc".to_owned(),
            "Basic !!!".to_owned(),
            "Basic".to_owned(),
        ] {
            let got = credentials(&with(&bad), &p);
            let Credentials::Invalid(why) = got else {
                panic!("{bad}: {got:?}");
            };
            assert!(!why.contains("s3cret") && !why.contains("wrong"), "{why}");
        }
        let mut two = with(&basic("glue-etl:s3cret"));
        two.append(
            PROXY_AUTHORIZATION,
            HeaderValue::from_str(&basic("glue-etl:s3cret")).unwrap(),
        );
        assert!(matches!(credentials(&two, &p), Credentials::Invalid(_)));
    }

    #[test]
    fn failures_get_slower_not_faster_and_are_forgotten_per_client() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.32.7".parse().unwrap();
        let b: IpAddr = "10.0.32.8".parse().unwrap();
        let waits: Vec<Duration> = (0..12).map(|_| t.failed(a)).collect();
        assert!(waits[..3].iter().all(Duration::is_zero), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(waits[3], Duration::from_millis(100));
        assert_eq!(*waits.last().unwrap(), MAX_PENALTY);
        // Another client is not slowed by the first one's failures.
        assert_eq!(t.failed(b), Duration::ZERO);
        // The IPv4-mapped spelling is the same client.
        let mapped: IpAddr = "::ffff:10.0.32.7".parse().unwrap();
        assert_eq!(t.failed(mapped), MAX_PENALTY);
    }
}
