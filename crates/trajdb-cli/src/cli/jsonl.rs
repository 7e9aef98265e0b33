//! `trajdb import` and `trajdb append`: JSONL records into the database.
//!
//! `import` is `trajdb::import`: the whole file is checked before anything is written (and
//! before a new database directory is made); input that is not a regular file (a pipe) is
//! first saved to a temporary file so that it can be checked the same way. `append` commits
//! record by record, and applies a key-space header when it is the first line of stdin.

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;

use trajdb::import::{
    check_import_as, check_record, describe, plan_header_spaces, plan_spaces, write_import, Claim,
    IdClaims, ImportOptions,
};
use trajdb::jsonl::{embed_missing, hash_spaces, locate, LineReader};
use trajdb::{Database, Durability, Embedder, Error, Metric, SpaceDef};
use trajdb_agent::embedders::{check_timeout, EmbedderSpec};
use trajdb_agent::openai::{OpenAiClient, OpenAiEmbedder};

use super::progress::{self, Progress};
use super::{json_line, open_create, AppendArgs, CliResult, Failure, ImportArgs};

/// A copy of non-file input (a pipe) in the temporary directory, removed on drop.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The file to import from: `path` itself when it is a regular file, else a copy of what it
/// yields (a pipe such as `/dev/stdin`), so the import can read it twice.
fn input_file(path: &Path) -> CliResult<(PathBuf, Option<Spool>)> {
    let mut f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory, not a JSONL file", path.display()).into());
    }
    // A Parquet file (recognised by its magic; only a regular file is sniffed, since reading
    // a pipe's first bytes would lose them) is imported as the JSONL it holds.
    let parquet = meta.is_file() && super::is_parquet_file(path);
    if meta.is_file() && !parquet {
        return Ok((path.to_owned(), None));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let copy = std::env::temp_dir().join(format!(
        "trajdb-import-{}-{nanos}.jsonl",
        std::process::id()
    ));
    let spool = Spool(copy.clone());
    let mut out = File::create(&copy)
        .map_err(|e| format!("cannot save {} to {}: {e}", path.display(), copy.display()))?;
    let copied = if parquet {
        let jsonl = super::parquet_as_jsonl(path)?;
        out.write_all(&jsonl)
    } else {
        io::copy(&mut f, &mut out).map(|_| ())
    };
    copied.and_then(|_| out.flush()).map_err(|e| {
        format!(
            "cannot save {} to {} for checking: {e}; nothing was imported",
            path.display(),
            copy.display()
        )
    })?;
    Ok((copy, Some(spool)))
}

/// `trajdb import DB FILE`.
pub fn import(a: &ImportArgs) -> CliResult {
    let start = Instant::now();
    let source = a.file.display().to_string();
    // A model embedder is reached (one probe request) before anything is read or written.
    let model = model_embedder(a)?;
    let (path, _spool) = input_file(&a.file)?;
    let opts = ImportOptions {
        embed: a.embed.clone(),
        dims: a.dims,
        model,
        metric: a.metric.map(Metric::from),
        skip_existing: a.skip_existing,
    };
    let durability = if a.durable {
        Durability::SyncEachCommit
    } else {
        Durability::Buffered
    };
    // Check the whole file before writing anything; a new database is made only after.
    let checking = Progress::spinner("checking the whole file before writing");
    let (db, plan) = if a.db.exists() {
        let db = open_create(&a.db, durability)?;
        let plan = check_import_as(Some(&db), &path, &source, &opts).map_err(nothing)?;
        (db, plan)
    } else {
        let plan = check_import_as(None, &path, &source, &opts).map_err(nothing)?;
        (open_create(&a.db, durability)?, plan)
    };
    checking.finish();
    let writing = Progress::spinner("importing");
    let report = write_import(&db, &plan).map_err(|f| Failure(f.to_string()))?;
    writing.finish();
    let secs = start.elapsed().as_secs_f64();
    let mut note = format!(
        "trajdb: imported {} trajectories ({} steps) from {} into {} in {secs:.2} s ({:.0}/s)",
        report.records,
        report.steps,
        source,
        a.db.display(),
        report.records as f64 / secs.max(1e-9)
    );
    if report.skipped > 0 {
        note.push_str(&format!(
            "; skipped {} already stored with identical content",
            report.skipped
        ));
    }
    if !report.created.is_empty() {
        let names: Vec<String> = report.created.iter().map(describe).collect();
        note.push_str(&format!("; created key spaces: {}", names.join("; ")));
    }
    if report.embedded > 0 {
        note.push_str(&format!(
            "; embedded {} keys from text with {}",
            report.embedded,
            opts.model
                .as_ref()
                .map_or_else(|| "the built-in hash embedder".to_string(), |m| m.id().name)
        ));
    }
    if report.no_features > 0 {
        note.push_str(&format!(
            "; {} keys were left out because their text has nothing to embed (no letter or digit): those records are not found by searches of that space",
            report.no_features
        ));
    }
    // The search bounds (quantised copies, step bounds), saved when the handle closes, so
    // the next open's first search does not rebuild them from every key row.
    let bounds = Progress::spinner("building search bounds");
    db.build_search_bounds();
    bounds.finish();
    progress::note(&note);
    Ok(())
}

fn nothing(e: Error) -> Failure {
    Failure(format!("{e}; nothing was imported"))
}

/// The model embedder of `--embedder minilm:PATH` or `openai:MODEL` (None for the built-in
/// hash embedder), loaded or reached once so that a bad model folder or an unreachable
/// server is refused before anything is done.
fn model_embedder(a: &ImportArgs) -> CliResult<Option<Arc<dyn Embedder>>> {
    let spec = EmbedderSpec::parse(&a.embedder, "--embedder").map_err(|e| e.to_string())?;
    if spec != EmbedderSpec::Hash && a.dims.is_some() {
        return Err(
            "--dims: only applies to --embedder hash; a model's dimensions are its own"
                .to_string()
                .into(),
        );
    }
    match spec {
        EmbedderSpec::Hash => Ok(None),
        EmbedderSpec::MiniLm(_) => {
            let m = spec.build(0, None, None).map_err(|e| {
                format!(
                    "--embedder {}: {e}; nothing was imported",
                    a.embedder.trim()
                )
            })?;
            Ok(Some(Arc::from(m)))
        }
        EmbedderSpec::OpenAi(name) => {
            let timeout =
                check_timeout(a.llm_timeout, "--llm-timeout").map_err(|e| e.to_string())?;
            let client = OpenAiClient::from_env(&name)
                .map_err(|e| format!("--embedder openai:{name}: {e}; nothing was imported"))?
                .with_timeout(timeout)
                .with_retries(a.llm_retries);
            let m = OpenAiEmbedder::connect(client, &name)
                .map_err(|e| format!("--embedder openai:{name}: {e}; nothing was imported"))?;
            Ok(Some(Arc::new(m)))
        }
    }
}

/// What `append` committed.
#[derive(Default)]
struct Counts {
    records: u64,
    first_id: Option<u64>,
    last_id: Option<u64>,
}

impl Counts {
    fn done_note(&self) -> String {
        match (self.records, self.first_id, self.last_id) {
            (0, _, _) => "nothing was appended".into(),
            (1, Some(a), _) => format!("the 1 record before it was appended and kept (id {a})"),
            (n, Some(a), Some(b)) => format!(
                "the {n} records before it were appended and kept (first id {a}, last id kept {b})"
            ),
            (n, _, _) => format!("the {n} records before it were appended and kept"),
        }
    }
}

/// `trajdb append DB`: records on stdin, `{"id":N}` on stdout after each commit.
pub fn append(a: &AppendArgs) -> CliResult {
    let durability = if a.durable {
        Durability::SyncEachCommit
    } else {
        Durability::Buffered
    };
    let db = open_create(&a.db, durability)?;
    let stdin = io::stdin();
    let mut out = io::stdout().lock();
    let mut counts = Counts::default();
    let result = append_all(&db, stdin.lock(), &mut out, &mut counts);
    let synced = db.sync();
    match result {
        Err(AppendError::Db(e)) => Err(Failure(format!("{e}; {}", counts.done_note()))),
        Err(AppendError::Out(f)) => Err(f),
        Ok(()) => {
            synced?;
            Ok(())
        }
    }
}

enum AppendError {
    Db(Error),
    Out(Failure),
}

impl From<Error> for AppendError {
    fn from(e: Error) -> Self {
        AppendError::Db(e)
    }
}

/// The spaces among `spaces` that the built-in hash embedder fills, each with it.
fn hash_fill(spaces: &[SpaceDef]) -> Vec<(SpaceDef, Arc<dyn Embedder>)> {
    hash_spaces(spaces)
        .into_iter()
        .map(|(s, e)| (s, Arc::new(e) as Arc<dyn Embedder>))
        .collect()
}

fn append_all(
    db: &Database,
    input: impl BufRead,
    out: &mut impl Write,
    counts: &mut Counts,
) -> Result<(), AppendError> {
    let mut r = LineReader::new(input, "stdin");
    let none = ImportOptions::default();
    // A key-space header as the first line creates its spaces; then none are inferred.
    let header = r.next_header()?;
    if let Some(h) = &header {
        for def in &plan_header_spaces(&db.spaces(), h, &r.location(None), &none)? {
            db.create_space(def)?;
        }
    }
    let mut spaces = db.spaces();
    // After a header (an exported stream) records are stored as given, keys are not filled.
    let mut fill = if header.is_some() {
        Vec::new()
    } else {
        hash_fill(&spaces)
    };
    let mut ids = IdClaims::for_append(db);
    while let Some(mut t) = r.next_record()? {
        let at = r.location(t.id);
        if header.is_none() && spaces.is_empty() && (!t.keys.is_empty() || !t.step_keys.is_empty())
        {
            // A database without key spaces takes them from its first record with keys,
            // once that record has passed every check.
            let create = plan_spaces(&[], Some((&t, &at)), &none)?;
            check_record(&t, &create, &[]).map_err(|e| locate(e, &at))?;
            ids.claim(&t, r.line(), "stdin", Some(db))
                .map_err(|e| locate(e, &at))?;
            for def in &create {
                db.create_space(def)?;
            }
            spaces = db.spaces();
            fill = hash_fill(&spaces);
        } else {
            check_record(&t, &spaces, &fill).map_err(|e| locate(e, &at))?;
            if ids
                .claim(&t, r.line(), "stdin", Some(db))
                .map_err(|e| locate(e, &at))?
                == Claim::Skip
            {
                continue;
            }
        }
        for (space, e) in &fill {
            embed_missing(&mut t, space, e.as_ref()).map_err(|e| locate(e, &at))?;
        }
        let id = db.append(&t).map_err(|e| locate(e, &at))?;
        counts.first_id.get_or_insert(id);
        counts.last_id = Some(id);
        counts.records += 1;
        let line = json_line(&serde_json::json!({ "id": id })).map_err(AppendError::Out)?;
        // A closed stdout is an error here: the caller would not learn the ids.
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| {
                AppendError::Out(Failure(format!(
                    "cannot write {line} to stdout: {e}; record {id} and the ones before it were committed, the rest of stdin was not read"
                )))
            })?;
    }
    Ok(())
}
