//! Reading what clients send, byte-level and pure: the authority of a request, and the TLS
//! ClientHello.

pub mod authority;
pub mod client_hello;
