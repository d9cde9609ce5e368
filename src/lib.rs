//! egress-proxy: a deny-by-default egress proxy. Clients reach it with `HTTPS_PROXY`
//! (CONNECT, absolute-form HTTP) or by redirection (TLS judged on its SNI, HTTP on its
//! `Host`); it lets through only what a rule names, dials only addresses it resolved and
//! checked itself, and writes one JSON decision line per request.
//!
//! # Layout
//!
//! In the order a connection meets them:
//!
//! - [`serve`]: bind listeners (port 0 asks the kernel), accept under the connection cap and
//!   while the decision log has room, drain on shutdown.
//! - [`conn`]: one path per listener, each top-down in its own file ([`conn::explicit`],
//!   [`conn::plain`], [`conn::sni`]), over the shared steps in `conn`: admit (policy and
//!   report mode, decided once), resolve and check addresses, dial; then [`conn::forward`]
//!   or [`conn::tunnel`] to the end.
//! - [`request`]: what was asked; [`wire`]: reading it (authorities, request targets, the TLS ClientHello; pure).
//! - [`policy`]: host names, patterns, the rule index and `decide`; the upstream address
//!   deny table (pure).
//! - [`resolve`]: static overrides, then DNS.
//! - [`log`]: the decision line and the guard that writes it once whatever ends a request;
//!   [`metrics`] and [`admin`]: what operators scrape.
//! - [`reason`]: every outcome's machine word, HTTP status and reply, in one table.
//! - [`config`]: YAML → checked `Config`, its sources; [`reload`] swaps it while serving.
//! - [`check`]: the same admit and address steps for one request, without dialling;
//!   [`suggest`]: decision lines in, the narrowest config change out (pure).
//! - [`sys`]: every libc call; [`calendar`]: dates for timestamps and `report_until`.

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
