//! The I/O core: everything `moonbridge_io` does, expressed without Lua.
//!
//! Handles offer non-blocking steps only (`*_step`); the single blocking driver waits with
//! `poll(2)` and retries. Every descriptor is an `OwnedFd` created close-on-exec.

pub mod buffer;
pub mod epoll;
pub mod exec;
pub mod handle;
pub mod net;
pub mod poll;
pub mod signal;
pub mod spare;
pub mod sys;

pub use handle::{Handle, HandleError, Kind, ReadStatus};
pub use net::{Listener, Port};
