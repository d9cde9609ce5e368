//! The transparent HTTP listener's target: the `Host` header (or an absolute URI that agrees
//! with it) names the host; the port is where the connection was headed. The request is
//! then sent on by [`super::forward`] like an absolute-form one.

use super::http::{bad_request, Refused};
use super::Arrival;
use crate::policy::Host;

/// The host and port a transparent HTTP request is for: the URI's host if it has one (already
/// checked against `Host`), else `Host`; either must name the connection's port if any.
pub fn target(
    arrival: &Arrival,
    from_uri: Option<(Host, u16)>,
    from_header: Option<(Host, Option<u16>)>,
) -> Result<(Host, u16), Refused> {
    let port = arrival.port();
    let (host, named_port) = match (from_uri, from_header) {
        (Some((host, uri_port)), _) => (host, Some(uri_port)),
        (None, Some((host, header_port))) => (host, header_port),
        (None, None) => return Err(bad_request("no Host header")),
    };
    if named_port.is_some_and(|p| p != port) {
        return Err(bad_request(format!(
            "the request names another port than the connection's {port}"
        )));
    }
    Ok((host, port))
}
