use super::*;

fn open(pattern: &str) -> Option<String> {
    open_suffix(&HostPattern::parse(pattern).unwrap()).map(|o| o.suffix)
}

#[test]
fn refuses_wildcards_over_a_public_suffix_naming_it() {
    for (pattern, suffix) in [
        ("*.s3.amazonaws.com", "s3.amazonaws.com"),
        (
            "*.s3.dualstack.us-east-1.amazonaws.com",
            "s3.dualstack.us-east-1.amazonaws.com",
        ),
        ("*.cloudfront.net", "cloudfront.net"),
        ("*.github.io", "github.io"),
        ("*.co.uk", "co.uk"),
        ("*.r2.cloudflarestorage.com", "r2.cloudflarestorage.com"),
        ("*.storage.googleapis.com", "storage.googleapis.com"),
        // In-label globs directly under a suffix: a stranger registers `bucket-evil`.
        ("bucket-*.s3.amazonaws.com", "s3.amazonaws.com"),
        ("*.bucket-*.s3.amazonaws.com", "s3.amazonaws.com"),
        ("my-*.github.io", "github.io"),
        // Under a wildcard rule (`*.compute.amazonaws.com`): every child is a suffix.
        ("*.x.compute.amazonaws.com", "x.compute.amazonaws.com"),
    ] {
        assert_eq!(open(pattern).as_deref(), Some(suffix), "{pattern}");
    }
}

#[test]
fn refuses_wildcards_above_a_public_suffix() {
    // amazonaws.com is not itself a suffix, but s3.amazonaws.com (and hundreds more) are.
    let o = open_suffix(&HostPattern::parse("*.amazonaws.com").unwrap()).unwrap();
    assert_eq!(
        o.suffix, "s3.amazonaws.com",
        "the recognisable one is named"
    );
    assert!(o.more > 100, "{o:?}");
    assert!(open("*.us-east-1.amazonaws.com").is_some());
    // A glob reaching into a suffix's own label: `s3*` takes `s3`, `*.` the bucket.
    assert!(open("*.s3*.amazonaws.com").is_some());
    assert!(open("*.*.amazonaws.com").is_some());
    // A wildcard rule's base: `*.compute.amazonaws.com` makes `x.compute...` a suffix.
    assert!(open("*.compute.amazonaws.com").is_some());
    assert!(
        open("*.cloudflarestorage.com").is_some(),
        "extra row's parent"
    );
}

#[test]
fn accepts_wildcards_whose_names_one_owner_holds() {
    for pattern in [
        "*.example.com",
        "*.pythonhosted.org",
        "api-*.example.org",
        "*.my-bucket.s3.amazonaws.com",
        // One label before amazonaws.com, and no suffix is a single label under it that
        // `zzz-*` could take.
        "zzz-*.amazonaws.com",
        // Globs that cannot take the suffix's label: `s3` never matches `api-*`.
        "x.api-*.amazonaws.com",
    ] {
        assert_eq!(open(pattern), None, "{pattern}");
    }
    assert!(!is_public_suffix("pythonhosted.org"));
}

#[test]
fn exact_names_are_one_tenant() {
    for exact in [
        "my-bucket.s3.amazonaws.com",
        "docker-images-prod.s3.dualstack.us-east-1.amazonaws.com",
        "s3.amazonaws.com",
        "github.io",
    ] {
        assert_eq!(open(exact), None, "{exact}");
    }
}

#[test]
fn follows_the_list_rules_for_wildcards_exceptions_and_idn() {
    assert!(is_public_suffix("com"));
    assert!(is_public_suffix("anything-unlisted"), "implicit `*` rule");
    assert!(is_public_suffix("co.uk"));
    assert!(!is_public_suffix("example.co.uk"));
    assert!(is_public_suffix("x.compute.amazonaws.com"));
    assert!(!is_public_suffix("compute.amazonaws.com"));
    // `*.ck` with the exception `!www.ck`.
    assert!(is_public_suffix("anything.ck"));
    assert!(!is_public_suffix("www.ck"));
    // IDN rules are indexed in A-labels, the form host names are normalised to.
    assert!(is_public_suffix("xn--55qx5d.cn"), "公司.cn");
}

#[test]
fn reaching_under_needs_a_label_left_for_the_registrant() {
    let globs = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // `a-*.example.com` (no prefix) can't be strictly under `s.example.com`: too few labels.
    assert!(!reaches_under(
        false,
        &globs(&["a-*"]),
        "s.example.com",
        "example.com"
    ));
    assert!(reaches_under(
        false,
        &globs(&["*", "s"]),
        "s.example.com",
        "example.com"
    ));
    assert!(reaches_under(
        true,
        &globs(&["s"]),
        "s.example.com",
        "example.com"
    ));
    assert!(!reaches_under(
        true,
        &globs(&["t"]),
        "s.example.com",
        "example.com"
    ));
    assert!(reaches_under(true, &[], "a.b.example.com", "example.com"));
    assert!(reaches_under(
        false,
        &globs(&["x", "*"]),
        "*.example.com",
        "example.com"
    ));
    assert!(!reaches_under(true, &[], "example.org", "example.com"));
}

#[test]
fn spelling_does_not_get_a_wildcard_past_the_check() {
    for spelling in [
        "*.S3.AmazonAWS.com",
        "*.s3.amazonaws.com.",
        "**.s3.amazonaws.com",
        "*.*.s3.amazonaws.com",
        "*.github.io.",
        "*.GITHUB.IO",
    ] {
        assert!(open(spelling).is_some(), "{spelling}");
    }
}

#[test]
fn every_listed_suffix_refuses_a_wildcard_over_it() {
    // The whole list: `*.S` for each rule S of two or more labels (wildcard rules as their
    // `*.base`, whose children are suffixes), so a parsing slip in the index can't hide one.
    let mut checked = 0;
    for rule in LIST
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|rule| !rule.starts_with("//") && !rule.starts_with('!'))
    {
        let text = if rule.starts_with("*.") {
            rule.to_owned()
        } else {
            format!("*.{rule}")
        };
        // Single-label tails are the parser's floor (`*.com`: too broad), not this check's.
        let Ok(pattern) = HostPattern::parse(&text) else {
            continue;
        };
        assert!(open_suffix(&pattern).is_some(), "{text} was accepted");
        checked += 1;
    }
    assert!(checked > 8_000, "only {checked} rules checked");
}
