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

use super::sweep::Sweep;
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
    } else if principals.contains(name) {
        // A known name is safe to say; the token never is.
        Credentials::Invalid(format!("the token for principal '{name}' is not valid"))
    } else {
        // An unknown "name" may be a token typed in the wrong field: never repeat it.
        Credentials::Invalid("no such principal (the name given is not shown)".into())
    }
}

/// Failures before a client has to cool down.
const FREE_FAILURES: u32 = 3;
/// The longest cool-down.
const MAX_PENALTY: Duration = Duration::from_secs(10);
/// A client with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(300);
/// Clients tracked at once.
const TRACKED: usize = 65_536;

/// Recent credential failures per client (an IPv6 client by its /64). After a few, a client
/// cools down: until then its credentials are refused without being checked, so guesses
/// made meanwhile learn nothing, and nothing is held open while it waits.
#[derive(Default)]
pub struct Throttle {
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    strikes: HashMap<String, Strikes>,
    /// Clients quiet for [`FORGET_AFTER`] are dropped once per that period.
    sweep: Sweep,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    until: Instant,
}

impl Throttle {
    /// How long `client` must still wait before its credentials are checked again, if at all.
    pub fn cooling(&self, client: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let clients = self.lock();
        let left = clients
            .strikes
            .get(&key(client))?
            .until
            .saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Records a failure from `client` and returns the cool-down now in force: nothing for
    /// the first few, then doubling from 100 ms up to [`MAX_PENALTY`].
    pub fn failed(&self, client: IpAddr) -> Duration {
        self.failed_at(client, Instant::now())
    }

    fn failed_at(&self, client: IpAddr, now: Instant) -> Duration {
        let mut clients = self.lock();
        let Clients { strikes, sweep } = &mut *clients;
        let full = strikes.len() >= TRACKED;
        let quiet = |s: &Strikes| now.duration_since(s.last) >= FORGET_AFTER;
        sweep.run(now, FORGET_AFTER, full, strikes, quiet);
        if strikes.len() >= TRACKED {
            tracing::warn!(
                "credential throttle: {TRACKED} clients failing at once; starting afresh"
            );
            strikes.clear();
        }
        let entry = strikes.entry(key(client)).or_insert(Strikes {
            failures: 0,
            last: now,
            until: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last = now;
        let wait = penalty(entry.failures);
        entry.until = now + wait;
        wait
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key(client: IpAddr) -> String {
    super::budget::client_key(None, client)
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

    #[test]
    fn clients_that_stopped_failing_are_dropped_without_waiting_for_a_full_table() {
        let throttle = Throttle::default();
        let start = Instant::now();
        for i in 0..1_000u32 {
            throttle.failed_at(
                IpAddr::from(std::net::Ipv4Addr::from(0x7f01_0000 + i)),
                start,
            );
        }
        assert_eq!(throttle.lock().strikes.len(), 1_000);
        // Within the period nothing is dropped, even a client long quiet by then.
        let later = start + FORGET_AFTER / 2;
        throttle.failed_at("127.9.0.1".parse().unwrap(), later);
        assert_eq!(throttle.lock().strikes.len(), 1_001);
        // A period on, the first thousand are forgotten; the recent one stays.
        throttle.failed_at("127.9.0.2".parse().unwrap(), start + FORGET_AFTER);
        let clients = throttle.lock();
        assert_eq!(clients.strikes.len(), 2);
        assert!(clients.strikes.capacity() < 1_000, "the table shrank too");
    }

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
        // An unknown name may be a token in the wrong field: never repeated.
        assert_eq!(
            credentials(&with(&basic("s3cret:glue-etl")), &p),
            Credentials::Invalid("no such principal (the name given is not shown)".into())
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
    fn failures_lead_to_a_growing_cool_down_per_client() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.32.7".parse().unwrap();
        let b: IpAddr = "10.0.32.8".parse().unwrap();
        let waits: Vec<Duration> = (0..12).map(|_| t.failed(a)).collect();
        assert!(waits[..3].iter().all(Duration::is_zero), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(waits[3], Duration::from_millis(100));
        assert_eq!(*waits.last().unwrap(), MAX_PENALTY);
        // Cooling down now: credentials are not checked until it passes.
        assert!(t
            .cooling(a)
            .is_some_and(|left| left > Duration::from_secs(5)));
        // Another client is not slowed by the first one's failures.
        assert_eq!(t.cooling(b), None);
        assert_eq!(t.failed(b), Duration::ZERO);
        // The IPv4-mapped spelling is the same client; an IPv6 /64 is one client.
        let mapped: IpAddr = "::ffff:10.0.32.7".parse().unwrap();
        assert_eq!(t.failed(mapped), MAX_PENALTY);
        for i in 0..4 {
            t.failed(format!("2001:db8::{i}").parse().unwrap());
        }
        assert!(t.cooling("2001:db8::ffff".parse().unwrap()).is_some());
    }
}
