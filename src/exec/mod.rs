//! Order execution on real exchanges: signed REST clients, user-data streams and executors.
//!
//! - [`signing`]: HMAC-SHA256 request signing, credentials and the [`signing::Secret`] newtype.

pub mod signing;
