//! `egress-proxy check`: the decision the proxy would make for one request, computed by the
//! same steps a connection takes (judge, SNI, resolve and check addresses), without dialling.

use std::net::SocketAddr;

use crate::config::Config;
use crate::conn::tunnel::sni_names;
use crate::conn::{admit, build_state, denial, record_failure, upstream_targets, Failure};
use crate::log::{Decision, Listener};
use crate::policy::host;
use crate::reason::Reason;
use crate::wire::authority::split_authority;

/// The verdict and a one-line explanation.
pub struct Outcome {
    pub allowed: bool,
    pub line: Decision,
    pub addresses: Vec<SocketAddr>,
}

impl Outcome {
    pub fn summary(&self) -> String {
        let l = &self.line;
        let mut text = format!(
            "{} reason={} rule={} host={} port={}",
            l.decision.as_str(),
            l.reason,
            l.rule.as_deref().unwrap_or("-"),
            l.host.as_deref().unwrap_or("-"),
            l.port.map_or("-".to_owned(), |p| p.to_string()),
        );
        if let Some(principal) = &l.principal {
            text.push_str(&format!(" principal={principal}"));
        }
        if !l.enforced {
            text.push_str(" enforced=false");
        }
        if !self.addresses.is_empty() {
            let list: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
            text.push_str(&format!(" upstream=[{}]", list.join(",")));
        }
        if let Some(message) = &l.message {
            text.push_str(&format!(" ({message})"));
        }
        text
    }
}

/// One request as `check` is asked about it.
pub struct Query<'a> {
    pub client: SocketAddr,
    /// The workload the request would carry valid credentials for (`--principal`).
    pub principal: Option<&'a str>,
    pub sni: Option<&'a str>,
    /// Resolve and check the addresses (never dialled), or judge the name only.
    pub resolve: bool,
    /// `host`, `host:port` or `[v6]:port`.
    pub target: &'a str,
    pub default_port: u16,
}

pub async fn check(config: Config, query: Query<'_>) -> Outcome {
    let Query {
        client,
        principal,
        sni,
        resolve,
        target,
        default_port,
    } = query;
    let state = build_state(config, None);
    let mut line = Decision::new(Listener::Explicit, client);
    // The verdict is the exit status: a would-be denial (report mode) is a denial to `check`.
    let outcome = |line: Decision, addresses| Outcome {
        allowed: line.allowed(),
        line,
        addresses,
    };
    let parsed = split_authority(target)
        .map_err(|e| Failure::new(Reason::BadRequest, e))
        .and_then(|(text, port)| {
            host::parse_host(text)
                .map(|h| (h, port.unwrap_or(default_port)))
                .map_err(|e| Failure::new(Reason::BadRequest, e.to_string()))
        });
    let (host, port) = match parsed {
        Ok(parsed) => parsed,
        Err(failure) => {
            record_failure(&mut line, &failure);
            return outcome(line, Vec::new());
        }
    };
    line.host = Some(host.to_string());
    line.port = Some(port);
    line.sni = sni.map(str::to_owned);
    line.principal = principal.map(str::to_owned);
    if principal.is_none() && state.config.require_principal {
        let failure = Failure::new(
            Reason::Auth,
            "require_principal: a request without credentials gets 407 (try --principal NAME)",
        );
        record_failure(&mut line, &failure);
        return outcome(line, Vec::new());
    }
    let Ok(admitted) = admit(&state, &mut line, &host, port) else {
        return outcome(line, Vec::new());
    };
    // The SNI is judged as the tunnel judges it: under report mode a mismatch is a would-be
    // denial, and resolving goes on to show what would have been dialled.
    if let Some(sni) = sni {
        if let Err(failure) = sni_names(Some(sni), &host) {
            if denial(&mut line, admitted.enforced, failure).is_err() {
                return outcome(line, Vec::new());
            }
        }
    }
    if !resolve {
        return outcome(line, Vec::new());
    }
    match upstream_targets(&state, &host, port).await {
        Ok(addresses) => outcome(line, addresses),
        Err(failure) => {
            record_failure(&mut line, &failure);
            outcome(line, Vec::new())
        }
    }
}
