//! The JSONL trajectory format read by `trajdb import` and `trajdb append` and written by
//! `trajdb export`: one [`Trajectory`] as JSON per line (field list in `docs/jsonl.md`).
//!
//! Reading is bounded: [`LineReader`] never holds more than [`MAX_LINE_BYTES`] of one line,
//! numbers lines from 1 and skips blank ones. [`parse_record`] turns a line into a trajectory
//! and checks what JSON cannot rule out: invalid UTF-8, numbers that overflow `f32` to
//! infinity, non-finite rewards, step keys that do not match the steps. [`check_keys`]
//! checks a record's keys against the database's key spaces, and [`embed_missing`] fills the
//! keys of spaces that record a text embedder. Every error names the source, the line and,
//! when known, the record id.
//!
//! The first non-blank line may instead be a key-space header, `{"trajdb_spaces":[...]}`
//! ([`SpacesHeader`], written by `trajdb export`): the key spaces in creation order, so that
//! an import rebuilds them exactly. [`LineReader::next_header`] reads it; anywhere else it is
//! refused with its line number.
//!
//! ```
//! use trajdb::jsonl::{LineReader, parse_record};
//! let input = "{\"goal\":\"make tea\",\"keys\":{\"goal\":[1,0]}}\n\n{\"goal\":\"boil\"}\n";
//! let mut records = LineReader::new(input.as_bytes(), "example.jsonl");
//! let mut goals = Vec::new();
//! while let Some(t) = records.next_record()? {
//!     goals.push(t.goal);
//! }
//! assert_eq!(goals, ["make tea", "boil"]);
//! assert_eq!(records.line(), 3);
//! let bad = parse_record(b"{\"id\":7}", "x.jsonl line 1").unwrap_err().to_string();
//! assert!(bad.contains("x.jsonl line 1 (record id 7)") && bad.contains("missing field `goal`"));
//! # Ok::<(), trajdb::Error>(())
//! ```

use std::io::{BufRead, ErrorKind};

use serde::{Deserialize, Serialize};

use crate::embed::{Embedder, HashEmbedder};
use crate::error::{Error, Result};
use crate::format::record::{Level, SpaceDef, Trajectory};
use crate::index::kernels::{check_components, check_vector};

/// The UTF-8 byte-order mark, accepted (and skipped) at the very start of the input only.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Longest line accepted, in bytes (64 MiB, the same as the largest log record).
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Trajectory-level text fields a key space can be embedded from.
pub const TRAJECTORY_FIELDS: [&str; 4] = ["goal", "plan", "category", "task"];
/// Step-level text fields a key space can be embedded from.
pub const STEP_FIELDS: [&str; 3] = ["observation", "reasoning", "action"];

/// The top-level field that marks a key-space header line.
pub const SPACES_FIELD: &str = "trajdb_spaces";

/// The key-space header line: `{"trajdb_spaces":[{"name":..,"level":..,"dims":..,
/// "metric":..,"elem":..,"embedder":null|{"name":..,"version":..,"dims":..}},...]}`, the
/// database's key spaces in creation order. Allowed only as the first non-blank line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpacesHeader {
    /// The key spaces, in creation order.
    pub trajdb_spaces: Vec<SpaceDef>,
}

/// Reads newline-separated lines of bounded length, numbered from 1, skipping blank lines.
///
/// A line longer than the limit is refused as soon as the limit is passed; the rest of it is
/// never read into memory.
pub struct LineReader<R> {
    inner: R,
    source: String,
    line: u64,
    max: usize,
    buf: Vec<u8>,
    /// The line in `buf` was looked at by [`LineReader::next_header`] and not consumed.
    held: bool,
}

impl<R: BufRead> LineReader<R> {
    /// Reads from `inner`; `source` names it in error messages (a file name or `stdin`).
    pub fn new(inner: R, source: impl Into<String>) -> Self {
        LineReader {
            inner,
            source: source.into(),
            line: 0,
            max: MAX_LINE_BYTES,
            buf: Vec::new(),
            held: false,
        }
    }

    /// The same reader with a different line-length limit (default [`MAX_LINE_BYTES`]).
    pub fn with_max_line(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The name given for the input.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of the line last returned (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Where the last line is, for messages: `SOURCE line N`, plus `(record id I)` if given.
    pub fn location(&self, id: Option<u64>) -> String {
        location(&self.source, self.line, id)
    }

    /// The next non-blank line without its line ending, or `None` at the end of the input.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>> {
        Ok(if self.fill_line()? {
            Some(&self.buf)
        } else {
            None
        })
    }

    /// Reads the next non-blank line into `buf`; false at the end of the input.
    fn fill_line(&mut self) -> Result<bool> {
        if self.held {
            self.held = false;
            return Ok(true);
        }
        loop {
            self.buf.clear();
            self.line += 1;
            let mut saw_any = false;
            loop {
                let chunk = match self.inner.fill_buf() {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::Io {
                            op: "read",
                            path: format!("{} line {}", self.source, self.line).into(),
                            source: e,
                        })
                    }
                };
                if chunk.is_empty() {
                    break;
                }
                saw_any = true;
                let newline = chunk.iter().position(|&b| b == b'\n');
                let take = newline.unwrap_or(chunk.len());
                if self.buf.len() + take > self.max {
                    return Err(Error::invalid(
                        location(&self.source, self.line, None),
                        format!(
                            "line is longer than the limit of {} bytes; split the record or shorten its texts",
                            self.max
                        ),
                    ));
                }
                self.buf.extend_from_slice(&chunk[..take]);
                self.inner.consume(take + usize::from(newline.is_some()));
                if newline.is_some() {
                    break;
                }
            }
            if !saw_any {
                self.line -= 1;
                return Ok(false);
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if self.line == 1 && self.buf.starts_with(UTF8_BOM) {
                // A byte-order mark at the start of the input (as some editors and
                // Windows tools write) is not part of the first record.
                self.buf.drain(..UTF8_BOM.len());
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(true);
        }
    }
}

impl<R: BufRead> LineReader<R> {
    /// The next record, parsed with [`parse_record`] (errors name this reader's source and
    /// line), or `None` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<Trajectory>> {
        if !self.fill_line()? {
            return Ok(None);
        }
        let at = location(&self.source, self.line, None);
        parse_record(&self.buf, &at).map(Some)
    }

    /// Whether the record last returned gives its `provenance` (not absent or null), so an
    /// import can default it to `imported`. Lines without the word are answered without
    /// parsing; others are skimmed without building values.
    pub fn last_has_provenance(&self) -> bool {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            provenance: Option<serde::de::IgnoredAny>,
        }
        let needle = b"provenance";
        self.buf.windows(needle.len()).any(|w| w == needle)
            && serde_json::from_slice::<Probe>(&self.buf).is_ok_and(|p| p.provenance.is_some())
    }

    /// The key spaces of the key-space header ([`SpacesHeader`]) when the first non-blank
    /// line is one; the reader then stands after it. Otherwise `None`, and that line is kept
    /// for the next call of [`LineReader::next_record`]. After the first line has been read,
    /// always `None`: a header further on is refused by `next_record`.
    pub fn next_header(&mut self) -> Result<Option<Vec<SpaceDef>>> {
        if self.line != 0 || !self.fill_line()? {
            return Ok(None);
        }
        let at = location(&self.source, self.line, None);
        let header = parse_header(&self.buf, &at)?;
        self.held = header.is_none();
        Ok(header)
    }
}

/// Whether `line` is a JSON object with the top-level field [`SPACES_FIELD`]. Lines that do
/// not contain the field name are answered without parsing.
fn is_header(line: &[u8]) -> bool {
    let needle = SPACES_FIELD.as_bytes();
    line.windows(needle.len()).any(|w| w == needle)
        && serde_json::from_slice::<serde_json::Value>(line)
            .is_ok_and(|v| v.get(SPACES_FIELD).is_some())
}

/// Parses a key-space header line: `Some(spaces)` when `line` is one (see [`SpacesHeader`]),
/// `None` when it is not; `at` names the line in errors.
///
/// Refused: unknown fields, missing or invalid space fields, names that are empty, longer
/// than 256 bytes or given twice, dimensions outside 1..=65536, and an embedder whose
/// dimensions differ from its space's.
pub fn parse_header(line: &[u8], at: &str) -> Result<Option<Vec<SpaceDef>>> {
    if !is_header(line) {
        return Ok(None);
    }
    let h: SpacesHeader = serde_json::from_slice(line)
        .map_err(|e| Error::invalid(at, format!("invalid key-space header: {e}")))?;
    for (i, s) in h.trajdb_spaces.iter().enumerate() {
        let field = format!("{SPACES_FIELD}[{i}]");
        let bad = |what: String| Error::invalid(format!("{at}, {field}"), what);
        if s.name.is_empty() || s.name.len() > 256 {
            return Err(bad("key space names must be 1..=256 bytes".into()));
        }
        if h.trajdb_spaces[..i].iter().any(|p| p.name == s.name) {
            return Err(bad(format!("key space `{}` is defined twice", s.name)));
        }
        if !(1..=65_536).contains(&s.dims) {
            return Err(bad(format!(
                "key space `{}` has {} dimensions; 1..=65536 are allowed",
                s.name, s.dims
            )));
        }
        if let Some(e) = s.embedder.as_ref().filter(|e| e.dims != s.dims) {
            return Err(bad(format!(
                "key space `{}` has {} dimensions but its embedder {e} makes {}",
                s.name, s.dims, e.dims
            )));
        }
    }
    Ok(Some(h.trajdb_spaces))
}

/// `SOURCE line N`, with ` (record id I)` when the id is known.
pub fn location(source: &str, line: u64, id: Option<u64>) -> String {
    match id {
        Some(id) => format!("{source} line {line} (record id {id})"),
        None => format!("{source} line {line}"),
    }
}

/// Places an error at `at` (see [`location`]): input errors become
/// [`Error::InvalidInput`] at that place; storage errors pass through unchanged.
pub fn locate(e: Error, at: &str) -> Error {
    match e {
        Error::InvalidInput { at: inner, what } => Error::invalid(format!("{at}, {inner}"), what),
        e @ (Error::DimensionMismatch { .. }
        | Error::UnknownSpace { .. }
        | Error::SpaceConflict { .. }
        | Error::DuplicateId { .. }
        | Error::EmbedderMismatch { .. }
        | Error::TooLarge { .. }
        | Error::NothingToEmbed { .. }
        | Error::NotFound { .. }) => Error::invalid(at, e.to_string()),
        e => e,
    }
}

/// Parses one line (as returned by [`LineReader::next_line`]) into a trajectory; `at` names
/// the line in errors (the record id is added when the line has one).
///
/// Refused: invalid UTF-8, malformed JSON, a missing `goal`, unknown fields, key values that
/// are not numbers or overflow `f32`, non-finite rewards, and `step_keys` whose vector count
/// differs from the number of steps.
pub fn parse_record(line: &[u8], at: &str) -> Result<Trajectory> {
    let text = std::str::from_utf8(line).map_err(|e| {
        let col = e.valid_up_to() + 1;
        let byte = line.get(e.valid_up_to()).copied().unwrap_or(0);
        Error::invalid(
            at,
            format!("text is not valid UTF-8 (byte {byte:#04x} at column {col}); write the file as UTF-8"),
        )
    })?;
    if text.starts_with('\u{FEFF}') {
        return Err(Error::invalid(
            at,
            "the line starts with a UTF-8 byte-order mark, which is accepted only at the start of the file; the file may have been joined from several files: remove the marks",
        ));
    }
    let kind = match text.trim_start().as_bytes().first() {
        Some(b'{') | None => None,
        Some(b'[') => Some("a JSON array"),
        Some(b'"') => Some("a JSON string"),
        Some(b't' | b'f') => Some("a JSON boolean"),
        Some(b'n') => Some("JSON null"),
        Some(b'-' | b'0'..=b'9') => Some("a JSON number"),
        Some(_) => Some("not JSON"),
    };
    if let Some(kind) = kind {
        return Err(Error::invalid(
            at,
            format!("each line must be a JSON object (`{{...}}`), one trajectory per line; this line is {kind}"),
        ));
    }
    let t: Trajectory = serde_json::from_str(text).map_err(|e| {
        if is_header(line) {
            return Error::invalid(
                at,
                format!("a key-space header (`{SPACES_FIELD}`) may only be the first non-blank line; put it first, or drop it if the file was joined from several exports"),
            );
        }
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let msg = full.strip_suffix(&suffix).unwrap_or(&full);
        let kind = match e.classify() {
            serde_json::error::Category::Data => "invalid record",
            _ => "malformed JSON",
        };
        // An integer past 64 bits is read as a float, and serde's message then speaks of
        // a floating-point value where the record holds an integer: say what the limit is.
        let hint = if msg.starts_with("invalid type: floating point")
            && (msg.ends_with("expected u64") || msg.ends_with("expected i64"))
        {
            "; integers here must be whole numbers within 64 bits (ids and counts: 0 to \
             18446744073709551615; times: -9223372036854775808 to 9223372036854775807)"
        } else {
            ""
        };
        Error::invalid(
            with_id(at, id),
            format!("{kind}: {msg}{hint} (at column {})", e.column()),
        )
    })?;
    check_values(&t).map_err(|e| locate(e, &with_id(at, t.id)))?;
    Ok(t)
}

fn with_id(at: &str, id: Option<u64>) -> String {
    match id {
        Some(id) => format!("{at} (record id {id})"),
        None => at.to_owned(),
    }
}

/// Checks the values of a parsed record that JSON allows but trajdb does not.
fn check_values(t: &Trajectory) -> Result<()> {
    let finite = |at: String, v: &[f32]| check_components(&at, v);
    for (name, v) in &t.keys {
        finite(format!("keys.{name}"), v)?;
    }
    for (name, vs) in &t.step_keys {
        if vs.len() != t.steps.len() {
            return Err(Error::invalid(
                format!("step_keys.{name}"),
                format!(
                    "has {} vectors for {} steps; give one vector per step",
                    vs.len(),
                    t.steps.len()
                ),
            ));
        }
        for (i, v) in vs.iter().enumerate() {
            finite(format!("step_keys.{name}[{i}]"), v)?;
        }
    }
    for (i, s) in t.steps.iter().enumerate() {
        if s.reward.is_some_and(|r| !r.is_finite()) {
            return Err(Error::invalid(
                format!("steps[{i}].reward"),
                "is not a finite number",
            ));
        }
    }
    if t.outcome.reward.is_some_and(|r| !r.is_finite()) {
        return Err(Error::invalid("outcome.reward", "is not a finite number"));
    }
    Ok(())
}

/// Checks a record's keys against key spaces `spaces`: every key names a space of the right
/// level and dimensions, and every vector meets the numeric contract ([`check_vector`]).
/// Errors give the field path (`keys.goal`, `step_keys.observation[2]`); wrap them with
/// [`locate`].
pub fn check_keys(t: &Trajectory, spaces: &[SpaceDef]) -> Result<()> {
    let find = |field: &str, name: &str, level: Level| -> Result<&SpaceDef> {
        let Some(s) = spaces.iter().find(|s| s.name == name) else {
            let known: Vec<&str> = spaces.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::invalid(
                format!("{field}.{name}"),
                format!(
                    "no key space named `{name}` (the database has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        if s.level != level {
            return Err(Error::invalid(
                format!("{field}.{name}"),
                match s.level {
                    Level::Step => "is a step-level key space; give its vectors under step_keys",
                    Level::Trajectory => {
                        "is a trajectory-level key space; give its vector under keys"
                    }
                },
            ));
        }
        Ok(s)
    };
    let vector = |at: String, s: &SpaceDef, v: &[f32]| -> Result<()> {
        if u32::try_from(v.len()).ok() != Some(s.dims) {
            return Err(Error::invalid(
                at,
                format!(
                    "vector has {} dimensions but key space `{}` has {}",
                    v.len(),
                    s.name,
                    s.dims
                ),
            ));
        }
        check_vector(&at, s.metric, v)
    };
    for (name, v) in &t.keys {
        let s = find("keys", name, Level::Trajectory)?;
        vector(format!("keys.{name}"), s, v)?;
    }
    for (name, vs) in &t.step_keys {
        let s = find("step_keys", name, Level::Step)?;
        for (i, v) in vs.iter().enumerate() {
            vector(format!("step_keys.{name}[{i}]"), s, v)?;
        }
    }
    Ok(())
}

/// The level of text field `name` (one of [`TRAJECTORY_FIELDS`] or [`STEP_FIELDS`]).
pub fn field_level(name: &str) -> Option<Level> {
    if TRAJECTORY_FIELDS.contains(&name) {
        Some(Level::Trajectory)
    } else if STEP_FIELDS.contains(&name) {
        Some(Level::Step)
    } else {
        None
    }
}

/// The text of trajectory-level field `name`, or `None` if it is not one.
fn trajectory_text<'a>(t: &'a Trajectory, name: &str) -> Option<&'a str> {
    Some(match name {
        "goal" => &t.goal,
        "plan" => &t.plan,
        "category" => t.category.as_deref().unwrap_or(""),
        "task" => &t.task,
        _ => return None,
    })
}

/// The texts of step-level field `name`, one per step, or `None` if it is not one.
fn step_texts<'a>(t: &'a Trajectory, name: &str) -> Option<Vec<&'a str>> {
    let pick: fn(&crate::format::record::Step) -> &str = match name {
        "observation" => |s| &s.observation,
        "reasoning" => |s| &s.reasoning,
        "action" => |s| &s.action,
        _ => return None,
    };
    Some(t.steps.iter().map(pick).collect())
}

/// What [`embed_missing`] did for one key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filled {
    /// The record carries a key for the space already; nothing was done.
    Present,
    /// Keys were embedded from the text: this many vectors (1, or one per step).
    Added(usize),
    /// The text (or one step's text) has nothing to embed ([`Error::NothingToEmbed`]), so
    /// the record gets no key in this space rather than a made-up one; it is stored without
    /// it and is not found by searches of that space.
    NoFeatures,
}

/// How many vectors [`embed_missing`] would add for `space` (`Filled` without embedding):
/// the sizes an import checks before it writes. `space` must be named after a text field.
pub fn would_fill(t: &Trajectory, space: &SpaceDef) -> Result<Filled> {
    let featured = |s: &str| HashEmbedder::has_features(s);
    Ok(match space.level {
        Level::Trajectory => {
            if t.keys.contains_key(&space.name) {
                Filled::Present
            } else {
                let text =
                    trajectory_text(t, &space.name).ok_or_else(|| not_a_field(&space.name))?;
                if featured(text) {
                    Filled::Added(1)
                } else {
                    Filled::NoFeatures
                }
            }
        }
        Level::Step => {
            if t.step_keys.contains_key(&space.name) {
                Filled::Present
            } else {
                let texts = step_texts(t, &space.name).ok_or_else(|| not_a_field(&space.name))?;
                if texts.iter().all(|s| featured(s)) {
                    Filled::Added(texts.len())
                } else {
                    Filled::NoFeatures
                }
            }
        }
    })
}

/// Fills the key of `space` from the record's text when the record has none: the space is
/// named after a text field (see [`field_level`]) and `embedder` must be the one the space
/// records. A text without features (empty, or only punctuation or emoji) gets no key: see
/// [`Filled::NoFeatures`].
pub fn embed_missing(
    t: &mut Trajectory,
    space: &SpaceDef,
    embedder: &dyn Embedder,
) -> Result<Filled> {
    let id = embedder.id();
    if space.embedder.as_ref() != Some(&id) {
        return Err(Error::EmbedderMismatch {
            space: space.name.clone(),
            recorded: space
                .embedder
                .as_ref()
                .map_or_else(|| "none".to_owned(), ToString::to_string),
            given: id.to_string(),
        });
    }
    let filled = would_fill(t, space)?;
    if !matches!(filled, Filled::Added(_)) {
        return Ok(filled);
    }
    match space.level {
        Level::Trajectory => {
            let text = trajectory_text(t, &space.name).unwrap_or_default();
            let v = embedder.embed(text)?;
            t.keys.insert(space.name.clone(), v);
        }
        Level::Step => {
            let texts: Vec<&str> = step_texts(t, &space.name)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let vs = embedder.embed_batch(&texts)?;
            t.step_keys.insert(space.name.clone(), vs);
        }
    }
    Ok(filled)
}

fn not_a_field(name: &str) -> Error {
    Error::invalid(
        format!("key space `{name}`"),
        format!(
            "is not named after a text field, so its keys cannot be embedded from text (fields: {}; {})",
            TRAJECTORY_FIELDS.join(", "),
            STEP_FIELDS.join(", ")
        ),
    )
}

/// The key spaces among `spaces` that record this build's built-in [`HashEmbedder`] and are
/// named after a text field at their level, each with the embedder that fills it.
pub fn hash_spaces(spaces: &[SpaceDef]) -> Vec<(SpaceDef, HashEmbedder)> {
    spaces
        .iter()
        .filter(|s| field_level(&s.name) == Some(s.level))
        .filter_map(|s| {
            let e = HashEmbedder::new(s.dims).ok()?;
            (s.embedder.as_ref() == Some(&e.id())).then(|| (s.clone(), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::Metric;

    fn lines(input: &[u8], max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut r = LineReader::new(input, "t").with_max_line(max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line()? {
            let l = l.to_vec();
            out.push((r.line(), l));
        }
        Ok(out)
    }

    #[test]
    fn line_reader_numbers_lines_and_skips_blank_ones() {
        let got = lines(b"a\r\n\n  \nb\nc", 10).expect("ok");
        assert_eq!(
            got,
            vec![(1, b"a".to_vec()), (4, b"b".to_vec()), (5, b"c".to_vec())]
        );
    }

    #[test]
    fn line_reader_refuses_a_line_over_the_limit_with_its_number() {
        let e = lines(b"ok\n0123456789X\n", 10)
            .expect_err("must be refused")
            .to_string();
        assert!(
            e.contains("t line 2") && e.contains("limit of 10 bytes"),
            "{e}"
        );
        // Exactly at the limit is fine.
        assert_eq!(lines(b"0123456789\n", 10).expect("ok").len(), 1);
    }

    #[test]
    fn f32_overflow_is_refused_with_the_field_path() {
        let e = parse_record(
            br#"{"id":4,"goal":"g","keys":{"goal":[1,1e39]}}"#,
            "f line 1",
        )
        .expect_err("must be refused")
        .to_string();
        assert!(e.contains("f line 1 (record id 4), keys.goal[1]"), "{e}");
        assert!(e.contains("not a finite"), "{e}");
    }

    /// Issue 9 item 7: a file starting with a UTF-8 byte-order mark was refused as
    /// "malformed JSON at column 1".
    #[test]
    fn byte_order_mark_at_the_start_is_skipped_and_elsewhere_is_named() {
        let input = "\u{FEFF}{\"goal\":\"a\"}\n\u{FEFF}{\"goal\":\"b\"}\n";
        let mut r = LineReader::new(input.as_bytes(), "bom.jsonl");
        assert!(r.next_header().expect("ok").is_none());
        assert_eq!(r.next_record().expect("ok").expect("a record").goal, "a");
        let e = r.next_record().expect_err("refused").to_string();
        assert!(
            e.contains("bom.jsonl line 2") && e.contains("byte-order mark"),
            "{e}"
        );
        // A header line after a BOM is still a header.
        let input = "\u{FEFF}{\"trajdb_spaces\":[]}\n";
        let mut r = LineReader::new(input.as_bytes(), "h");
        assert_eq!(r.next_header().expect("ok"), Some(Vec::new()));
    }

    /// Issue 9 item 9: a line that is a JSON array was refused as "expected a string".
    #[test]
    fn a_line_that_is_not_a_json_object_says_so() {
        for (line, kind) in [
            ("[1,2]", "a JSON array"),
            ("[{\"goal\":\"x\"}]", "a JSON array"),
            ("\"text\"", "a JSON string"),
            ("42", "a JSON number"),
            ("null", "JSON null"),
            ("true", "a JSON boolean"),
            ("goal: x", "not JSON"),
        ] {
            let e = parse_record(line.as_bytes(), "f line 2")
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("f line 2")
                    && e.contains("each line must be a JSON object")
                    && e.contains(kind),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn missing_goal_names_the_field_and_the_record_id() {
        let e = parse_record(br#"{"id":9,"task":"t"}"#, "f line 3")
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("f line 3 (record id 9)"), "{e}");
        assert!(e.contains("missing field `goal`"), "{e}");
    }

    #[test]
    fn header_is_read_only_from_the_first_non_blank_line() {
        let input = "\n{\"trajdb_spaces\":[{\"name\":\"g\",\"level\":\"step\",\"dims\":2,\"metric\":\"l2\",\"elem\":\"f32\",\"embedder\":null}]}\n{\"goal\":\"a\"}\n";
        let mut r = LineReader::new(input.as_bytes(), "h");
        let spaces = r.next_header().expect("ok").expect("a header");
        assert_eq!(spaces, [SpaceDef::new("g", Level::Step, 2, Metric::L2)]);
        assert_eq!(r.next_record().expect("ok").expect("a record").goal, "a");
        // No header: the first line stays for next_record.
        let mut r = LineReader::new("{\"goal\":\"b\"}\n".as_bytes(), "h");
        assert!(r.next_header().expect("ok").is_none());
        assert_eq!(r.next_record().expect("ok").expect("a record").goal, "b");
        assert!(r.next_record().expect("ok").is_none());
        // A header after a record is refused by next_record with its line.
        let later = format!("{{\"goal\":\"c\"}}\n{input}");
        let mut r = LineReader::new(later.as_bytes(), "h");
        assert!(r.next_header().expect("ok").is_none());
        r.next_record().expect("ok");
        let e = r.next_record().expect_err("refused").to_string();
        assert!(
            e.contains("h line 3") && e.contains("first non-blank line"),
            "{e}"
        );
    }

    #[test]
    fn header_with_a_repeated_name_or_wrong_embedder_dims_is_refused() {
        let space = |name: &str, emb: u32| {
            format!("{{\"name\":\"{name}\",\"level\":\"trajectory\",\"dims\":4,\"metric\":\"dot\",\"elem\":\"f32\",\"embedder\":{{\"name\":\"e\",\"version\":\"1\",\"dims\":{emb}}}}}")
        };
        let line = |a: String, b: String| format!("{{\"trajdb_spaces\":[{a},{b}]}}");
        let e = parse_header(line(space("x", 4), space("x", 4)).as_bytes(), "f line 1")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("f line 1, trajdb_spaces[1]") && e.contains("twice"),
            "{e}"
        );
        let e = parse_header(line(space("x", 4), space("y", 8)).as_bytes(), "f line 1")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("trajdb_spaces[1]") && e.contains("makes 8"),
            "{e}"
        );
        let e = parse_header(br#"{"trajdb_spaces":[],"extra":1}"#, "f line 1")
            .expect_err("refused")
            .to_string();
        assert!(
            e.contains("invalid key-space header") && e.contains("extra"),
            "{e}"
        );
        assert!(
            parse_header(line(space("x", 4), space("y", 4)).as_bytes(), "f")
                .expect("ok")
                .is_some()
        );
    }

    /// Issue 9 item 13: text without features got a shared made-up vector. Such a record
    /// now gets no key in that space (flagged as `NoFeatures`), for a trajectory-level text
    /// and for a step whose text has none.
    #[test]
    fn embed_missing_gives_no_key_for_text_without_features() {
        let e = HashEmbedder::new(8).expect("ok");
        let plan =
            SpaceDef::new("plan", Level::Trajectory, 8, Metric::Cosine).with_embedder(e.id());
        let act = SpaceDef::new("action", Level::Step, 8, Metric::Cosine).with_embedder(e.id());
        let mut t = Trajectory {
            goal: "g".into(),
            plan: "🙂 ...".into(),
            steps: vec![Default::default(), Default::default()],
            ..Default::default()
        };
        t.steps[0].action = "boil".into();
        assert_eq!(
            embed_missing(&mut t, &plan, &e).expect("ok"),
            Filled::NoFeatures
        );
        assert_eq!(
            embed_missing(&mut t, &act, &e).expect("ok"),
            Filled::NoFeatures
        );
        assert!(t.keys.is_empty() && t.step_keys.is_empty());
    }

    #[test]
    fn embed_missing_fills_only_absent_keys_of_text_fields() {
        let e = HashEmbedder::new(8).expect("ok");
        let goal =
            SpaceDef::new("goal", Level::Trajectory, 8, Metric::Cosine).with_embedder(e.id());
        let obs =
            SpaceDef::new("observation", Level::Step, 8, Metric::Cosine).with_embedder(e.id());
        let mut t = Trajectory {
            goal: "make tea".into(),
            steps: vec![Default::default(), Default::default()],
            ..Default::default()
        };
        t.steps[0].observation = "a kettle".into();
        t.steps[1].observation = "hot water".into();
        assert_eq!(
            embed_missing(&mut t, &goal, &e).expect("ok"),
            Filled::Added(1)
        );
        assert_eq!(
            embed_missing(&mut t, &obs, &e).expect("ok"),
            Filled::Added(2)
        );
        assert_eq!(t.keys["goal"], e.embed("make tea").expect("ok"));
        assert_eq!(t.step_keys["observation"].len(), 2);
        assert_eq!(
            embed_missing(&mut t, &goal, &e).expect("ok"),
            Filled::Present
        );
        let other = HashEmbedder::new(4).expect("ok");
        assert!(embed_missing(&mut t, &goal, &other).is_err());
        assert_eq!(hash_spaces(&[goal.clone(), obs]).len(), 2);
    }
}

#[cfg(test)]
mod number_tests {
    use super::parse_record;

    #[test]
    fn an_integer_past_64_bits_is_refused_with_the_limit_not_a_float_type_error_alone() {
        for (field, value) in [
            ("id", "18446744073709551616"),
            ("created_ms", "100000000000000000000"),
        ] {
            let line = format!(r#"{{"{field}": {value}, "task": "t", "env": "e", "goal": "g"}}"#);
            let e = parse_record(line.as_bytes(), "line 1")
                .unwrap_err()
                .to_string();
            assert!(e.contains("within 64 bits"), "{field}: {e}");
            assert!(e.contains("line 1"), "{field}: {e}");
        }
        // A float where an integer belongs is a plain type error, without the hint.
        let e = parse_record(br#"{"id": 1.5, "task": "t", "env": "e", "goal": "g"}"#, "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("floating point"), "{e}");
    }
}
