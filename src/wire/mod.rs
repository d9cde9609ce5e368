//! Reading what clients send, byte-level and pure: the authority of a request, the target a
//! plain-HTTP request names, and the TLS ClientHello.

pub mod authority;
pub mod client_hello;
pub mod target;
