//! Where a proxy started with `127.0.0.1:0` listeners really listens: it says so on stderr
//! (`listening: explicit on 127.0.0.1:41234`). Shared by the tests and `benches/proxy`.

use std::net::SocketAddr;

/// The address the proxy reported for `listener` (`explicit`, `transparent_tls`,
/// `transparent_http`, `admin`), once that line is in `stderr`.
pub fn bound_address(stderr: &str, listener: &str) -> Option<SocketAddr> {
    let needle = format!("listening: {listener} on ");
    let at = stderr.find(&needle)? + needle.len();
    stderr[at..].split_whitespace().next()?.parse().ok()
}
