//! Argument definitions and dispatch for the `trajdb` binary. Library logic (JSONL records,
//! export shapes) lives in `trajdb::jsonl` and `trajdb::export`; this tree only wires it to
//! files, standard streams and exit codes.

mod admin;
mod export;
mod jsonl;
#[cfg(feature = "parquet")]
mod parquet;
mod progress;
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
    /// No progress bars and no informational lines on stderr (errors still go there).
    /// Progress bars are drawn only when stderr is a terminal.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// Commands that write (import, append, compact, fork, delete, build-graph): when another process
    /// holds the writer lock, wait up to this many seconds for it (like SQLite's busy
    /// timeout) instead of failing at once.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 0.0,
          allow_negative_numbers = true, value_parser = parse_wait)]
    pub wait: f64,
}

/// `--wait SECONDS`: a finite number of seconds from 0 to one day.
fn parse_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}` is not a number of seconds from 0 to 86400")),
    }
}

/// A whole number in `LO..=HI` as `T`; the message names the range whatever the input
/// (clap's own integer parser says only "number too large to fit in target type" past 64
/// bits).
fn ranged<T: TryFrom<u64>, const LO: u64, const HI: u64>(s: &str) -> Result<T, String> {
    let bad = || format!("`{s}` is not a whole number in {LO}..={HI}");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u64>() {
        Ok(v) if (LO..=HI).contains(&v) => T::try_from(v).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// How long write commands wait for the writer lock (`--wait`), set once by [`run`].
static LOCK_WAIT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

fn lock_wait() -> std::time::Duration {
    LOCK_WAIT.get().copied().unwrap_or_default()
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import trajectories from a JSONL file (creates the database if absent).
    Import(ImportArgs),
    /// Append JSONL trajectories from stdin, printing {"id":N} per committed record. A
    /// key-space header as the first line creates its spaces.
    Append(AppendArgs),
    /// Search one key space for the nearest keys (in a step-level space, the nearest steps;
    /// --per-trajectory keeps the best step of each trajectory). Through the space's graph
    /// index when it has one and at least --exact-below-rows rows, else by the exact scan
    /// (--exact, --approx force one); stderr says which (`path=...`).
    Search(SearchArgs),
    /// The paper's retrieval: the k best trajectories by mean similarity over several
    /// trajectory keys, re-ranked by their best-matching step, each cut to a window of steps.
    /// Through the graph indexes when every key space of the query has one and at least
    /// --exact-below-rows rows, else exactly (--exact, --approx force one); stderr says
    /// which (`path=...`).
    Retrieve(RetrieveArgs),
    /// Print one trajectory: a readable view (control characters escaped, long fields cut;
    /// --full shows them whole) or --json.
    Get(GetArgs),
    /// Show one trajectory as readable text: goal, plan, numbered steps, outcome, utility.
    Inspect(InspectArgs),
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
    Repair(RepairArgs),
    /// Copy the database to a new directory.
    Fork(ForkArgs),
    /// Delete a trajectory (a tombstone; `compact` reclaims the space).
    Delete(DeleteArgs),
    /// Build (or catch up) the graph index of a key space (file `graph-N.idx`), or remove
    /// it (--drop). `search` and `retrieve` then use it when the space holds at least
    /// --exact-below-rows rows (default 20000), and always with --approx.
    BuildGraph(BuildGraphArgs),
    /// Exemplar curation's choice, without copying anything: per task, the successful
    /// trajectory with the highest Q (no Q counts as -1; ties keep the one committed first),
    /// as `bootstrap --method exemplar-curation` picks it. One line per task, by task.
    Curate(CurateArgs),
    /// Merge databases into DST (created if absent): every trajectory and usage event of
    /// each source lands in DST exactly once. Rerunning adds only what is new; a merge that
    /// was interrupted is completed by running it again. Sources are only read.
    Merge(MergeArgs),
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
    /// Embed these text fields with the `--embedder` (by default the built-in hash embedder)
    /// into key spaces of the same name, for records that carry no vector for them. With a
    /// key-space header line the header must define these spaces with that embedder.
    #[arg(long, value_delimiter = ',', value_name = "FIELD[,FIELD..]",
          value_parser = ["goal", "plan", "category", "task", "observation", "reasoning", "action"])]
    pub embed: Vec<String>,
    /// Dimensions of the embedded keys [default: 256] (`--embedder hash` only: a model's
    /// dimensions are its own).
    #[arg(long, requires = "embed", allow_negative_numbers = true, value_parser = ranged::<u32, 1, 65536>)]
    pub dims: Option<u32>,
    /// Embedder of the `--embed` spaces: `hash` (built-in, no model), `minilm:PATH`
    /// (all-MiniLM-L6-v2, 384 dims, on the CPU from the model folder PATH; texts cut at 256
    /// word pieces; needs a build with `--features minilm`) or `openai:MODEL` (an
    /// OpenAI-compatible /v1/embeddings server at `OPENAI_BASE_URL`, key `OPENAI_API_KEY`);
    /// the spaces record it.
    #[arg(
        long,
        requires = "embed",
        default_value = "hash",
        value_name = "hash|minilm:PATH|openai:MODEL"
    )]
    pub embedder: String,
    /// Retries of a failed embeddings request (`--embedder openai:MODEL`).
    #[arg(long, default_value_t = trajdb_agent::openai::DEFAULT_RETRIES, value_name = "N",
          allow_negative_numbers = true, value_parser = ranged::<u32, 0, 1000>)]
    pub llm_retries: u32,
    /// Time limit of one embeddings request, in seconds (`--embedder openai:MODEL`).
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS")]
    pub llm_timeout: f64,
    /// Sync every record (slow); by default the import is synced once at the end.
    #[arg(long)]
    pub durable: bool,
    /// Skip records whose id is already stored with identical content (to finish an
    /// interrupted import by rerunning it); a stored id with different content is still
    /// refused.
    #[arg(long)]
    pub skip_existing: bool,
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
    /// Embedder of the `--text` query; it must be the one the key space records. By default
    /// that recorded one (`hash`, or `openai:MODEL` through `OPENAI_BASE_URL`); a space made
    /// with MiniLM needs `minilm:PATH`, its model folder.
    #[arg(long, requires = "text", value_name = "hash|minilm:PATH|openai:MODEL")]
    pub embedder: Option<String>,
    /// Number of results. They are rows of the key space: in a step-level space each hit
    /// is one step, so one trajectory can take several places (see --per-trajectory).
    #[arg(short = 'k', value_name = "K", default_value_t = 5,
          allow_negative_numbers = true, value_parser = ranged::<u64, 1, 1_000_000>)]
    pub k: u64,
    /// At most one hit per trajectory: its best-matching step in a step-level space, so K
    /// counts trajectories. No effect in a trajectory-level space. Always the exact scan.
    #[arg(long, conflicts_with = "approx")]
    pub per_trajectory: bool,
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
    /// Which path answers: by default the automatic choice (the graph index when the key
    /// space has one, built by `trajdb build-graph`, and at least --exact-below-rows rows;
    /// else the exact scan); --exact forces the scan, --approx the graph. The path taken is
    /// printed on stderr (`path=...`; not with --quiet).
    #[command(flatten)]
    pub mode: ModeArgs,
}

/// The choice between the exact scan and the graph index, shared by `search` and `retrieve`.
#[derive(Debug, Args)]
pub struct ModeArgs {
    /// Always the exact scan (`Database::search` / `retrieve`), even when the key space has
    /// a graph index and many rows.
    #[arg(long, conflicts_with_all = ["approx", "ef"])]
    pub exact: bool,
    /// Always through the key space's graph index when it has one (`search_approx` /
    /// `retrieve_approx`), whatever its size: hit scores are exact, which rows are found
    /// may differ from the exact search; without a graph the space is scanned exactly.
    #[arg(long)]
    pub approx: bool,
    /// Beam width of the graph walk (automatic choice or --approx): larger is slower and
    /// nearer the exact answer.
    #[arg(long, value_name = "EF", default_value_t = 64,
          allow_negative_numbers = true, value_parser = ranged::<u64, 1, 1_000_000>)]
    pub ef: u64,
    /// The automatic choice scans a key space exactly when it holds fewer rows than this
    /// (rows of deleted trajectories count until `compact`), even with a graph index.
    #[arg(long, value_name = "ROWS", default_value_t = trajdb::DEFAULT_EXACT_BELOW_ROWS,
          allow_negative_numbers = true, value_parser = ranged::<u64, 0, { u64::MAX }>)]
    pub exact_below_rows: u64,
}

impl ModeArgs {
    /// The engine's mode.
    pub fn mode(&self) -> trajdb::SearchMode {
        if self.exact {
            trajdb::SearchMode::Exact
        } else if self.approx {
            trajdb::SearchMode::Approx
        } else {
            trajdb::SearchMode::Auto
        }
    }
}

/// Arguments of `retrieve`.
#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory-level keys, one or more: `SPACE=TEXT` (embedded with the embedder the space
    /// records) or `SPACE=@FILE` (a JSON array of numbers). A trajectory's score is the mean
    /// of its similarities.
    #[arg(long, required = true, num_args = 1.., value_name = "SPACE=TEXT|SPACE=@FILE")]
    pub keys: Vec<String>,
    /// Step-level key: inside each candidate the best-matching step is found, candidates are
    /// ranked by trajectory score + step score, and the window is centred on that step.
    #[arg(long, value_name = "SPACE=TEXT|SPACE=@FILE")]
    pub step_key: Option<String>,
    /// Embedder of the `SPACE=TEXT` keys; it must be the one each of their key spaces
    /// records. By default that recorded one (`hash`, or `openai:MODEL` through
    /// `OPENAI_BASE_URL`); spaces made with MiniLM need `minilm:PATH`, its model folder.
    #[arg(long, value_name = "hash|minilm:PATH|openai:MODEL")]
    pub embedder: Option<String>,
    /// Number of examples.
    #[arg(short = 'k', value_name = "K", default_value_t = 10,
          allow_negative_numbers = true, value_parser = ranged::<u64, 1, 1_000_000>)]
    pub k: u64,
    /// Steps kept on each side of the matched step.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = ranged::<u32, 0, 1_000_000>)]
    pub window: u32,
    /// Only successful trajectories (what the method retrieves; off by default here, so any
    /// trajectory can be looked up; Python's `retrieve` defaults to on).
    #[arg(long)]
    pub success_only: bool,
    /// Only this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Only this task.
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// Print a JSON array of examples ({"id","score","traj_score","step_score",
    /// "matched_step","window","trajectory"}), best first.
    #[arg(long)]
    pub json: bool,
    /// Which path answers: by default the automatic choice (through the graph indexes when
    /// every key space of the query has one and at least --exact-below-rows rows, else the
    /// exact retrieve); --exact forces the exact retrieve, --approx the graphs (candidates
    /// from the graph indexes, then scored exactly: scores are exact, which trajectories
    /// are found may differ). The path taken is printed on stderr (`path=...`).
    #[command(flatten)]
    pub mode: ModeArgs,
}

/// Arguments of `build-graph`.
#[derive(Debug, Args)]
pub struct BuildGraphArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Key space to index.
    #[arg(long)]
    pub space: String,
    /// Half the neighbour slots per node (the graph's degree is 2 M), 2 to 128.
    #[arg(long, value_name = "M", default_value_t = 16,
          allow_negative_numbers = true, value_parser = ranged::<u64, 2, 128>)]
    pub m: u64,
    /// Beam width when inserting a row, from M to 4096.
    #[arg(long, value_name = "EF", default_value_t = 100,
          allow_negative_numbers = true, value_parser = ranged::<u64, 2, 4096>)]
    pub ef_construction: u64,
    /// Remove the space's graph index (and its file) instead of building it.
    #[arg(long, conflicts_with_all = ["m", "ef_construction"])]
    pub drop: bool,
}

/// Arguments of `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory id.
    #[arg(allow_negative_numbers = true, value_parser = ranged::<u64, 0, { u64::MAX }>)]
    pub id: u64,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory id.
    #[arg(allow_negative_numbers = true, value_parser = ranged::<u64, 0, { u64::MAX }>)]
    pub id: u64,
    /// Print the JSONL record instead of a readable view.
    #[arg(long)]
    pub json: bool,
    /// Show long fields whole in the readable view (by default each is cut after 400
    /// characters, with a marker). Control characters are always shown escaped (`\n`).
    #[arg(long, conflicts_with = "json")]
    pub full: bool,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The JSONL records `import` reads, one trajectory a line (after a key-space header
    /// line with `--with-spaces`).
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
    /// Export the episodes' retrieval logs instead of trajectories: one JSON line per
    /// episode, or with `--parquet DIR` two Parquet files in DIR, `retrievals.parquet` (one
    /// row per retrieval event: origin, episode, trajectory_origin, trajectory, step, stage,
    /// db_episode, db_trajectory) and `episodes.parquet` (one row per episode: origin,
    /// episode, outcome, created_ms, db_episode). `origin`/`episode` and
    /// `trajectory_origin`/`trajectory` name episodes and trajectories where they were
    /// first written, so exports of many databases can be queried together.
    #[arg(long)]
    pub usage: bool,
    /// Write the key-space header line first (`{"trajdb_spaces":[...]}`: every space's
    /// level, dimensions, metric and embedder), so `import` rebuilds the database exactly.
    /// Without it every line is one trajectory, as jq, pandas and datasets expect.
    #[arg(long, conflicts_with = "usage")]
    pub with_spaces: bool,
    /// Write a Parquet file here instead of JSONL to stdout: one row per trajectory (with
    /// `--format chat`, an `id` and a `messages` column). Needs the `parquet` cargo feature.
    #[arg(long, value_name = "FILE|DIR", conflicts_with = "with_spaces")]
    pub parquet: Option<PathBuf>,
    /// Add the usage counters and Q as columns (`retrievals`, `episodes`,
    /// `labelled_retrievals`, `success_retrievals`, `q`) to the Parquet file.
    #[arg(long, requires = "parquet", conflicts_with = "usage")]
    pub with_utility: bool,
    /// Salvage: export every trajectory that reads back whole and skip the ones whose
    /// records are damaged (a checksum that fails in the middle of the log), naming each
    /// on stderr; exits with status 1 when any was skipped. Without it a damaged record
    /// stops the export before it writes anything. `export --skip-damaged --with-spaces DB >
    /// t.jsonl` then `import NEW t.jsonl` keeps what `repair --force` would cut after the
    /// damage.
    #[arg(long, conflicts_with_all = ["usage", "parquet"])]
    pub skip_damaged: bool,
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
    /// The threshold the "auto" column compares each key space's rows with (as `search
    /// --exact-below-rows`).
    #[arg(long, value_name = "ROWS", default_value_t = trajdb::DEFAULT_EXACT_BELOW_ROWS,
          allow_negative_numbers = true, value_parser = ranged::<u64, 0, { u64::MAX }>)]
    pub exact_below_rows: u64,
}

/// A command that takes only the database.
#[derive(Debug, Args)]
pub struct DbArg {
    /// Database directory.
    pub db: PathBuf,
}

/// Arguments of `repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Cut even when valid commits follow the damage (they are removed with it; their bytes
    /// are kept in `log.cut-OFFSET`), and accept a log that was cut short before the commits
    /// its checkpoint records (write commands refuse such a log). Without it, `repair`
    /// refuses both and says what would be lost.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// Database directory.
    pub db: PathBuf,
    /// New directory (must not exist or be empty).
    pub dst: PathBuf,
}

/// Arguments of `curate`.
#[derive(Debug, Args)]
pub struct CurateArgs {
    /// Database directory.
    pub db: PathBuf,
    /// JSON lines {"task","id","origin","origin_id","q"} (q null when the trajectory has
    /// no Q).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Destination database directory (created if absent).
    pub dst: PathBuf,
    /// Source database directories, merged in this order.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Print one JSON object per source (what was added) instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Database directory.
    pub db: PathBuf,
    /// Trajectory id.
    #[arg(allow_negative_numbers = true, value_parser = ranged::<u64, 0, { u64::MAX }>)]
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
    let _ = LOCK_WAIT.set(std::time::Duration::from_secs_f64(cli.wait));
    progress::set_quiet(cli.quiet);
    let r = match cli.command {
        Command::Import(a) => jsonl::import(&a),
        Command::Append(a) => jsonl::append(&a),
        Command::Search(a) => query::search(&a),
        Command::Retrieve(a) => query::retrieve(&a),
        Command::Get(a) => export::get(&a),
        Command::Inspect(a) => export::inspect(&a),
        Command::Export(a) => export::export(&a),
        Command::Stats(a) => query::stats(&a),
        Command::Verify(a) => admin::verify(&a.db),
        Command::Compact(a) => admin::compact(&a.db),
        Command::Repair(a) => admin::repair(&a.db, a.force),
        Command::Fork(a) => admin::fork(&a.db, &a.dst),
        Command::Delete(a) => admin::delete(&a.db, a.id),
        Command::BuildGraph(a) => admin::build_graph(&a),
        Command::Merge(a) => admin::merge(&a),
        Command::Curate(a) => query::curate(&a),
        Command::Bootstrap(mut a) => {
            a.quiet = a.quiet || cli.quiet;
            trajdb_agent::bootstrap::run(&a)
                .map_err(|e| Failure(e.to_string()))
                .and_then(|r| {
                    if let Some(dir) = &a.report {
                        let page = trajdb_agent::report::write(&r, dir)
                            .map_err(|e| Failure(e.to_string()))?;
                        if !a.quiet {
                            eprintln!("report: {}", page.display());
                        }
                    }
                    trajdb_agent::bootstrap::print(&r, a.json, a.verbose).map_err(out_err)
                })
        }
    };
    match r {
        Err(Failure(m)) if m == BROKEN_PIPE => Ok(()),
        r => r,
    }
}

/// Whether `path` is a Parquet file (it starts with the magic `PAR1`).
pub fn is_parquet_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"PAR1")
}

/// The trajectories of a trajdb Parquet export as JSONL (key-space header line first).
#[cfg(feature = "parquet")]
pub fn parquet_as_jsonl(path: &Path) -> CliResult<Vec<u8>> {
    parquet::read_as_jsonl(path)
}

/// Without the `parquet` feature a Parquet file is refused.
#[cfg(not(feature = "parquet"))]
pub fn parquet_as_jsonl(path: &Path) -> CliResult<Vec<u8>> {
    Err(Failure(format!(
        "{} is a Parquet file, but this trajdb was built without Parquet support (build with `cargo build --release --features parquet`); nothing was imported",
        path.display()
    )))
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

/// [`open_read`] with `Options::exact_below_rows` set to `rows` (search, retrieve, stats).
pub fn open_read_auto(db: &Path, rows: u64) -> CliResult<Database> {
    open_read_with_opts(db, true, false, rows)
}

/// [`open_read`], optionally without the damaged-tail warning (`verify` reports it itself).
pub fn open_read_as(db: &Path, warn: bool) -> CliResult<Database> {
    open_read_with(db, warn, false)
}

/// [`open_read`] (`verify_on_open` as given) without the open's warnings: the caller
/// prints them ([`warn_open`]) or says the same in its own error. `verify_on_open` ignores
/// the checkpoint and checks every commit and key row as it opens: for commands that read
/// the whole database anyway (`export`, `merge`), so damage at rest in commits the
/// checkpoint covers is refused rather than exported or merged around.
pub fn open_read_quiet(db: &Path, verify_on_open: bool) -> CliResult<Database> {
    open_read_with(db, false, verify_on_open)
}

fn open_read_with(db: &Path, warn: bool, verify_on_open: bool) -> CliResult<Database> {
    open_read_with_opts(db, warn, verify_on_open, trajdb::DEFAULT_EXACT_BELOW_ROWS)
}

fn open_read_with_opts(
    db: &Path,
    warn: bool,
    verify_on_open: bool,
    exact_below_rows: u64,
) -> CliResult<Database> {
    must_exist(db)?;
    let d = Database::open(
        db,
        Options {
            read_only: true,
            create: false,
            verify_on_open,
            exact_below_rows,
            ..Options::default()
        },
    )?;
    if warn {
        warn_open(db, &d);
    }
    Ok(d)
}

/// Refuses a database whose damaged last frames its checkpoint records as committed
/// (`OpenReport::damaged_committed_end`): a read-only open answers without those commits,
/// so a command that copies the database (export, merge) would lose them without a word.
/// `what` says what the refusal left undone.
pub fn refuse_lost_commits(db: &Path, d: &Database, what: &str) -> CliResult {
    match lost_commits(d) {
        Some(why) => Err(Failure(format!(
            "{}: {why}; {what}. `trajdb export --skip-damaged` exports every other trajectory; `trajdb repair --force` cuts the damaged frames",
            db.display()
        ))),
        None => Ok(()),
    }
}

/// Why commits of `d` are missing from what it reads, when its damaged last frames are
/// committed ones.
pub fn lost_commits(d: &Database) -> Option<String> {
    let r = d.open_report();
    r.damaged_committed_end.map(|covered| {
        format!(
            "the log's last {} bytes are damaged frames its checkpoint records as committed (up to byte {covered}); the commits they held (trajectories, deletions or usage events) cannot be read",
            r.truncated_bytes
        )
    })
}

/// The warnings of a read-only open on stderr: a log cut short before its checkpoint's end,
/// a damaged tail it ignored.
pub fn warn_open(db: &Path, d: &Database) {
    let r = d.open_report();
    warn_log_cut(db, d);
    if r.truncated_bytes > 0 {
        match r.damaged_committed_end {
            Some(covered) => eprintln!(
                "trajdb: warning: {} ignored {} bytes of damaged log at its end ({}), which its checkpoint records as committed (up to byte {covered}): damage at rest, the commits there are missing from every answer; write commands refuse this log; `trajdb export --skip-damaged --with-spaces` exports the rest, `trajdb repair --force` cuts it",
                db.display(),
                r.truncated_bytes,
                r.torn_reason.as_deref().unwrap_or("unknown reason")
            ),
            None => eprintln!(
                "trajdb: warning: {} ignored {} bytes of damaged log tail after the last complete commit ({}); `trajdb verify` reports it, the next writer cuts it",
                db.display(),
                r.truncated_bytes,
                r.torn_reason.as_deref().unwrap_or("unknown reason")
            ),
        }
    }
}

/// A write open that found the lock held says how to wait for it.
fn locked_hint(e: trajdb::Error) -> Failure {
    match e {
        e @ trajdb::Error::Locked { .. } if lock_wait().is_zero() => {
            Failure(format!("{e}, or pass --wait SECONDS to wait for it"))
        }
        e @ trajdb::Error::Locked { .. } => Failure(format!(
            "{e}; waited {} s (--wait)",
            lock_wait().as_secs_f64()
        )),
        e => e.into(),
    }
}

/// Opens an existing database for writing.
pub fn open_write(db: &Path, durability: Durability) -> CliResult<Database> {
    open_write_with(db, durability, false)
}

/// [`open_write`], accepting a log cut before its checkpoint's end when `accept_log_cut`
/// (`repair --force`; `Options::accept_log_cut`).
pub fn open_write_with(
    db: &Path,
    durability: Durability,
    accept_log_cut: bool,
) -> CliResult<Database> {
    must_exist(db)?;
    let d = Database::open(
        db,
        Options {
            durability,
            read_only: false,
            create: false,
            lock_timeout: lock_wait(),
            accept_log_cut,
            ..Options::default()
        },
    )
    .map_err(locked_hint)?;
    warn_cut(db, &d);
    Ok(d)
}

/// A log that ends before its own checkpoint's covered end lost committed frames: said on
/// stderr whenever an open finds it.
fn warn_log_cut(db: &Path, d: &Database) {
    // A damaged checkpoint is ignored (the log answers, nothing is lost), but said once.
    if let Some(why) = &d.open_report().checkpoint_ignored {
        if why.contains("checksum mismatch") {
            eprintln!(
                "trajdb: warning: {}: the checkpoint file is damaged ({why}); it was ignored and the answers come from the log (a write command replaces it; `trajdb verify` reports it)",
                db.display()
            );
        }
    }
    if let Some((len, covered)) = d.open_report().log_cut_at {
        eprintln!(
            "trajdb: warning: {}: the log ends at byte {len} but its checkpoint recorded commits up to byte {covered}: committed frames were cut from the end of the log and are missing (restore the log from a copy if you have one; write commands refuse this log, and `trajdb repair --force` accepts the loss)",
            db.display()
        );
    }
}

/// A writer that cut a damaged log tail says so on stderr: the commit in that tail is gone
/// from the database (its bytes are kept in the `log.cut-OFFSET` file named).
fn warn_cut(db: &Path, d: &Database) {
    warn_log_cut(db, d);
    let r = d.open_report();
    if r.truncated_bytes == 0 {
        return;
    }
    let kept = match (&r.cut_file, &r.cut_file_error) {
        (Some(f), _) => format!("the cut bytes are kept in {}", db.join(f).display()),
        (None, Some(e)) => format!("the cut bytes could not be kept: {e}"),
        (None, None) => "the cut bytes were all zero".to_owned(),
    };
    eprintln!(
        "trajdb: warning: {} cut {} bytes of damaged log tail after the last complete commit ({}); {kept}",
        db.display(),
        r.truncated_bytes,
        r.torn_reason.as_deref().unwrap_or("unknown reason")
    );
}

/// Opens (creating if absent) a database for writing.
pub fn open_create(db: &Path, durability: Durability) -> CliResult<Database> {
    let d = Database::open(
        db,
        Options {
            durability,
            read_only: false,
            create: true,
            lock_timeout: lock_wait(),
            ..Options::default()
        },
    )
    .map_err(locked_hint)?;
    warn_cut(db, &d);
    Ok(d)
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
