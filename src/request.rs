//! Who is asking, and where from: the listener a connection came in on, the client, and for
//! redirected traffic where it was headed. What the client asked for (host, port, SNI,
//! principal) joins these in the request's decision line. Pure data.

use std::net::SocketAddr;

use serde::Serialize;

use crate::log::Decision;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Listener {
    Explicit,
    TransparentTls,
    TransparentHttp,
}

impl Listener {
    pub const ALL: [Listener; 3] = [
        Listener::Explicit,
        Listener::TransparentTls,
        Listener::TransparentHttp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Explicit => "explicit",
            Listener::TransparentTls => "transparent_tls",
            Listener::TransparentHttp => "transparent_http",
        }
    }
}

/// How a connection arrived: on which listener, from whom, and for redirected traffic where
/// it was headed (`SO_ORIGINAL_DST`), with the port to assume when that is unknown.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub listener: Listener,
    pub peer: SocketAddr,
    pub original_dst: Option<SocketAddr>,
    pub default_port: u16,
}

impl Arrival {
    /// The destination port: the original one when redirected, else the configured default.
    pub fn port(&self) -> u16 {
        self.original_dst
            .map_or(self.default_port, |dst| dst.port())
    }

    /// A decision line for this connection, not yet decided.
    pub fn line(&self) -> Decision {
        let mut line = Decision::new(self.listener, self.peer);
        line.original_dst = self.original_dst;
        line
    }
}
