//! Workloads (`principals:`) and their token digests: checked when an explicit-listener request
//! carries `Proxy-Authorization`, before the request is decided. Pure: no I/O, no clock.
//!
//! The config holds only SHA-256 digests, never tokens, so a leaked config (an SSM parameter
//! read by too many roles, a log of the rendered template) gives nobody a credential.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// A SHA-256 digest of a token.
pub type TokenDigest = [u8; 32];

/// Workload name → the digests of its accepted tokens (more than one during a rotation).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Principals {
    by_name: BTreeMap<String, Vec<TokenDigest>>,
}

/// Names and counts only: a digest of a weak token can be brute-forced, so a `{config:?}`
/// in a log must not carry them.
impl std::fmt::Debug for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.by_name
                    .iter()
                    .map(|(name, digests)| (name, format!("{} digest(s)", digests.len()))),
            )
            .finish()
    }
}

/// Stands in for an unknown name's digest so that a miss costs what a hit costs.
const DUMMY: TokenDigest = [0x5a; 32];

impl Principals {
    /// Adds `name` with its accepted digests (the config parser has checked both).
    pub fn insert(&mut self, name: impl Into<String>, digests: Vec<TokenDigest>) {
        self.by_name.insert(name.into(), digests);
    }

    /// Whether `token` is valid for `name`: SHA-256(token) compared in constant time against
    /// every accepted digest for that name (two during a rotation). Unknown names cost the
    /// same work as known ones (compare against a dummy digest) so names can't be probed by
    /// timing. (A name with more digests costs one more comparison each; that says how many
    /// tokens a name has, never whether a guess was close.)
    pub fn verify(&self, name: &str, token: &[u8]) -> bool {
        let digest: TokenDigest = Sha256::digest(token).into();
        let (known, accepted): (Choice, &[TokenDigest]) = match self.by_name.get(name) {
            Some(list) if !list.is_empty() => (Choice::from(1), list),
            _ => (Choice::from(0), std::slice::from_ref(&DUMMY)),
        };
        let mut ok = Choice::from(0);
        for candidate in accepted {
            ok |= digest.ct_eq(candidate);
        }
        (ok & known).into()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The defined workload names, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// `sha256:<64 hex digits>` (either case) as a digest; anything else is `None`.
pub fn parse_digest(text: &str) -> Option<TokenDigest> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *slot = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Whether `name` is a usable workload name: 1-64 of `A-Z a-z 0-9 . _ -`. It travels in
/// `Proxy-Authorization: Basic base64(name:token)`, so it can never hold a `:`, and it appears
/// in every decision line, so it holds nothing a log reader would have to escape.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(token: &str) -> TokenDigest {
        Sha256::digest(token.as_bytes()).into()
    }

    fn sample() -> Principals {
        let mut p = Principals::default();
        p.insert(
            "glue-etl",
            vec![digest_of("old-token"), digest_of("new-token")],
        );
        p.insert("builder", vec![digest_of("b-token")]);
        p
    }

    #[test]
    fn verify_accepts_every_rotation_digest_and_nothing_else() {
        let p = sample();
        assert!(p.verify("glue-etl", b"old-token"));
        assert!(p.verify("glue-etl", b"new-token"));
        assert!(p.verify("builder", b"b-token"));
        assert!(!p.verify("glue-etl", b"b-token"), "another name's token");
        assert!(!p.verify("builder", b"old-token"));
        assert!(!p.verify("glue-etl", b""));
        assert!(!p.verify("glue-etl", b"new-token\n"));
        assert!(!p.verify("Glue-etl", b"new-token"), "names are exact");
    }

    #[test]
    fn unknown_names_and_the_dummy_digest_never_verify() {
        let p = sample();
        assert!(!p.verify("nobody", b"old-token"));
        // Whatever token hashes to the dummy, an unknown name still fails: `known` gates it.
        let mut with_empty = Principals::default();
        with_empty.insert("empty", Vec::new());
        assert!(!with_empty.verify("empty", b""));
        assert!(!Principals::default().verify("", b""));
    }

    #[test]
    fn the_digest_itself_is_not_a_token() {
        let p = sample();
        let hex: String = digest_of("b-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!p.verify("builder", hex.as_bytes()));
        assert!(!p.verify("builder", format!("sha256:{hex}").as_bytes()));
    }

    #[test]
    fn parses_sha256_digests_in_either_case() {
        let hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let upper = parse_digest(&format!("sha256:{hex}")).unwrap();
        let lower = parse_digest(&format!("sha256:{}", hex.to_lowercase())).unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper, digest_of("test"));
        for bad in [
            hex.to_owned(),
            format!("SHA256:{hex}"),
            format!("sha256:{}", &hex[..63]),
            format!("sha256:{hex}0"),
            format!("sha256: {}", &hex[1..]),
            format!("sha256:{}g", &hex[..63]),
            "sha256:".to_owned(),
            "plain-token".to_owned(),
        ] {
            assert_eq!(parse_digest(&bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_short_plain_identifiers() {
        for good in ["glue-etl", "a", "ci.build_1", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "a:b", "a b", "ümlaut", "a/b", &"x".repeat(65), "a\n"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_never_shows_digests() {
        let shown = format!("{:?}", sample());
        assert!(
            shown.contains("glue-etl") && shown.contains("2 digest(s)"),
            "{shown}"
        );
        let hex: String = digest_of("b-token")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!shown.contains(&hex[..16]), "{shown}");
        assert!(
            !shown.contains("90, 90") && !shown.contains("0x"),
            "{shown}"
        );
    }

    #[test]
    fn names_lists_every_principal() {
        assert_eq!(
            sample().names().collect::<Vec<_>>(),
            ["builder", "glue-etl"]
        );
        assert!(Principals::default().is_empty() && !sample().is_empty());
    }
}
