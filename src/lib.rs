//! trajdb: an embedded database for LLM-agent trajectories.
//!
//! An append-only, checksummed log holds trajectories, key-space definitions and usage
//! events; memory-mapped key files hold the vectors for exact SIMD search; usage counters
//! give each trajectory its measured usefulness Q. The on-disk format is described byte by
//! byte in `format-spec.md`.
//!
//! ```
//! use trajdb::{Database, Options, SpaceDef, Level, Metric, Trajectory, Filter};
//! let dir = std::env::temp_dir().join(format!("trajdb-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let db = Database::open(&dir, Options::default())?;
//! db.create_space(&SpaceDef::new("goal", Level::Trajectory, 3, Metric::Cosine))?;
//! let mut t = Trajectory { goal: "make tea".into(), ..Default::default() };
//! t.outcome.success = Some(true);
//! t.keys.insert("goal".into(), vec![1.0, 0.0, 0.0]);
//! let id = db.append(&t)?;
//! let hits = db.search("goal", &[1.0, 0.1, 0.0], 5, &Filter { success_only: true, ..Default::default() })?;
//! assert_eq!(hits[0].id, id);
//! # drop(db); let _ = std::fs::remove_dir_all(&dir);
//! # Ok::<(), trajdb::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod checkpoint;
mod db;
pub mod embed;
mod error;
pub mod export;
pub mod format;
mod id_map;
pub mod import;
pub mod index;
pub mod jsonl;
mod maintenance;
mod merge;
mod names;
pub mod rng;
pub mod storage;
mod trajs;
mod usage;

pub use db::{Database, Durability, OpenReport, Options, SpaceStats, Stats, LOCK_FILE};
pub use embed::{Embedder, HashEmbedder};
pub use error::{Error, Result};
pub use format::record::{
    ElemType, EmbedderId, Level, Metric, Origin, Outcome, Provenance, ProvenanceKind,
    RetrievalEvent, SpaceDef, Stage, Step, Trajectory,
};
pub use index::approx::{
    ApproxPath, SearchPath, CATCHUP_PER_SEARCH, READ_ONLY_CATCHUP_ROWS, RETRIEVE_WIDENINGS,
};
pub use index::graph::{GraphParams, GraphStatus};
pub use index::mode::{RetrievePath, SearchMode, DEFAULT_EXACT_BELOW_ROWS};
pub use index::search::{Example, Filter, Hit, RetrieveQuery, RetrieveWork};
pub use maintenance::{RepairReport, VerifyReport};
pub use merge::MergeReport;
pub use usage::{Episode, Utility};

/// Decodes one record payload of kind `kind` the way opening a database does, for the
/// fuzzers. Returns whether it decoded. Not part of the stable API.
#[doc(hidden)]
pub fn fuzz_decode_record(kind: u16, payload: &[u8]) -> bool {
    let names = |id: u32| {
        Some((
            format!("space{id}"),
            if id.is_multiple_of(2) {
                Level::Trajectory
            } else {
                Level::Step
            },
        ))
    };
    let scanned = format::record::scan_trajectory(payload).is_ok();
    let decoded = format::record::decode_record(kind, payload, &names).is_ok();
    scanned || decoded
}

/// Decodes a whole checkpoint file (header and body) the way opening a database does, for
/// the fuzzers. Returns whether it decoded. Not part of the stable API.
#[doc(hidden)]
pub fn fuzz_decode_checkpoint(file: &[u8]) -> bool {
    checkpoint::decode_file(file).is_ok()
}

/// Recomputes a checkpoint file's block table and header checksums after a mutation:
/// everything after the 96-byte header is taken as the body (cut to a multiple of 8) and
/// the block table is appended, so the mutated body reaches the decoder. With
/// `strip_table`, a whole valid file's old block table is dropped first. For the fuzzers
/// and tests; not part of the stable API.
#[doc(hidden)]
pub fn fuzz_fix_checkpoint(file: &mut Vec<u8>, strip_table: bool) {
    if strip_table {
        if let Some(n) = checkpoint::body_of(file).map(<[u8]>::len) {
            file.truncate(n);
        }
    }
    checkpoint::fix_checksums(file);
}

/// Decodes a whole search-bounds file (header and body) the way a search loads one, with
/// the binding taken from its own header and row `r` in slot `r / 3`, for the fuzzers. Row
/// counts above 65,536 are refused (a search bounds them by the rows in memory). Returns
/// whether it decoded. Not part of the stable API.
#[doc(hidden)]
pub fn fuzz_decode_bounds(file: &[u8]) -> bool {
    index::sidecar::decode_any(file, 1 << 16, |r| u32::try_from(r / 3).unwrap_or(u32::MAX))
}
