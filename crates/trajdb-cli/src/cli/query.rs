//! `trajdb search` and `trajdb stats`.

use std::fs::File;
use std::io::{self, Read, Write};

use trajdb::export::utility_lines;
use trajdb::jsonl::MAX_LINE_BYTES;
use trajdb::{Embedder, EmbedderId, Error, Filter, HashEmbedder, SpaceDef};

use super::{
    describe, json_line, open_read, out_err, write_line, CliResult, SearchArgs, StatsArgs,
};

/// Parses a JSON array of numbers into an f32 vector; `what` names it in errors.
fn parse_vector(text: &str, what: &str) -> CliResult<Vec<f32>> {
    let v: Vec<f32> = serde_json::from_str(text).map_err(|e| {
        Error::invalid(
            what,
            format!("is not a JSON array of numbers ({e}); write it like [0.1, -0.2, 0.3]"),
        )
    })?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            format!("{what}[{i}]"),
            "value is not a finite 32-bit float (it overflows f32)",
        )
        .into());
    }
    Ok(v)
}

/// The query vector and, for `--text`, the embedder that made it.
fn query_vector(a: &SearchArgs, space: &SpaceDef) -> CliResult<(Vec<f32>, Option<EmbedderId>)> {
    if let Some(v) = &a.query.vector {
        return Ok((parse_vector(v, "--vector")?, None));
    }
    if let Some(path) = &a.query.vector_file {
        let what = path.display().to_string();
        let f = File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
        let mut text = String::new();
        f.take(MAX_LINE_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read {what} as UTF-8 text: {e}"))?;
        if text.len() > MAX_LINE_BYTES {
            return Err(format!(
                "{what} is longer than the limit of {MAX_LINE_BYTES} bytes for a query vector"
            )
            .into());
        }
        // A byte-order mark at the start is skipped, as in JSONL input.
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        return Ok((parse_vector(text, &what)?, None));
    }
    let text = a.query.text.as_deref().unwrap_or_default();
    let Some(recorded) = &space.embedder else {
        return Err(format!(
            "key space `{}` records no embedder, so --text cannot be embedded for it; give the query with --vector or --vector-file",
            space.name
        )
        .into());
    };
    let e = HashEmbedder::new(space.dims)?;
    if e.id() != *recorded {
        return Err(format!(
            "key space `{}` holds keys from embedder {recorded}, but --text can only embed with the built-in {}; give a vector made by {} with --vector or --vector-file",
            space.name,
            e.id(),
            recorded.name
        )
        .into());
    }
    Ok((e.embed(text)?, Some(e.id())))
}

fn clip(s: &str, n: usize) -> String {
    let one_line =
        trajdb::export::readable(&s.split_whitespace().collect::<Vec<_>>().join(" "), None);
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut c: String = one_line.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// `trajdb search`.
pub fn search(a: &SearchArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let space = db
        .spaces()
        .into_iter()
        .find(|s| s.name == a.space)
        .ok_or_else(|| Error::UnknownSpace {
            name: a.space.clone(),
        })?;
    let (v, embedder) = query_vector(a, &space)?;
    let filter = Filter {
        success_only: a.success_only,
        env: a.env.clone(),
        task: a.task.clone(),
        ..Filter::default()
    };
    let k = usize::try_from(a.k).map_err(|_| format!("-k {} is too large", a.k))?;
    let hits = if a.per_trajectory {
        db.search_per_trajectory(&a.space, &v, k, &filter, embedder.as_ref())?
    } else {
        db.search_as(&a.space, &v, k, &filter, embedder.as_ref())?
    };
    let mut out = io::stdout().lock();
    if a.json {
        write_line(&mut out, &json_line(&hits)?)?;
    } else {
        write_line(
            &mut out,
            &format!(
                "{:>4}  {:>8}  {:>5}  {:>9}  {:<7}  goal",
                "rank", "id", "step", "score", "outcome"
            ),
        )?;
        for (i, h) in hits.iter().enumerate() {
            let t = db.get(h.id)?;
            let outcome = match t.outcome.success {
                Some(true) => "success",
                Some(false) => "failure",
                None => "unknown",
            };
            let step = h.step.map_or_else(|| "-".to_owned(), |s| s.to_string());
            write_line(
                &mut out,
                &format!(
                    "{:>4}  {:>8}  {:>5}  {:>9.4}  {:<7}  {}",
                    i + 1,
                    h.id,
                    step,
                    h.score,
                    outcome,
                    clip(&t.goal, 60)
                ),
            )?;
        }
        if hits.is_empty() {
            write_line(&mut out, "(no matches)")?;
        }
    }
    out.flush().map_err(out_err)
}

/// `trajdb stats`.
pub fn stats(a: &StatsArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.utility {
        let lines = utility_lines(&db);
        if !a.json {
            write_line(
                &mut out,
                &format!(
                    "{:>8}  {:>10}  {:>8}  {:>6}",
                    "id", "retrievals", "episodes", "q"
                ),
            )?;
        }
        for l in &lines {
            if a.json {
                write_line(&mut out, &json_line(l)?)?;
            } else {
                let q = l.q.map_or_else(|| "-".to_owned(), |q| format!("{q:.3}"));
                write_line(
                    &mut out,
                    &format!(
                        "{:>8}  {:>10}  {:>8}  {:>6}",
                        l.id, l.retrievals, l.episodes, q
                    ),
                )?;
            }
        }
        return out.flush().map_err(out_err);
    }
    let mut s = db.stats();
    // A read-only handle keeps keys on the heap: take key-file sizes from the directory.
    for (i, sp) in s.spaces.iter_mut().enumerate() {
        if sp.file_bytes == 0 {
            let name = u32::try_from(i).map(trajdb::index::keyfile::key_file_name);
            if let Ok(m) = name.map(|n| std::fs::metadata(a.db.join(n))) {
                sp.file_bytes = m.map_or(0, |m| m.len());
            }
        }
    }
    if a.json {
        write_line(&mut out, &json_line(&s)?)?;
        return out.flush().map_err(out_err);
    }
    let rows = [
        ("trajectories", s.trajectories),
        ("steps", s.steps),
        ("successes", s.successes),
        ("deleted", s.deleted),
        ("episodes", s.episodes),
        ("commit seq", s.commit_seq),
        ("log bytes", s.log_bytes),
    ];
    for (k, v) in rows {
        write_line(&mut out, &format!("{k:<13} {v}"))?;
    }
    write_line(&mut out, &format!("key spaces    {}", s.spaces.len()))?;
    for sp in &s.spaces {
        write_line(
            &mut out,
            &format!(
                "  {}: {} rows ({} live), key file {} bytes",
                describe(&sp.def),
                sp.rows,
                sp.live_rows,
                sp.file_bytes
            ),
        )?;
    }
    out.flush().map_err(out_err)
}
