//! `trajdb import` and `trajdb append`: JSONL records into the database.
//!
//! `import` reads a regular file twice: a first pass parses and checks every record against
//! the key spaces (existing, from the key-space header line, or else inferred from the first
//! record and made by `--embed`) and the ids already stored, so a bad record is refused
//! before anything is written; the second pass embeds and commits. Input that cannot be read
//! twice (a pipe) is checked and committed in one pass. `append` applies a key-space header
//! too when it is the first line of stdin.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::time::Instant;

use trajdb::jsonl::{check_keys, embed_missing, field_level, hash_spaces, locate, LineReader};
use trajdb::{
    Database, Durability, Embedder, EmbedderId, Error, HashEmbedder, Level, Metric, SpaceDef,
    Trajectory,
};
use trajdb_agent::embedders::{check_timeout, EmbedderSpec};
use trajdb_agent::openai::{OpenAiClient, OpenAiEmbedder};

use super::progress::{self, Counted, Progress};
use super::{describe, json_line, open_create, AppendArgs, CliResult, Failure, ImportArgs};

/// Dimensions of `--embed` spaces when `--dims` is not given.
const DEFAULT_EMBED_DIMS: u32 = 256;

fn open_input(path: &Path) -> CliResult<(BufReader<File>, bool)> {
    let f = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("{} is a directory, not a JSONL file", path.display()).into());
    }
    Ok((BufReader::with_capacity(1 << 20, f), meta.is_file()))
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
        Metric::L2 => "l2",
    }
}

/// How `import` makes key spaces: `--embed` fields, `--dims`, `--metric`, and the model
/// embedder of `--embedder openai:MODEL` (none: the built-in hash embedder).
struct SpaceOpts<'a> {
    embed: &'a [String],
    dims: Option<u32>,
    metric: Option<Metric>,
    model: Option<EmbedderId>,
}

impl SpaceOpts<'_> {
    /// The embedder `--embed` spaces record, given their dimensions if it is the hash one.
    fn embedder_id(&self, dims: u32) -> trajdb::Result<EmbedderId> {
        match &self.model {
            Some(id) => Ok(id.clone()),
            None => Ok(HashEmbedder::new(dims)?.id()),
        }
    }

    /// The `--embed` spaces' dimensions: the model's, else `--dims`, else `fallback`.
    fn embed_dims(&self, fallback: Option<u32>) -> u32 {
        match &self.model {
            Some(id) => id.dims,
            None => self.dims.or(fallback).unwrap_or(DEFAULT_EMBED_DIMS),
        }
    }
}

/// Spaces and the embedder that fills each.
type Fill = Vec<(SpaceDef, Box<dyn Embedder>)>;

/// The spaces among `spaces` that the built-in hash embedder fills, plus those that record
/// `model` (the `--embedder openai:MODEL` embedder) and are named after a text field.
fn fill_spaces(spaces: &[SpaceDef], model: Option<&OpenAiEmbedder>) -> Fill {
    let mut fill: Fill = hash_spaces(spaces)
        .into_iter()
        .map(|(s, e)| (s, Box::new(e) as Box<dyn Embedder>))
        .collect();
    if let Some(m) = model {
        let id = m.id();
        for s in spaces {
            if field_level(&s.name) == Some(s.level) && s.embedder.as_ref() == Some(&id) {
                fill.push((s.clone(), Box::new(m.clone())));
            }
        }
    }
    fill
}

/// The key spaces an import must create: `--embed` spaces, then the spaces of the first
/// record's keys that do not exist yet (`at` names that record). Existing spaces must agree
/// with the options.
fn plan_spaces(
    existing: &[SpaceDef],
    first: Option<(&Trajectory, &str)>,
    o: &SpaceOpts<'_>,
) -> trajdb::Result<Vec<SpaceDef>> {
    let mut new: Vec<SpaceDef> = Vec::new();
    for field in o.embed {
        if new.iter().any(|s| &s.name == field) {
            continue;
        }
        let flag = format!("--embed {field}");
        let level =
            field_level(field).ok_or_else(|| Error::invalid(&flag, "is not a text field"))?;
        let old = existing.iter().find(|s| &s.name == field);
        let dims = o.embed_dims(old.map(|s| s.dims));
        let m = o.metric.or(old.map(|s| s.metric)).unwrap_or(Metric::Cosine);
        let want = SpaceDef::new(field.clone(), level, dims, m).with_embedder(o.embedder_id(dims)?);
        match old {
            Some(s) if *s != want => {
                return Err(Error::invalid(
                    flag,
                    format!(
                        "key space `{field}` exists already as {}, not {}; drop --embed {field} or match its --dims and --metric",
                        describe(s),
                        describe(&want)
                    ),
                ))
            }
            Some(_) => {}
            None => new.push(want),
        }
    }
    let Some((t, at)) = first else {
        return Ok(new);
    };
    let mut infer =
        |field: &str, name: &str, level: Level, dims: Option<usize>| -> trajdb::Result<()> {
            if let Some(s) = existing.iter().chain(new.iter()).find(|s| s.name == name) {
                if let Some(m) = o.metric.filter(|m| *m != s.metric) {
                    return Err(Error::invalid(
                        format!("--metric {}", metric_name(m)),
                        format!(
                            "key space `{name}` exists already with metric {}",
                            metric_name(s.metric)
                        ),
                    ));
                }
                return Ok(());
            }
            let Some(dims) = dims else { return Ok(()) };
            if name.is_empty() || name.len() > 256 {
                return Err(Error::invalid(
                    format!("{at}, {field}"),
                    "key space names must be 1..=256 bytes",
                ));
            }
            let dims = u32::try_from(dims)
                .ok()
                .filter(|d| (1..=65_536).contains(d))
                .ok_or_else(|| {
                    Error::invalid(
                        format!("{at}, {field}.{name}"),
                        format!(
                            "a new key space needs 1..=65536 dimensions, the vector has {dims}"
                        ),
                    )
                })?;
            new.push(SpaceDef::new(
                name,
                level,
                dims,
                o.metric.unwrap_or(Metric::Cosine),
            ));
            Ok(())
        };
    for (name, v) in &t.keys {
        infer("keys", name, Level::Trajectory, Some(v.len()))?;
    }
    for (name, vs) in &t.step_keys {
        infer("step_keys", name, Level::Step, vs.first().map(Vec::len))?;
    }
    Ok(new)
}

/// The key spaces of header `header` (read at `at`) that the database does not have yet, in
/// header order. Refused: a space of the same name defined differently in the database, and
/// `--metric` or `--embed` options that disagree with the header (the header decides).
fn plan_header_spaces(
    existing: &[SpaceDef],
    header: &[SpaceDef],
    at: &str,
    o: &SpaceOpts<'_>,
) -> trajdb::Result<Vec<SpaceDef>> {
    if let Some(m) = o.metric {
        if let Some(s) = header.iter().find(|s| s.metric != m) {
            return Err(Error::invalid(
                format!("--metric {}", metric_name(m)),
                format!(
                    "conflicts with the key-space header at {at}, which defines {}; drop --metric, the header decides",
                    describe(s)
                ),
            ));
        }
    }
    for field in o.embed {
        let flag = format!("--embed {field}");
        let Some(s) = header.iter().find(|s| &s.name == field) else {
            return Err(Error::invalid(
                flag,
                format!(
                    "conflicts with the key-space header at {at}, which defines no space `{field}`; drop --embed, the header decides"
                ),
            ));
        };
        let dims = o.embed_dims(Some(s.dims));
        let want = SpaceDef::new(field.clone(), s.level, dims, s.metric)
            .with_embedder(o.embedder_id(dims)?);
        if *s != want {
            return Err(Error::invalid(
                flag,
                format!(
                    "conflicts with the key-space header at {at}, which defines {}, not {}; drop --embed and --dims, the header decides",
                    describe(s),
                    describe(&want)
                ),
            ));
        }
    }
    let mut new = Vec::new();
    for h in header {
        match existing.iter().find(|s| s.name == h.name) {
            Some(s) if s != h => {
                return Err(Error::SpaceConflict {
                    name: h.name.clone(),
                    what: format!(
                        "a different definition in the database: {}, but the key-space header at {at} defines {}; import into a new database",
                        describe(s),
                        describe(h)
                    ),
                })
            }
            Some(_) => {}
            None => new.push(h.clone()),
        }
    }
    Ok(new)
}

/// Ids seen so far: stored ones and those of earlier lines of the input.
struct Ids {
    stored: HashSet<u64>,
    input: HashMap<u64, u64>,
}

impl Ids {
    fn new(db: &Database) -> Self {
        Ids {
            stored: db.ids().into_iter().collect(),
            input: HashMap::new(),
        }
    }

    fn claim(&mut self, id: Option<u64>, line: u64, source: &str) -> trajdb::Result<()> {
        let Some(id) = id else { return Ok(()) };
        if self.stored.contains(&id) {
            return Err(Error::DuplicateId { id });
        }
        if let Some(prev) = self.input.insert(id, line) {
            return Err(Error::invalid(
                "id",
                format!("id {id} is already used by line {prev} of {source}; ids must be unique"),
            ));
        }
        Ok(())
    }
}

/// What one pass over the input did.
#[derive(Default)]
struct Counts {
    records: u64,
    steps: u64,
    embedded: u64,
    first_id: Option<u64>,
    last_id: Option<u64>,
}

impl Counts {
    fn done_note(&self, verb: &str) -> String {
        match (self.records, self.first_id, self.last_id) {
            (0, _, _) => format!("nothing was {verb}"),
            (1, Some(a), _) => format!("the 1 record before it was {verb} and kept (id {a})"),
            (n, Some(a), Some(b)) => {
                format!("the {n} records before it were {verb} and kept (ids {a}..={b})")
            }
            (n, _, _) => format!("the {n} records before it were {verb} and kept"),
        }
    }
}

/// One pass over the input: parse and check every record; with `db` also embed and commit.
/// `pending` is a record the reader returned already (its last line).
fn pass<R: BufRead>(
    r: &mut LineReader<R>,
    mut pending: Option<Trajectory>,
    spaces: &[SpaceDef],
    fill: &[(SpaceDef, Box<dyn Embedder>)],
    ids: &mut Ids,
    db: Option<&Database>,
    counts: &mut Counts,
) -> trajdb::Result<()> {
    loop {
        let mut t = match pending.take() {
            Some(t) => t,
            None => match r.next_record()? {
                Some(t) => t,
                None => return Ok(()),
            },
        };
        let at = r.location(t.id);
        check_keys(&t, spaces).map_err(|e| locate(e, &at))?;
        ids.claim(t.id, r.line(), r.source())
            .map_err(|e| locate(e, &at))?;
        if let Some(db) = db {
            for (space, e) in fill {
                if embed_missing(&mut t, space, e.as_ref()).map_err(|e| locate(e, &at))? {
                    counts.embedded += match space.level {
                        Level::Trajectory => 1,
                        Level::Step => t.steps.len() as u64,
                    };
                }
            }
            let id = db.append(&t).map_err(|e| locate(e, &at))?;
            counts.first_id.get_or_insert(id);
            counts.last_id = Some(id);
        }
        counts.records += 1;
        counts.steps += t.steps.len() as u64;
    }
}

/// `trajdb import DB FILE`.
pub fn import(a: &ImportArgs) -> CliResult {
    let start = Instant::now();
    let source = a.file.display().to_string();
    // A Parquet file is read whole and imported as the JSONL it holds. Only a regular file
    // is sniffed for the magic: reading a pipe's first bytes would lose them.
    let regular = open_input(&a.file)?.1;
    let input = if regular && super::is_parquet_file(&a.file) {
        Input::Bytes(super::parquet_as_jsonl(&a.file)?)
    } else {
        Input::File(a.file.clone())
    };
    let hidden = Progress::hidden();
    let input_reader = input.reader(&hidden)?;
    // A model embedder is reached (one probe request) before the database is touched.
    let model = match EmbedderSpec::parse(&a.embedder, "--embedder").map_err(|e| e.to_string())? {
        EmbedderSpec::Hash => None,
        EmbedderSpec::OpenAi(name) => {
            if a.dims.is_some() {
                return Err(
                    "--dims: only applies to --embedder hash; a model's dimensions are its own"
                        .to_string()
                        .into(),
                );
            }
            let timeout =
                check_timeout(a.llm_timeout, "--llm-timeout").map_err(|e| e.to_string())?;
            let client = OpenAiClient::from_env(&name)
                .map_err(|e| format!("--embedder openai:{name}: {e}; nothing was imported"))?
                .with_timeout(timeout)
                .with_retries(a.llm_retries);
            Some(
                OpenAiEmbedder::connect(client, &name)
                    .map_err(|e| format!("--embedder openai:{name}: {e}; nothing was imported"))?,
            )
        }
    };
    // The key-space header, or else the first record, decides the key spaces; read them
    // before touching the database.
    let mut reader = LineReader::new(input_reader, source.as_str());
    let header = reader.next_header().map_err(|e| nothing(e, "imported"))?;
    let header_at = reader.location(None);
    let first = reader.next_record().map_err(|e| nothing(e, "imported"))?;
    let first_at = reader.location(first.as_ref().and_then(|t| t.id));
    let durability = if a.durable {
        Durability::SyncEachCommit
    } else {
        Durability::Buffered
    };
    let db = open_create(&a.db, durability)?;
    let existing = db.spaces();
    let opts = SpaceOpts {
        embed: &a.embed,
        dims: a.dims,
        metric: a.metric.map(Metric::from),
        model: model.as_ref().map(Embedder::id),
    };
    let create = match &header {
        Some(h) => plan_header_spaces(&existing, h, &header_at, &opts),
        None => plan_spaces(
            &existing,
            first.as_ref().map(|t| (t, first_at.as_str())),
            &opts,
        ),
    }
    .map_err(|e| nothing(e, "imported"))?;
    let mut all = existing;
    all.extend(create.iter().cloned());
    let len = input.len();
    if regular {
        // Check everything before writing anything.
        let bar = Progress::bar(len, "checking", true);
        let mut check = reopen(&input, &source, &bar)?;
        pass(
            &mut check,
            None,
            &all,
            &[],
            &mut Ids::new(&db),
            None,
            &mut Counts::default(),
        )
        .map_err(|e| nothing(e, "imported"))?;
    }
    for def in &create {
        db.create_space(def)?;
    }
    let mut fill = fill_spaces(&db.spaces(), model.as_ref());
    if header.is_some() {
        // An exported file holds every key its records had: a record without a key for an
        // embedder space had none in the source, so only `--embed` spaces are filled.
        fill.retain(|(s, _)| a.embed.contains(&s.name));
    }
    let mut counts = Counts::default();
    let mut ids = Ids::new(&db);
    let committed = if regular {
        let bar = Progress::bar(len, "importing", true);
        let mut r = reopen(&input, &source, &bar)?;
        pass(&mut r, None, &all, &fill, &mut ids, Some(&db), &mut counts)
    } else {
        let _spin = Progress::spinner("importing from a pipe");
        // A pipe cannot be read twice: check and commit in one pass, from the first record.
        pass(
            &mut reader,
            first,
            &all,
            &fill,
            &mut ids,
            Some(&db),
            &mut counts,
        )
    };
    let synced = db.sync();
    if let Err(e) = committed {
        return Err(Failure(format!("{e}; {}", counts.done_note("imported"))));
    }
    synced?;
    let secs = start.elapsed().as_secs_f64();
    let mut note = format!(
        "trajdb: imported {} trajectories ({} steps) from {} into {} in {secs:.2} s ({:.0}/s)",
        counts.records,
        counts.steps,
        source,
        a.db.display(),
        counts.records as f64 / secs.max(1e-9)
    );
    if !create.is_empty() {
        let names: Vec<String> = create.iter().map(describe).collect();
        note.push_str(&format!("; created key spaces: {}", names.join("; ")));
    }
    if counts.embedded > 0 {
        note.push_str(&format!(
            "; embedded {} keys from text with {}",
            counts.embedded,
            model
                .as_ref()
                .map_or_else(|| "the built-in hash embedder".to_string(), |m| m.id().name)
        ));
    }
    progress::note(&note);
    Ok(())
}

/// What `import` reads: a file, or the JSONL a Parquet file was turned into.
enum Input {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
}

/// A buffered reader of an [`Input`] that advances a progress bar.
type InputReader<'a> = BufReader<Counted<'a, Box<dyn io::Read + 'a>>>;

impl Input {
    /// Its size in bytes (0 when unknown).
    fn len(&self) -> u64 {
        match self {
            Input::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
            Input::Bytes(b) => b.len() as u64,
        }
    }

    /// A reader from its start, advancing `progress` by the bytes read.
    fn reader<'a>(&'a self, progress: &'a Progress) -> CliResult<InputReader<'a>> {
        let inner: Box<dyn io::Read + 'a> = match self {
            Input::File(path) => Box::new(open_input(path)?.0.into_inner()),
            Input::Bytes(b) => Box::new(b.as_slice()),
        };
        Ok(BufReader::with_capacity(
            1 << 20,
            Counted { inner, progress },
        ))
    }
}

/// The input again, standing after its key-space header (read once already), advancing
/// `progress` by the bytes read.
fn reopen<'a>(
    input: &'a Input,
    source: &str,
    progress: &'a Progress,
) -> CliResult<LineReader<InputReader<'a>>> {
    let mut r = LineReader::new(input.reader(progress)?, source);
    r.next_header().map_err(|e| nothing(e, "imported"))?;
    Ok(r)
}

fn nothing(e: Error, verb: &str) -> Failure {
    Failure(format!("{e}; nothing was {verb}"))
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
        Err(AppendError::Db(e)) => Err(Failure(format!("{e}; {}", counts.done_note("appended")))),
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

fn append_all(
    db: &Database,
    input: impl BufRead,
    out: &mut impl Write,
    counts: &mut Counts,
) -> Result<(), AppendError> {
    let mut r = LineReader::new(input, "stdin");
    // A key-space header as the first line creates its spaces; then none are inferred.
    let header = r.next_header()?;
    if let Some(h) = &header {
        let opts = SpaceOpts {
            embed: &[],
            dims: None,
            metric: None,
            model: None,
        };
        for def in &plan_header_spaces(&db.spaces(), h, &r.location(None), &opts)? {
            db.create_space(def)?;
        }
    }
    let mut spaces = db.spaces();
    // After a header (an exported stream) records are stored as given, keys are not filled.
    let mut fill = if header.is_some() {
        Vec::new()
    } else {
        fill_spaces(&spaces, None)
    };
    let mut ids = Ids::new(db);
    while let Some(mut t) = r.next_record()? {
        let at = r.location(t.id);
        if header.is_none() && spaces.is_empty() && (!t.keys.is_empty() || !t.step_keys.is_empty())
        {
            // A database without key spaces takes them from its first record with keys.
            let opts = SpaceOpts {
                embed: &[],
                dims: None,
                metric: None,
                model: None,
            };
            let create = plan_spaces(&[], Some((&t, &at)), &opts)?;
            for def in &create {
                db.create_space(def)?;
            }
            spaces = db.spaces();
            fill = fill_spaces(&spaces, None);
        }
        check_keys(&t, &spaces).map_err(|e| locate(e, &at))?;
        ids.claim(t.id, r.line(), "stdin")
            .map_err(|e| locate(e, &at))?;
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
