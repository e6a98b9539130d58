//! Everything that speaks WeChat's API: HTTP calls, the error-code table, tokens, callback crypto.

pub mod client;
pub mod crypto;
pub mod errcode;
pub mod lookup;
pub(crate) mod reason;
pub mod shared_token;
pub mod token;
