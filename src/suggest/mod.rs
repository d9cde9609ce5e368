//! `egress-proxy suggest`: turns decision lines (typically from report mode) into the smallest
//! config change that would have let the denied traffic through. Off the connection path:
//! it reads logs, never sockets. Pure: lines (and the current config) in, YAML text out.
//!
//! It never widens: a port or client denial extends the rule that named the host (the port,
//! or the one client address) and keeps every limit it had; a name gets an exact-name rule,
//! or joins a rule holding a sibling name with the same ports and limits; an IP literal the
//! built-in deny list refuses is never suggested. Where many names share a parent that
//! tenants of a shared service can register under (an S3 bucket, a CDN distribution), it
//! says that only a broad wildcard would cover them and leaves that choice to a person.
//!
//! With a config the output is that config, merged, every changed line marked
//! `# suggested: why`; without one, an `allow:` section plus the edits to make by hand.

mod plan;
mod read;
mod render;

use std::collections::BTreeSet;

use crate::config::Config;

/// Parents under which anyone can get a name: a wildcard there admits other tenants.
const SHARED_PARENTS: &[&str] = &[
    "amazonaws.com",
    "cloudfront.net",
    "azureedge.net",
    "blob.core.windows.net",
    "storage.googleapis.com",
    "appspot.com",
    "fastly.net",
    "akamaized.net",
    "herokuapp.com",
    "github.io",
    "githubusercontent.com",
    "r2.dev",
    "workers.dev",
    "vercel.app",
    "netlify.app",
];

/// How many distinct names under one parent make it worth a flag.
const MANY: usize = 5;

/// The config the suggestion is merged into: its name (for the output), its text (whose
/// other sections are kept) and the checked config it parsed to.
pub struct Base<'a> {
    pub source: &'a str,
    pub text: &'a str,
    pub config: &'a Config,
}

/// Decision lines taken in one at a time: a log of any size is held only as the distinct
/// denied requests it holds.
#[derive(Debug, Default)]
pub struct Lines(read::Observed);

impl Lines {
    pub fn read(&mut self, line: &str) {
        self.0.add(line);
    }

    /// The suggested change: with `base`, the whole merged config; without, a standalone
    /// `allow:` section. The text is checked before it is returned: it must parse as a
    /// config and allow every request it claims to; a `WARNING` comment says so if not.
    pub fn suggest(&self, base: Option<&Base<'_>>) -> String {
        let plan = plan::plan(&self.0, base.map(|b| b.config));
        let mut out = render::render(&self.0, &plan, base);
        out.push_str(&verify(&out, &plan, base.is_some()));
        out
    }
}

/// [`Lines::suggest`] for lines already in memory.
pub fn suggest<'a>(lines: impl IntoIterator<Item = &'a str>, base: Option<&Base<'_>>) -> String {
    let mut read = Lines::default();
    for line in lines {
        read.read(line);
    }
    read.suggest(base)
}

/// A warning line if the text does not validate or does not allow what the plan covers.
fn verify(out: &str, plan: &plan::Plan, whole: bool) -> String {
    let text = if whole {
        out.to_owned()
    } else {
        format!("listeners: {{ explicit: 127.0.0.1:3128 }}\n{out}")
    };
    match Config::from_yaml(&text) {
        Err(problems) => format!(
            "# WARNING: this suggestion does not validate; do not apply it: {}\n",
            problems.to_string().replace('\n', "; ")
        ),
        Ok(config) => {
            let missed: Vec<String> = plan
                .covered
                .iter()
                .filter(|(asked, host)| !plan::allows(&config.policy, asked, host))
                .map(|(asked, _)| plan::authority(asked))
                .collect();
            if missed.is_empty() {
                String::new()
            } else {
                format!(
                    "# WARNING: this suggestion still denies {}; please report it\n",
                    missed.join(", ")
                )
            }
        }
    }
}

fn shared_parent(parent: &str) -> bool {
    SHARED_PARENTS
        .iter()
        .any(|s| parent == *s || parent.ends_with(&format!(".{s}")))
}

/// The last two labels (`files.pythonhosted.org` → `pythonhosted.org`); under a shared
/// parent, everything but the first label (`b.s3.us-east-1.amazonaws.com` →
/// `s3.us-east-1.amazonaws.com`), since that first label is what tenants choose.
fn parent(name: &str) -> String {
    if SHARED_PARENTS
        .iter()
        .any(|s| name.ends_with(&format!(".{s}")))
    {
        if let Some((_, rest)) = name.split_once('.') {
            return rest.to_owned();
        }
    }
    let labels: Vec<&str> = name.rsplitn(3, '.').collect();
    match labels.as_slice() {
        [tld, domain, ..] => format!("{domain}.{tld}"),
        _ => name.to_owned(),
    }
}

fn rule_name(parent: &str) -> String {
    parent.replace('.', "-")
}

fn join<'a>(ports: impl IntoIterator<Item = &'a u16>, separator: &str) -> String {
    ports
        .into_iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

/// Ports as a flow list: `[443, 8443]`.
fn flow(ports: &BTreeSet<u16>) -> String {
    format!("[{}]", join(ports, ", "))
}

#[cfg(test)]
mod tests;
