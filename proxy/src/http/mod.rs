//! HTTP proxying: matching, filters, forwarding, pooling, error answers.
pub mod errors;
pub mod failure;
pub mod forward;
pub mod h1client;
pub mod handler;
pub mod headers;
pub mod pool;
pub mod retry;
pub mod within;
