//! Importing a JSONL file (the library side of `trajdb import`), and the key-space planning
//! and id checks that `trajdb append` shares.
//!
//! An import is checked whole before anything is written: [`check_import`] reads the file
//! once and checks every record against the key spaces (existing, from the key-space header
//! line, or inferred from the first record and made by `--embed`), the ids already stored
//! and in the file, and the size limits the log enforces, with the keys that embedding will
//! add. Only then does [`write_import`] read it again and commit, creating each new key space
//! just before the first record that has a key in it. A refused import therefore writes
//! nothing, not even a key space; [`check_import`] with no database lets a caller check a
//! file before creating a database directory for it.
//!
//! What can still stop [`write_import`] half-way is the storage (a full disk, a kill): the
//! records before it stay committed, [`ImportFailure`] names the last id kept, and rerunning
//! with [`ImportOptions::skip_existing`] skips the records already stored with identical
//! content.
//!
//! Records without an explicit `provenance` are stored as `imported`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::db::Database;
use crate::embed::{Embedder, HashEmbedder};
use crate::error::{Error, Result};
use crate::format::log::MAX_PAYLOAD;
use crate::format::record::{
    self, EmbedderId, EncKey, Level, Metric, ProvenanceKind, SpaceDef, Trajectory, NO_STEP,
};
use crate::jsonl::{
    check_keys, embed_missing, field_level, hash_spaces, locate, would_fill, Filled, LineReader,
};

/// Dimensions of `--embed` spaces when `--dims` is not given.
pub const DEFAULT_EMBED_DIMS: u32 = 256;

/// How an import makes key spaces and treats ids already stored. Every field documents its
/// default.
#[derive(Clone, Default)]
pub struct ImportOptions {
    /// Text fields to embed into key spaces of the same name, for records without a vector
    /// for them: with [`model`](Self::model) when given, else with the built-in hash
    /// embedder. Default: none.
    pub embed: Vec<String>,
    /// Dimensions of `embed` spaces made with the hash embedder. Default:
    /// [`DEFAULT_EMBED_DIMS`] (or the existing space's). A model's dimensions are its own.
    pub dims: Option<u32>,
    /// The embedder of `embed` spaces instead of the hash embedder (a sentence model, a
    /// remote embeddings endpoint): the spaces record its id, and it fills every text-field
    /// space that records that id. Default: none.
    pub model: Option<Arc<dyn Embedder>>,
    /// Metric of key spaces the import creates. Default: cosine.
    pub metric: Option<Metric>,
    /// A record whose id is already stored with identical content is skipped rather than
    /// refused (for rerunning an interrupted import); different content is still refused.
    /// Default: false.
    pub skip_existing: bool,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("embed", &self.embed)
            .field("dims", &self.dims)
            .field("model", &self.model.as_ref().map(|m| m.id()))
            .field("metric", &self.metric)
            .field("skip_existing", &self.skip_existing)
            .finish()
    }
}

impl ImportOptions {
    /// The embedder `embed` spaces of `dims` dimensions record: the model's, else the hash
    /// embedder's.
    fn embedder_id(&self, dims: u32) -> Result<EmbedderId> {
        match &self.model {
            Some(m) => Ok(m.id()),
            None => Ok(HashEmbedder::new(dims)?.id()),
        }
    }

    /// Dimensions of `embed` spaces: the model's, else `dims`, else `fallback`, else the
    /// default.
    fn embed_dims(&self, fallback: Option<u32>) -> u32 {
        match &self.model {
            Some(m) => m.id().dims,
            None => self.dims.or(fallback).unwrap_or(DEFAULT_EMBED_DIMS),
        }
    }
}

/// Key spaces and the embedder that fills each during an import.
type Fill = Vec<(SpaceDef, Arc<dyn Embedder>)>;

/// What an import did (or, in an [`ImportFailure`], did before it stopped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Records committed.
    pub records: u64,
    /// Steps of the records committed.
    pub steps: u64,
    /// Keys embedded from text.
    pub embedded: u64,
    /// Records skipped as already stored with identical content.
    pub skipped: u64,
    /// Keys not embedded because the text (or a step's text) has nothing to embed; those
    /// records are stored without a key in that space.
    pub no_features: u64,
    /// Key spaces created, in creation order.
    pub created: Vec<SpaceDef>,
    /// Id of the first record committed.
    pub first_id: Option<u64>,
    /// Id of the last record committed.
    pub last_id: Option<u64>,
}

impl ImportReport {
    /// What was kept, for a message after a failure: `nothing was imported`, or the count and
    /// the last id kept.
    pub fn kept_note(&self) -> String {
        let skipped = if self.skipped > 0 {
            format!(" ({} already stored were skipped)", self.skipped)
        } else {
            String::new()
        };
        match (self.records, self.first_id, self.last_id) {
            (0, _, _) => format!("nothing was imported{skipped}"),
            (n, Some(a), Some(b)) => format!(
                "the {n} records before it were imported and kept{skipped} (first id {a}, last id kept {b}); rerun the same import with --skip-existing to add the rest"
            ),
            (n, _, _) => format!("the {n} records before it were imported and kept{skipped}"),
        }
    }
}

/// A failure of [`write_import`] after the check: the error and what was kept before it.
#[derive(Debug)]
pub struct ImportFailure {
    /// What went wrong.
    pub error: Error,
    /// What was committed before it.
    pub kept: Box<ImportReport>,
}

impl fmt::Display for ImportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.error, self.kept.kept_note())
    }
}

impl std::error::Error for ImportFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A file checked by [`check_import`], ready for [`write_import`].
#[derive(Debug, Clone)]
pub struct ImportPlan {
    path: PathBuf,
    source: String,
    opts: ImportOptions,
    header: bool,
    create: Vec<SpaceDef>,
    spaces: Vec<SpaceDef>,
    /// Records the check accepted (skipped ones included).
    pub records: u64,
}

impl ImportPlan {
    /// Key spaces the import will create, in order.
    pub fn creates(&self) -> &[SpaceDef] {
        &self.create
    }
}

/// A key space in words: `` `goal` (trajectory level, 256 dims, cosine, embedder trajdb-hash@1) ``.
pub fn describe(s: &SpaceDef) -> String {
    let level = match s.level {
        Level::Trajectory => "trajectory",
        Level::Step => "step",
    };
    let embedder = match &s.embedder {
        Some(e) => format!(", embedder {}@{}", e.name, e.version),
        None => String::new(),
    };
    format!(
        "`{}` ({level} level, {} dims, {}{embedder})",
        s.name,
        s.dims,
        metric_name(s.metric)
    )
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
        Metric::L2 => "l2",
    }
}

/// The key spaces an import must create: `embed` spaces, then the spaces of the first
/// record's keys that do not exist yet (`at` names that record). Existing spaces must agree
/// with the options. A new step-level space named by an empty `step_keys` list is refused:
/// its dimensions cannot be inferred.
pub fn plan_spaces(
    existing: &[SpaceDef],
    first: Option<(&Trajectory, &str)>,
    o: &ImportOptions,
) -> Result<Vec<SpaceDef>> {
    let mut new: Vec<SpaceDef> = Vec::new();
    for field in &o.embed {
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
    let mut infer = |field: &str, name: &str, level: Level, dims: Option<usize>| -> Result<()> {
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
        let Some(dims) = dims else {
            return Err(Error::invalid(
                format!("{at}, {field}.{name}"),
                format!(
                    "cannot infer the dimensions of new key space `{name}` from an empty list; give the first record steps with vectors, or define the space with a key-space header line"
                ),
            ));
        };
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
                    format!("a new key space needs 1..=65536 dimensions, the vector has {dims}"),
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
/// `metric` or `embed` options that disagree with the header (the header decides).
pub fn plan_header_spaces(
    existing: &[SpaceDef],
    header: &[SpaceDef],
    at: &str,
    o: &ImportOptions,
) -> Result<Vec<SpaceDef>> {
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
    for field in &o.embed {
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

/// What [`IdClaims::claim`] decided for a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Claim {
    /// Store it.
    New,
    /// Skip it: stored already with identical content (`skip_existing`).
    Skip,
}

/// Ids seen so far: stored ones and those of earlier lines of the input.
pub struct IdClaims {
    stored: HashSet<u64>,
    input: HashMap<u64, u64>,
    skip_existing: bool,
    /// Whether a refused stored id should point to `--skip-existing` (imports do).
    hint: bool,
}

impl IdClaims {
    /// Claims for an import against the live ids of `db` (none when `None`).
    pub fn new(db: Option<&Database>, skip_existing: bool) -> Self {
        IdClaims {
            stored: db
                .map(|d| d.ids().into_iter().collect())
                .unwrap_or_default(),
            input: HashMap::new(),
            skip_existing,
            hint: true,
        }
    }

    /// Claims for `trajdb append` (no skipping, and no hint about it).
    pub fn for_append(db: &Database) -> Self {
        IdClaims {
            hint: false,
            ..IdClaims::new(Some(db), false)
        }
    }

    /// Claims the id of record `t` (as it will be stored: embedded keys filled) from `line`
    /// of `source`. Refused: an id used by an earlier line, the reserved id `u64::MAX`, and
    /// a stored id, unless `skip_existing` and the stored trajectory is identical.
    pub fn claim(
        &mut self,
        t: &Trajectory,
        line: u64,
        source: &str,
        db: Option<&Database>,
    ) -> Result<Claim> {
        let Some(id) = t.id else {
            return Ok(Claim::New);
        };
        if id == u64::MAX {
            return Err(Error::invalid("id", "id 18446744073709551615 is reserved"));
        }
        if let Some(prev) = self.input.insert(id, line) {
            return Err(Error::invalid(
                "id",
                format!("id {id} is already used by line {prev} of {source}; ids must be unique"),
            ));
        }
        if !self.stored.contains(&id) {
            return Ok(Claim::New);
        }
        if !self.skip_existing && !self.hint {
            return Err(Error::DuplicateId { id });
        }
        if !self.skip_existing {
            return Err(Error::invalid(
                "id",
                format!(
                    "{}; after an interrupted import, rerun it with --skip-existing",
                    Error::DuplicateId { id }
                ),
            ));
        }
        let stored = match db.map(|d| d.get(id)) {
            Some(Ok(s)) => s,
            _ => return Err(Error::DuplicateId { id }),
        };
        match first_difference(&stored, t) {
            None => Ok(Claim::Skip),
            Some(field) => Err(Error::invalid(
                "id",
                format!(
                    "id {id} is already stored with different content (`{field}` differs); --skip-existing skips only identical records"
                ),
            )),
        }
    }
}

/// The first field in which `t` (a record to store) differs from `stored`, or `None`.
/// A `created_ms` of 0 in `t` means "now" and matches any time.
fn first_difference(stored: &Trajectory, t: &Trajectory) -> Option<&'static str> {
    let checks: [(&'static str, bool); 13] = [
        ("task", stored.task == t.task),
        ("env", stored.env == t.env),
        ("category", stored.category == t.category),
        ("goal", stored.goal == t.goal),
        ("plan", stored.plan == t.plan),
        ("steps", stored.steps == t.steps),
        (
            "final_observation",
            stored.final_observation == t.final_observation,
        ),
        ("outcome", stored.outcome == t.outcome),
        ("meta", stored.meta == t.meta),
        ("provenance", stored.provenance == t.provenance),
        (
            "created_ms",
            t.created_ms == 0 || stored.created_ms == t.created_ms,
        ),
        ("keys", stored.keys == t.keys),
        ("step_keys", stored.step_keys == t.step_keys),
    ];
    checks.iter().find(|(_, same)| !same).map(|(f, _)| *f)
}

/// Refuses `t` when the log record it becomes, once `fill` has embedded its missing keys,
/// is over the log's record limit ([`MAX_PAYLOAD`]), as the commit would.
fn check_size(t: &Trajectory, fill: &[(SpaceDef, Arc<dyn Embedder>)]) -> Result<()> {
    let mut keys = Vec::new();
    for v in t.keys.values() {
        keys.push(EncKey {
            space: 0,
            step: NO_STEP,
            vector: v,
        });
    }
    for vs in t.step_keys.values() {
        for v in vs {
            keys.push(EncKey {
                space: 0,
                step: 0,
                vector: v,
            });
        }
    }
    let mut len = record::encode_trajectory(t, t.id.unwrap_or(0), t.created_ms, &keys).len();
    for (space, _) in fill {
        if let Filled::Added(n) = would_fill(t, space)? {
            // Each key: space u32, step u32, length u32, then the f32 values.
            let per = 12 + 4 * usize::try_from(space.dims).unwrap_or(usize::MAX / 8);
            len = len.saturating_add(n.saturating_mul(per));
        }
    }
    let max = usize::try_from(MAX_PAYLOAD).unwrap_or(usize::MAX);
    if len > max {
        return Err(Error::TooLarge {
            what: format!(
                "record ({} steps{})",
                t.steps.len(),
                if fill.is_empty() {
                    String::new()
                } else {
                    ", with the keys embedding adds".into()
                }
            ),
            len: u64::try_from(len).unwrap_or(u64::MAX),
            max: u64::from(MAX_PAYLOAD),
        });
    }
    Ok(())
}

/// Checks record `t` as [`Database::append`] would, against key spaces `spaces` (existing
/// and about to be created) with the keys `fill` will embed: keys (level, dimensions, the
/// numeric contract), provenance and creation time, and the record size limit. Errors give
/// the field; wrap with
/// [`locate`].
pub fn check_record(
    t: &Trajectory,
    spaces: &[SpaceDef],
    fill: &[(SpaceDef, Arc<dyn Embedder>)],
) -> Result<()> {
    crate::db::check_fields(t)?;
    check_keys(t, spaces)?;
    check_size(t, fill)
}

/// Records read from an import file default to provenance `imported`.
fn default_provenance<R: std::io::BufRead>(r: &LineReader<R>, t: &mut Trajectory) {
    if !r.last_has_provenance() {
        t.provenance.kind = ProvenanceKind::Imported;
    }
}

/// Opens `path` for an import: a regular file (it is read twice).
fn open(path: &Path, source: &str) -> Result<LineReader<BufReader<File>>> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(
            source,
            "is not a regular file; an import reads its input twice (check, then write): save a pipe's output to a file first",
        ));
    }
    Ok(LineReader::new(
        BufReader::with_capacity(1 << 20, f),
        source,
    ))
}

/// The spaces to embed during an import: hash-embedder spaces named after text fields, and
/// those that record the model embedder of `o`; after a header only those named by `embed`
/// (an exported file holds every key it had).
fn fill_spaces(spaces: &[SpaceDef], header: bool, o: &ImportOptions) -> Fill {
    let mut fill: Fill = hash_spaces(spaces)
        .into_iter()
        .map(|(s, e)| (s, Arc::new(e) as Arc<dyn Embedder>))
        .collect();
    if let Some(m) = &o.model {
        let id = m.id();
        for s in spaces {
            if field_level(&s.name) == Some(s.level) && s.embedder.as_ref() == Some(&id) {
                fill.push((s.clone(), Arc::clone(m)));
            }
        }
    }
    if header {
        fill.retain(|(s, _)| o.embed.contains(&s.name));
    }
    fill
}

/// Checks every record of `path` for an import into `db` (`None`: a new, empty database)
/// without writing anything. See the module documentation.
pub fn check_import(db: Option<&Database>, path: &Path, o: &ImportOptions) -> Result<ImportPlan> {
    check_import_as(db, path, &path.display().to_string(), o)
}

/// [`check_import`], naming the input `source` in messages (for a file that holds a copy of
/// the real input, such as a saved pipe).
pub fn check_import_as(
    db: Option<&Database>,
    path: &Path,
    source: &str,
    o: &ImportOptions,
) -> Result<ImportPlan> {
    let source = source.to_owned();
    let mut r = open(path, &source)?;
    let header = r.next_header()?;
    let header_at = r.location(None);
    let first = r.next_record()?;
    let first_at = r.location(first.as_ref().and_then(|t| t.id));
    let existing = db.map(Database::spaces).unwrap_or_default();
    let create = match &header {
        Some(h) => plan_header_spaces(&existing, h, &header_at, o)?,
        None => plan_spaces(&existing, first.as_ref().map(|t| (t, first_at.as_str())), o)?,
    };
    let mut spaces = existing;
    spaces.extend(create.iter().cloned());
    let fill = fill_spaces(&spaces, header.is_some(), o);
    let mut ids = IdClaims::new(db, o.skip_existing);
    let mut records = 0;
    let mut pending = first;
    loop {
        let mut t = match pending.take() {
            Some(t) => t,
            None => match r.next_record()? {
                Some(t) => t,
                None => break,
            },
        };
        default_provenance(&r, &mut t);
        let at = r.location(t.id);
        check_record(&t, &spaces, &fill).map_err(|e| locate(e, &at))?;
        if db.is_some() && o.skip_existing && t.id.is_some_and(|id| ids.stored.contains(&id)) {
            // Compared as it would be stored: with its embedded keys.
            for (space, e) in &fill {
                embed_missing(&mut t, space, e.as_ref()).map_err(|e| locate(e, &at))?;
            }
        }
        ids.claim(&t, r.line(), &source, db)
            .map_err(|e| locate(e, &at))?;
        records += 1;
    }
    Ok(ImportPlan {
        path: path.to_owned(),
        source,
        opts: o.clone(),
        header: header.is_some(),
        create,
        spaces,
        records,
    })
}

/// Writes a file checked by [`check_import`] into `db` (the database it was checked
/// against, or a new one), creating each planned key space just before the first record
/// with a key in it, and syncs. On failure, says what was kept.
pub fn write_import(
    db: &Database,
    plan: &ImportPlan,
) -> std::result::Result<ImportReport, ImportFailure> {
    let mut report = ImportReport::default();
    let result = write_records(db, plan, &mut report);
    let synced = db.sync();
    match result.and(synced) {
        Ok(()) => Ok(report),
        Err(error) => Err(ImportFailure {
            error,
            kept: Box::new(report),
        }),
    }
}

fn write_records(db: &Database, plan: &ImportPlan, report: &mut ImportReport) -> Result<()> {
    let o = &plan.opts;
    let mut r = open(&plan.path, &plan.source)?;
    r.next_header()?;
    let mut pending: Vec<&SpaceDef> = plan
        .create
        .iter()
        .filter(|s| !db.spaces().iter().any(|d| d.name == s.name))
        .collect();
    let fill = fill_spaces(&plan.spaces, plan.header, o);
    let mut ids = IdClaims::new(Some(db), o.skip_existing);
    while let Some(mut t) = r.next_record()? {
        default_provenance(&r, &mut t);
        let at = r.location(t.id);
        // Keys are embedded before the id claim (a skipped record must match the stored one
        // with its keys), but only a record that is written counts in the report.
        let (mut embedded, mut no_features) = (0u64, 0u64);
        for (space, e) in &fill {
            match embed_missing(&mut t, space, e.as_ref()).map_err(|e| locate(e, &at))? {
                Filled::Added(n) => embedded += u64::try_from(n).unwrap_or(u64::MAX),
                Filled::NoFeatures => no_features += 1,
                _ => {}
            }
        }
        if ids
            .claim(&t, r.line(), &plan.source, Some(db))
            .map_err(|e| locate(e, &at))?
            == Claim::Skip
        {
            report.skipped += 1;
            continue;
        }
        report.embedded = report.embedded.saturating_add(embedded);
        report.no_features += no_features;
        let used: HashSet<&String> = t.keys.keys().chain(t.step_keys.keys()).collect();
        create_spaces(db, &mut pending, |s| used.contains(&s.name), report)?;
        let id = match db.append(&t) {
            Ok(id) => id,
            Err(e @ Error::AfterCommit { .. }) => {
                // The record reached the log (a reopen has it): it counts as kept.
                if let Some(id) = t.id {
                    report.first_id.get_or_insert(id);
                    report.last_id = Some(id);
                    report.records += 1;
                }
                return Err(locate(e, &at));
            }
            Err(e) => return Err(locate(e, &at)),
        };
        report.first_id.get_or_insert(id);
        report.last_id = Some(id);
        report.records += 1;
        report.steps += u64::try_from(t.steps.len()).unwrap_or(u64::MAX);
    }
    // Spaces no record has a key in (from a header or `embed`) are created last.
    create_spaces(db, &mut pending, |_| true, report)
}

/// Creates the spaces of `pending` that `pick` selects, in order, and removes them from it.
fn create_spaces(
    db: &Database,
    pending: &mut Vec<&SpaceDef>,
    pick: impl Fn(&SpaceDef) -> bool,
    report: &mut ImportReport,
) -> Result<()> {
    while let Some(i) = pending.iter().position(|s| pick(s)) {
        let s = pending.remove(i);
        db.create_space(s)?;
        report.created.push(s.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size check's arithmetic for keys that embedding adds matches the real encoding.
    #[test]
    fn size_check_counts_embedded_keys_exactly() {
        let e = HashEmbedder::new(16).expect("dims");
        let goal =
            SpaceDef::new("goal", Level::Trajectory, 16, Metric::Cosine).with_embedder(e.id());
        let obs =
            SpaceDef::new("observation", Level::Step, 16, Metric::Cosine).with_embedder(e.id());
        let mut t = Trajectory {
            goal: "make tea".into(),
            steps: vec![Default::default(); 3],
            ..Default::default()
        };
        for (i, s) in t.steps.iter_mut().enumerate() {
            s.observation = format!("step {i}");
        }
        let fill = vec![(goal.clone(), e), (obs.clone(), e)];
        let mut added = 0;
        for (space, _) in &fill {
            if let Filled::Added(n) = would_fill(&t, space).expect("ok") {
                added += n * (12 + 4 * 16);
            }
        }
        let before = record::encode_trajectory(&t, 0, 0, &[]).len();
        embed_missing(&mut t, &goal, &e).expect("ok");
        embed_missing(&mut t, &obs, &e).expect("ok");
        let mut keys = vec![EncKey {
            space: 0,
            step: NO_STEP,
            vector: &t.keys["goal"],
        }];
        for v in &t.step_keys["observation"] {
            keys.push(EncKey {
                space: 1,
                step: 0,
                vector: v,
            });
        }
        let after = record::encode_trajectory(&t, 0, 0, &keys).len();
        assert_eq!(before + added, after);
    }
}
