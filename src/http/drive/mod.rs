//! Drivers of the connection machine ([`crate::http::conn`]): the only part of `src/http`
//! that touches a socket or a clock.
//!
//! - `blocking`: over an `io::Handle`, waiting in the kernel; what classic workers use.
//! - `script`: over input given as a list of pieces with a clock that the caller moves; it
//!   returns to its caller when the input runs out instead of waiting. The corpus,
//!   property and fuzz tests drive the shipping machine through it.

pub mod blocking;
pub mod script;

#[cfg(test)]
mod tests;
