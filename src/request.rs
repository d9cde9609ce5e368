//! What a client asked for, as the pipeline carries it from the moment the request has been
//! read: on which listener, from whom, for which host and port. Pure data.

use serde::Serialize;

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
