//! MEXC spot: protobuf market-data websocket (JSON control messages) and the REST depth
//! snapshot its book sync needs.

pub mod proto;
pub mod protocol;

pub use protocol::MexcProtocol;
