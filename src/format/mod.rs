//! The bytes on disk: the log file (header, frames, recovery of a torn tail), the record
//! payloads inside its frames, and the little-endian codec both are written with. Every
//! layout here is specified in `format-spec.md`; `tests/spec_constants.rs` holds the two
//! together.

pub(crate) mod codec;
pub mod log;
pub(crate) mod record;
