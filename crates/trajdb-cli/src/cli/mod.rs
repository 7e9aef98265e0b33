//! Argument definitions and dispatch for the `trajdb` binary. Library logic (JSONL records,
//! export shapes) lives in `trajdb::jsonl` and `trajdb::export`; this tree only wires it to
//! files, standard streams and exit codes.

mod admin;
mod export;
mod jsonl;
mod query;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use trajdb::{Database, Durability, Metric, Options};

/// An embedded database for LLM-agent trajectories.
#[derive(Debug, Parser)]
#[command(name = "trajdb", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import trajectories from a JSONL file (creates the database if absent).
    Import(ImportArgs),
    /// Append JSONL trajectories from stdin, printing {"id":N} per committed record. A
    /// key-space header as the first line creates its spaces.
    Append(AppendArgs),
    /// Search one key space for the nearest keys.
    Search(SearchArgs),
    /// Print one trajectory.
    Get(GetArgs),
    /// Write trajectories as JSONL (or chat examples, or episode usage) to stdout.
    Export(ExportArgs),
    /// Counts and sizes, or per-trajectory usage counters.
    Stats(StatsArgs),
    /// Check every checksum and index against the log.
    Verify(DbArg),
    /// Rewrite the log without deleted trajectories.
    Compact(DbArg),
    /// Cut the log at its first damaged frame, keeping every commit before it (the cut bytes
    /// are saved to `log.cut-OFFSET`): for a database that crashed under Buffered or
    /// GroupCommit durability and that open refuses.
    Repair(DbArg),
    /// Copy the database to a new directory.
    Fork(ForkArgs),
    /// Delete a trajectory (a tombstone; `compact` reclaims the space).
    Delete(DeleteArgs),
    /// Run the method end to end on Wordcraft or on an outside environment speaking the
    /// environment protocol (`--env-cmd`): Traj-Bootstrap with optional database and
    /// exemplar curation, test success before and after, learning curve, success predictor.
    Bootstrap(trajdb_agent::bootstrap::BootstrapArgs),
}

/// Similarity measure of key spaces created by `import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricArg {
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
    /// Negative Euclidean distance.
    L2,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Metric {
        match m {
            MetricArg::Cosine => Metric::Cosine,
            MetricArg::Dot => Metric::Dot,
            MetricArg::L2 => Metric::L2,
        }
    }
}

/// Arguments of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Database directory (created if absent).
    pub db: PathBuf,
    /// JSONL file, one trajectory per line.
    pub file: PathBuf,
    /// Metric of key spaces this import creates [default: cosine]. A file that starts with
    /// a key-space header line (as `export` writes) defines its spaces itself; a different
    /// metric is refused.
    #[arg(long, value_enum)]
    pub metric: Option<MetricArg>,
    /// Embed these text fields with the built-in hash embedder into key spaces of the same
    /// name, for records that carry no vector for them. With a key-space header line the
    /// header must define these spaces with that embedder.
    #[arg(long, value_delimiter = ',', value_name = "FIELD[,FIELD..]",
          value_parser = ["goal", "plan", "category", "task", "observation", "reasoning", "action"])]
    pub embed: Vec<String>,
    /// Dimensions of the embedded keys [default: 256].
    #[arg(long, requires = "embed", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub dims: Option<u32>,
    /// Sync every record (slow); by default the import is synced once at the end.
    #[arg(long)]
    pub durable: bool,
}

/// Arguments of `append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Database directory (created if absent).
    pub db: PathBuf,
    /// Sync each record before printing its id.
    #[arg(long)]
    pub durable: bool,
}

/// The query of `search`: exactly one of a vector, a vector file or a text.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct QueryArg {
    /// Query vector as a JSON array, e.g. '[0.1, 0.2]'.
    #[arg(long, value_name = "JSON")]
    pub vector: Option<String>,
    /// File holding the query vector as a JSON array.
    #[arg(long, value_name = "FILE")]
    pub vector_file: Option<PathBuf>,
    /// Query text, embedded with the key space's recorded embedder.
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
}

/// Arguments of `search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Key space to search.
    #[arg(long)]
    pub space: String,
    /// The query.
    #[command(flatten)]
    pub query: QueryArg,
    /// Number of results.
    #[arg(short = 'k', value_name = "K", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub k: u64,
    /// Only successful trajectories.
    #[arg(long)]
    pub success_only: bool,
    /// Only this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Only this task.
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// Print a JSON array of {"id","step","score"}, best first.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory id.
    pub id: u64,
    /// Print the JSONL record instead of a readable view.
    #[arg(long)]
    pub json: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The JSONL records `import` reads, after a key-space header line.
    Jsonl,
    /// One {"messages":[...]} chat example per trajectory.
    Chat,
}

/// Arguments of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl, conflicts_with = "usage")]
    pub format: ExportFormat,
    /// Export only successful trajectories.
    #[arg(long, conflicts_with = "usage")]
    pub success_only: bool,
    /// Export the episodes' retrieval logs instead of trajectories.
    #[arg(long)]
    pub usage: bool,
}

/// Arguments of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Print per-trajectory usage counters instead.
    #[arg(long)]
    pub utility: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// A command that takes only the database.
#[derive(Debug, Args)]
pub struct DbArg {
    /// Database directory.
    pub db: PathBuf,
}

/// Arguments of `fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// Database directory.
    pub db: PathBuf,
    /// New directory (must not exist or be empty).
    pub dst: PathBuf,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory id.
    pub id: u64,
}

/// A failure: one line for stderr.
#[derive(Debug)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<trajdb::Error> for Failure {
    fn from(e: trajdb::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s)
    }
}

/// Result of a command.
pub type CliResult<T = ()> = Result<T, Failure>;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> CliResult {
    let r = match cli.command {
        Command::Import(a) => jsonl::import(&a),
        Command::Append(a) => jsonl::append(&a),
        Command::Search(a) => query::search(&a),
        Command::Get(a) => export::get(&a),
        Command::Export(a) => export::export(&a),
        Command::Stats(a) => query::stats(&a),
        Command::Verify(a) => admin::verify(&a.db),
        Command::Compact(a) => admin::compact(&a.db),
        Command::Repair(a) => admin::repair(&a.db),
        Command::Fork(a) => admin::fork(&a.db, &a.dst),
        Command::Delete(a) => admin::delete(&a.db, a.id),
        Command::Bootstrap(a) => trajdb_agent::bootstrap::run(&a)
            .map_err(|e| Failure(e.to_string()))
            .and_then(|r| trajdb_agent::bootstrap::print(&r, a.json).map_err(out_err)),
    };
    match r {
        Err(Failure(m)) if m == BROKEN_PIPE => Ok(()),
        r => r,
    }
}

/// Marker for a closed stdout (e.g. `trajdb export DB | head`): not an error.
const BROKEN_PIPE: &str = "\0broken pipe";

/// Maps a stdout write error to a failure (a closed pipe ends the command quietly).
pub fn out_err(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure(BROKEN_PIPE.into())
    } else {
        Failure(format!("cannot write to stdout: {e}"))
    }
}

/// Opens an existing database for reading: works while a writer holds the lock. Warns on
/// stderr when the log has a damaged tail (which a read-only open ignores).
pub fn open_read(db: &Path) -> CliResult<Database> {
    open_read_as(db, true)
}

/// [`open_read`], optionally without the damaged-tail warning (`verify` reports it itself).
pub fn open_read_as(db: &Path, warn: bool) -> CliResult<Database> {
    must_exist(db)?;
    let d = Database::open(
        db,
        Options {
            read_only: true,
            create: false,
            ..Options::default()
        },
    )?;
    let r = d.open_report();
    if warn && r.truncated_bytes > 0 {
        eprintln!(
            "trajdb: warning: {} ignored {} bytes of damaged log tail after the last complete commit ({}); `trajdb verify` reports it, the next writer cuts it",
            db.display(),
            r.truncated_bytes,
            r.torn_reason.as_deref().unwrap_or("unknown reason")
        );
    }
    Ok(d)
}

/// Opens an existing database for writing.
pub fn open_write(db: &Path, durability: Durability) -> CliResult<Database> {
    must_exist(db)?;
    Ok(Database::open(
        db,
        Options {
            durability,
            read_only: false,
            create: false,
        },
    )?)
}

/// Opens (creating if absent) a database for writing.
pub fn open_create(db: &Path, durability: Durability) -> CliResult<Database> {
    Ok(Database::open(
        db,
        Options {
            durability,
            read_only: false,
            create: true,
        },
    )?)
}

fn must_exist(db: &Path) -> CliResult {
    if db.exists() {
        Ok(())
    } else {
        Err(Failure(format!(
            "no database at {}: the directory does not exist (create one with `trajdb import` or `trajdb append`)",
            db.display()
        )))
    }
}

/// Writes `line` and a newline to `out`.
pub fn write_line(out: &mut impl Write, line: &str) -> CliResult {
    out.write_all(line.as_bytes()).map_err(out_err)?;
    out.write_all(b"\n").map_err(out_err)
}

/// Serialises `v` as one line of JSON.
pub fn json_line(v: &impl serde::Serialize) -> CliResult<String> {
    serde_json::to_string(v).map_err(|e| Failure(format!("cannot encode JSON output: {e}")))
}

/// A key space in words: `goal (trajectory level, 256 dims, cosine, embedder trajdb-hash@1)`.
pub fn describe(s: &trajdb::SpaceDef) -> String {
    let level = match s.level {
        trajdb::Level::Trajectory => "trajectory",
        trajdb::Level::Step => "step",
    };
    let metric = match s.metric {
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
        Metric::L2 => "l2",
    };
    let embedder = match &s.embedder {
        Some(e) => format!(", embedder {}@{}", e.name, e.version),
        None => String::new(),
    };
    format!(
        "`{}` ({level} level, {} dims, {metric}{embedder})",
        s.name, s.dims
    )
}
