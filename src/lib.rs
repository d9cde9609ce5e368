//! egress-proxy: a deny-by-default egress proxy. Clients reach it with `HTTPS_PROXY`
//! (CONNECT, absolute-form HTTP) or by redirection (TLS judged on its SNI, HTTP on its
//! `Host`); it lets through only what a rule names, dials only addresses it resolved and
//! checked itself, and writes one JSON decision line per request.
//!
//! # Layout
//!
//! In the order a connection meets them:
//!
//! - [`serve`]: bind listeners, accept under the connection cap, drain on SIGTERM.
//! - [`conn`]: per-listener handling ([`conn::http`] for CONNECT and plain HTTP,
//!   [`conn::tunnel`] for tunnels and transparent TLS) over the shared steps in `conn`.
//! - [`wire`]: reading what clients send: authorities and the TLS ClientHello (pure).
//! - [`policy`]: host names, patterns, the rule index and `decide`; the upstream address
//!   deny table (pure).
//! - [`resolve`]: static overrides, then DNS.
//! - [`log`]: the decision line; [`metrics`] and [`admin`]: what operators scrape.
//! - [`config`]: YAML → checked `Config`, its sources; [`reload`] swaps it while serving.
//! - [`reason`]: every outcome's machine word and HTTP status, in one table.
//! - [`calendar`]: date arithmetic for timestamps and `report_until`.

pub mod admin;
pub mod calendar;
pub mod check;
pub mod config;
pub mod conn;
pub mod log;
pub mod metrics;
pub mod policy;
pub mod reason;
pub mod reload;
pub mod request;
pub mod resolve;
pub mod serve;
pub mod suggest;
pub mod sys;
pub mod wire;
