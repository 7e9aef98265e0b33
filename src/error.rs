//! The crate's error type: one enum, each variant a clear sentence saying what and where.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout trajdb.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in trajdb.
///
/// Displayed as one line that says what happened and where (file, byte offset, record).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    Io {
        /// What trajdb was doing (`"read"`, `"sync"`, ...).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Bytes on disk do not form what the format says they must.
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A checksum stored on disk does not match the bytes it covers.
    ChecksumMismatch {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the structure whose checksum failed.
        offset: u64,
        /// The checksum stored on disk.
        expected: u32,
        /// The checksum computed from the bytes.
        got: u32,
    },
    /// The file or directory is not a trajdb database.
    NotADatabase {
        /// The offending path.
        path: PathBuf,
        /// Why it was rejected.
        why: String,
    },
    /// The file was written by a newer (or unknown) format version.
    IncompatibleVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Another handle holds the writer lock.
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as recorded in the lock file.
        holder: String,
    },
    /// The database was opened read-only.
    ReadOnly,
    /// An earlier write or sync failed; the handle refuses further writes until reopened.
    PreviousIo,
    /// Input given by the caller is invalid.
    InvalidInput {
        /// Where in the input (field path).
        at: String,
        /// What is wrong with it.
        what: String,
    },
    /// A vector's length differs from its key space's dimensions.
    DimensionMismatch {
        /// The key space.
        space: String,
        /// Dimensions of the key space.
        expected: usize,
        /// Length supplied.
        got: usize,
    },
    /// No key space of that name exists.
    UnknownSpace {
        /// The name asked for.
        name: String,
    },
    /// A key space of that name exists already with a different definition.
    SpaceConflict {
        /// The name.
        name: String,
        /// What differs.
        what: String,
    },
    /// A trajectory with this id is already stored.
    DuplicateId {
        /// The id.
        id: u64,
    },
    /// Every trajectory id an append without an id could get is taken (the largest id,
    /// `u64::MAX`, is reserved).
    IdsExhausted,
    /// A read view names a commit that compaction has folded into a newer log.
    ViewEnded {
        /// The commit the view was taken at.
        as_of: u64,
        /// The first commit the current log holds.
        first: u64,
    },
    /// No live trajectory or episode with this id.
    NotFound {
        /// What kind of thing was looked for.
        kind: &'static str,
        /// Its id.
        id: u64,
    },
    /// Keys or a query came from a different embedder than the one the key space records.
    EmbedderMismatch {
        /// The key space.
        space: String,
        /// The embedder recorded in the database.
        recorded: String,
        /// The embedder of the keys or query.
        given: String,
    },
    /// A commit reached the log but could not be applied in memory (for example a key file
    /// could not grow). The handle refuses further writes; on reopen the commit is present.
    AfterCommit {
        /// Sequence number of the commit.
        seq: u64,
        /// What failed.
        source: Box<Error>,
    },
    /// A text has nothing an embedder can use (no letter or digit): embedding it would
    /// invent a vector that matches every other such text.
    NothingToEmbed {
        /// The text, cut to at most 40 characters.
        text: String,
    },
    /// The database's log predates origin ids, which merging needs.
    NoOrigin {
        /// The database.
        path: PathBuf,
    },
    /// A source cannot be merged: its key spaces differ from the destination's (or from
    /// another source's) in level, dimensions, metric, element type or embedder.
    MergeIncompatible {
        /// The source database.
        source_db: PathBuf,
        /// What differs.
        what: String,
    },
    /// A length exceeds what trajdb accepts.
    TooLarge {
        /// What was too large.
        what: String,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(f, "I/O error during {op} of {}: {source}", path.display())
            }
            Error::Corrupt { path, offset, what } => write!(
                f,
                "corrupt database file {} at byte {offset}: {what}",
                path.display()
            ),
            Error::ChecksumMismatch {
                path,
                offset,
                expected,
                got,
            } => write!(
                f,
                "checksum mismatch in {} at byte {offset}: stored {expected:#010x}, computed {got:#010x}",
                path.display()
            ),
            Error::NotADatabase { path, why } => {
                write!(f, "{} is not a trajdb database: {why}", path.display())
            }
            Error::IncompatibleVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}, but this trajdb reads versions up to {supported}: upgrade trajdb",
                path.display()
            ),
            Error::Locked { path, holder } => write!(
                f,
                "database is locked for writing by {holder} (lock file {}); close that writer or open read-only",
                path.display()
            ),
            Error::ReadOnly => write!(f, "database was opened read-only; writes are refused"),
            Error::PreviousIo => write!(
                f,
                "an earlier write or sync failed on this handle; reopen the database to recover from the log"
            ),
            Error::InvalidInput { at, what } => write!(f, "invalid input at {at}: {what}"),
            Error::DimensionMismatch {
                space,
                expected,
                got,
            } => write!(
                f,
                "key space `{space}` has {expected} dimensions but the vector has {got}"
            ),
            Error::UnknownSpace { name } => write!(
                f,
                "no key space named `{name}` (see `trajdb stats` for the spaces this database has)"
            ),
            Error::SpaceConflict { name, what } => {
                write!(f, "key space `{name}` already exists with {what}")
            }
            Error::NothingToEmbed { text } => write!(
                f,
                "text {text:?} has nothing to embed: no letter or digit (it is empty, or only spaces, punctuation or emoji), so it would get the same vector as every such text"
            ),
            Error::DuplicateId { id } => write!(
                f,
                "a trajectory with id {id} is already stored; omit the id to have one assigned (the id of a deleted trajectory may be reused)"
            ),
            Error::IdsExhausted => write!(
                f,
                "no trajectory id is left to assign: the next one would be 18446744073709551615, which is reserved; give an unused id explicitly"
            ),
            Error::ViewEnded { as_of, first } => write!(
                f,
                "the read view as of commit {as_of} has ended: a compaction folded every commit before {first} into a new log; take a new view (see `commit_points()`)"
            ),
            Error::NotFound { kind, id } => write!(f, "no {kind} with id {id}"),
            Error::EmbedderMismatch {
                space,
                recorded,
                given,
            } => write!(
                f,
                "key space `{space}` holds keys from embedder {recorded}, but these come from {given}"
            ),
            Error::AfterCommit { seq, source } => write!(
                f,
                "commit {seq} is in the log but could not be applied ({source}); this handle refuses further writes: reopen the database, where the commit is present"
            ),
            Error::NoOrigin { path } => write!(
                f,
                "{} has no origin id (its log was written before origin ids existed); `trajdb compact {}` gives it one",
                path.display(),
                path.display()
            ),
            Error::MergeIncompatible { source_db, what } => write!(
                f,
                "cannot merge {}: {what}; nothing was merged",
                source_db.display()
            ),
            Error::TooLarge { what, len, max } => {
                write!(f, "{what} is too large: {len} bytes, the limit is {max}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::AfterCommit { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(at: impl Into<String>, what: impl Into<String>) -> Self {
        Error::InvalidInput {
            at: at.into(),
            what: what.into(),
        }
    }

    /// Builds an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error says bytes on disk are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::ChecksumMismatch { .. })
    }
}
