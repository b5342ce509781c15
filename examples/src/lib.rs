//! Plugins and programs a new authchain user copies from.
//!
//! - [`required_header`]: Gloo's `RequiredHeader` example plugin, written
//!   against authchain's public API as a third party would.

pub mod required_header;

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
