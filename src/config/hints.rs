//! Fix hints for config problems: the likely key for a misspelt one, and what a host entry
//! that isn't a host (a URL, `host:port`) should have been. Pure.

/// The known key nearest to `key` by edit distance, if near enough to be a typo: at most one
/// edit for short keys, two for longer ones.
pub(super) fn nearest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (distance(&key.to_ascii_lowercase(), k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What to do about a `hosts:` entry that failed to parse, as a `: ...` tail for its message,
/// or empty when there is nothing better to say than the error.
pub(super) fn host(text: &str) -> String {
    if let Some((_, rest)) = text.split_once("://") {
        let host = rest.split(['/', ':']).next().unwrap_or(rest);
        return format!("; a host name, not a URL: write `{host}`");
    }
    if let Some((host, port)) = text.rsplit_once(':') {
        if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return format!(
                "; put the port in `ports:`, not in the host: `{host}` with ports: [{port}]"
            );
        }
    }
    String::new()
}

/// A hint for YAML that failed to parse at (1-based) `line`: an unquoted `*` starts an alias,
/// so `hosts: [*.example.com]` is not a list of one pattern.
pub(super) fn yaml(text: &str, line: usize) -> Option<&'static str> {
    let source = text.lines().nth(line.checked_sub(1)?)?;
    let bare_star = source
        .split('#')
        .next()
        .unwrap_or_default()
        .match_indices('*')
        .any(|(at, _)| {
            let before = source[..at].trim_end();
            before.ends_with(['[', ',', '-', ':', '{']) || before.is_empty()
        });
    bare_star.then_some(
        "quote patterns that start with `*`: \"*.example.com\" (a bare * starts a YAML alias)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_key_only_when_near() {
        let rule = ["name", "hosts", "ports", "clients", "tls"];
        assert_eq!(nearest("host", &rule), Some("hosts"));
        assert_eq!(nearest("prots", &rule), Some("ports"));
        assert_eq!(nearest("Hosts", &rule), Some("hosts"));
        assert_eq!(nearest("client", &rule), Some("clients"));
        assert_eq!(nearest("color", &rule), None);
        assert_eq!(nearest("x", &rule), None);
    }

    #[test]
    fn host_hints_name_the_fix() {
        assert!(host("pypi.org:443").contains("put the port in `ports:`"));
        assert!(host("pypi.org:443").contains("ports: [443]"));
        assert!(host("https://pypi.org/simple").contains("write `pypi.org`"));
        assert_eq!(host("a@b.example"), "");
        assert_eq!(host("2001:db8::1"), "");
    }

    #[test]
    fn yaml_hint_spots_a_bare_star() {
        let text = "allow:\n  - hosts: [*.example.com]\n  - hosts:\n      - *.x.com\n";
        assert!(yaml(text, 2).is_some());
        assert!(yaml(text, 4).is_some());
        assert!(yaml("hosts: ['*.example.com'] # *\n", 1).is_none());
        assert!(yaml(text, 1).is_none());
        assert!(yaml(text, 99).is_none());
    }
}
