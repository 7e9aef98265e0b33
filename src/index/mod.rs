//! The key index: memory-mapped key files (one per key space), the similarity kernels that
//! score their rows, and exact search and retrieval over them.

pub(crate) mod approx;
pub(crate) mod bounds;
pub mod graph;
pub mod kernels;
pub mod keyfile;
pub(crate) mod mode;
pub(crate) mod quant;
pub(crate) mod search;
pub mod sidecar;
pub(crate) mod simd;
