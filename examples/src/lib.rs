//! Plugins and programs a new authchain user copies from.
//!
//! - [`required_header`]: Gloo's `RequiredHeader` example plugin, written
//!   against authchain's public API as a third party would.

pub mod required_header;

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The book's `library.md` Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/library.md")]
pub struct LibraryDoctests;

/// The book's `quickstart.md` Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/src/quickstart.md")]
pub struct QuickstartDoctests;
