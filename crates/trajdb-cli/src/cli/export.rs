//! `trajdb get` and `trajdb export`.

use std::io::{self, Write};

use trajdb::export::{chat_example, usage_lines};
use trajdb::jsonl::SpacesHeader;
use trajdb::Trajectory;

use super::progress::{self, Progress};
use super::{
    json_line, open_read, out_err, write_line, CliResult, ExportArgs, ExportFormat, GetArgs,
    InspectArgs,
};

/// `trajdb get DB ID`.
pub fn get(a: &GetArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let t = db.get(a.id)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.json {
        write_line(&mut out, &json_line(&t)?)?;
    } else {
        write_readable(&mut out, &t, a.full)?;
    }
    out.flush().map_err(out_err)
}

/// `trajdb inspect DB ID`: the trajectory as text a person reads top to bottom.
pub fn inspect(a: &InspectArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let t = db.get(a.id)?;
    let u = db.utility(a.id);
    let mut out = io::BufWriter::new(io::stdout().lock());
    for l in inspect_lines(&t, &u) {
        write_line(&mut out, &l)?;
    }
    out.flush().map_err(out_err)
}

/// The lines of `inspect`.
fn inspect_lines(t: &Trajectory, u: &trajdb::Utility) -> Vec<String> {
    let r = |s: &str| trajdb::export::readable(s, None);
    let mut where_ = vec![];
    for (k, v) in [("env", &t.env), ("task", &t.task)] {
        if !v.is_empty() {
            where_.push(format!("{k} {v}"));
        }
    }
    if let Some(c) = &t.category {
        where_.push(format!("category {c}"));
    }
    let mut lines = vec![format!(
        "Trajectory {}{}",
        t.id.unwrap_or_default(),
        if where_.is_empty() {
            String::new()
        } else {
            format!("  ({})", where_.join(", "))
        }
    )];
    lines.push(format!("Goal:      {}", r(&t.goal)));
    lines.push(format!(
        "Plan:      {}",
        if t.plan.is_empty() {
            "(none)".to_string()
        } else {
            r(&t.plan)
        }
    ));
    if t.steps.is_empty() {
        lines.push("Steps:     (none)".to_string());
    } else {
        lines.push(format!("Steps:     {}", t.steps.len()));
    }
    // Step numbers count from 0, as in `get`, `retrieve`, `search` and the API.
    let width = t.steps.len().saturating_sub(1).to_string().len();
    let pad = " ".repeat(width + 4);
    for (i, s) in t.steps.iter().enumerate() {
        lines.push(format!(
            "  {:>width$}. Observation: {}",
            i,
            r(&s.observation)
        ));
        if !s.reasoning.is_empty() {
            lines.push(format!("{pad}Thought:     {}", r(&s.reasoning)));
        }
        let reward = s
            .reward
            .map_or_else(String::new, |r| format!("   (reward {r})"));
        lines.push(format!("{pad}Action:      {}{reward}", r(&s.action)));
    }
    if !t.final_observation.is_empty() {
        lines.push(format!("Final:     {}", r(&t.final_observation)));
    }
    let outcome = match t.outcome.success {
        Some(true) => "success",
        Some(false) => "failure",
        None => "unknown",
    };
    let reward = t
        .outcome
        .reward
        .map_or_else(String::new, |r| format!(", reward {r}"));
    lines.push(format!("Outcome:   {outcome}{reward}"));
    let q = u.q().map_or_else(
        || "Q not known yet (no labelled episode retrieved it)".to_string(),
        |q| {
            format!(
                "Q = {q:.3} over {} labelled retrievals",
                u.labelled_retrievals
            )
        },
    );
    lines.push(format!(
        "Utility:   retrieved {} times in {} episodes; {q}",
        u.retrievals, u.episodes
    ));
    lines
}

fn write_readable(out: &mut impl Write, t: &Trajectory, full: bool) -> CliResult {
    let limit = (!full).then_some(trajdb::export::READABLE_FIELD_CHARS);
    let r = |s: &str| trajdb::export::readable(s, limit);
    let outcome = match t.outcome.success {
        Some(true) => "success",
        Some(false) => "failure",
        None => "unknown",
    };
    let reward = t
        .outcome
        .reward
        .map_or_else(String::new, |r| format!(", reward {r}"));
    let mut lines = vec![
        format!("id           {}", t.id.unwrap_or_default()),
        format!("env          {}", r(&t.env)),
        format!("task         {}", r(&t.task)),
    ];
    if let Some(c) = &t.category {
        lines.push(format!("category     {}", r(c)));
    }
    lines.push(format!("outcome      {outcome}{reward}"));
    let p = &t.provenance;
    let mut prov = serde_json::to_value(p.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if let Some(parent) = p.parent {
        prov.push_str(&format!(" from {parent}"));
    }
    if let Some((a, b)) = p.steps {
        prov.push_str(&format!(" steps {a}..{b}"));
    }
    lines.push(format!("provenance   {prov}"));
    lines.push(format!("created_ms   {}", t.created_ms));
    lines.push(format!("goal         {}", r(&t.goal)));
    if !t.plan.is_empty() {
        lines.push(format!("plan         {}", r(&t.plan)));
    }
    for (k, v) in &t.meta {
        lines.push(format!("meta.{}  {}", r(k), r(v)));
    }
    for (i, s) in t.steps.iter().enumerate() {
        lines.push(format!("step {i}"));
        lines.push(format!("  observation  {}", r(&s.observation)));
        if !s.reasoning.is_empty() {
            lines.push(format!("  reasoning    {}", r(&s.reasoning)));
        }
        lines.push(format!("  action       {}", r(&s.action)));
        if let Some(r) = s.reward {
            lines.push(format!("  reward       {r}"));
        }
    }
    if !t.final_observation.is_empty() {
        lines.push(format!("final        {}", r(&t.final_observation)));
    }
    let mut keys: Vec<String> = t
        .keys
        .iter()
        .map(|(k, v)| format!("{} ({} dims)", r(k), v.len()))
        .collect();
    keys.extend(t.step_keys.iter().map(|(k, vs)| {
        format!(
            "{} ({} steps x {} dims)",
            r(k),
            vs.len(),
            vs.first().map_or(0, Vec::len)
        )
    }));
    if !keys.is_empty() {
        lines.push(format!("keys         {}", keys.join(", ")));
    }
    for l in lines {
        write_line(out, &l)?;
    }
    Ok(())
}

/// `trajdb export DB --parquet FILE`.
#[cfg(feature = "parquet")]
fn export_parquet(db: &trajdb::Database, path: &std::path::Path, a: &ExportArgs) -> CliResult {
    let opts = super::parquet::ExportOpts {
        chat: a.format == ExportFormat::Chat,
        with_utility: a.with_utility,
        success_only: a.success_only,
    };
    let bar = Progress::bar(db.ids().len() as u64, "exporting", false);
    let (rows, skipped) = super::parquet::export(db, path, &opts, &bar)?;
    bar.finish();
    let mut note = format!("trajdb: wrote {rows} rows to {}", path.display());
    if skipped > 0 {
        note.push_str(&format!(
            "; skipped {skipped} trajectories without steps (no assistant turn to export)"
        ));
    }
    progress::note(&note);
    Ok(())
}

/// `trajdb export DB --usage --parquet DIR`.
#[cfg(feature = "parquet")]
fn export_usage_parquet(db: &trajdb::Database, dir: &std::path::Path) -> CliResult {
    let bar = Progress::bar(db.stats().episodes, "exporting usage", false);
    let (events, episodes) = super::parquet::export_usage(db, dir, &bar)?;
    bar.finish();
    progress::note(&format!(
        "trajdb: wrote {events} retrieval events to {} and {episodes} episodes to {}",
        dir.join("retrievals.parquet").display(),
        dir.join("episodes.parquet").display()
    ));
    Ok(())
}

/// Without the `parquet` feature `--usage --parquet` is refused.
#[cfg(not(feature = "parquet"))]
fn export_usage_parquet(_: &trajdb::Database, _: &std::path::Path) -> CliResult {
    Err("--parquet: this trajdb was built without Parquet support (build with `cargo build --release --features parquet`)"
        .to_string()
        .into())
}

/// Without the `parquet` feature `--parquet` is refused.
#[cfg(not(feature = "parquet"))]
fn export_parquet(_: &trajdb::Database, _: &std::path::Path, _: &ExportArgs) -> CliResult {
    Err("--parquet: this trajdb was built without Parquet support (build with `cargo build --release --features parquet`)"
        .to_string()
        .into())
}

/// `trajdb export DB`.
pub fn export(a: &ExportArgs) -> CliResult {
    // Salvage reads each record on its own (checked as it is read); otherwise the whole log
    // is checked first, so a damaged one stops the export before any output.
    let db = if a.skip_damaged {
        super::open_read_quiet(&a.db, false).map_err(|super::Failure(m)| {
            if m.contains("a valid frame follows") {
                super::Failure(format!(
                    "{m}\n--skip-damaged cannot read past this damage: no checkpoint covers it, so the log cannot be opened beyond it. Copy the database directory first; `trajdb repair --force` then keeps every commit before the damage"
                ))
            } else {
                super::Failure(m)
            }
        })?
    } else {
        super::open_read_quiet(&a.db, true)?
    };
    // Damaged frames at the end of the log that its checkpoint records as committed: the
    // open ignored them, so what they held is not among the ids.
    let lost_tail = super::lost_commits(&db);
    if !a.skip_damaged {
        super::refuse_lost_commits(&a.db, &db, "nothing was exported")?;
    }
    if lost_tail.is_none() {
        super::warn_open(&a.db, &db);
    }
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    if a.usage {
        if let Some(dir) = &a.parquet {
            return export_usage_parquet(&db, dir);
        }
        for l in usage_lines(&db) {
            write_line(&mut out, &json_line(&l)?)?;
        }
        return out.flush().map_err(out_err);
    }
    if let Some(path) = &a.parquet {
        return export_parquet(&db, path, a);
    }
    if a.with_spaces && a.format != ExportFormat::Jsonl {
        return Err(
            "--with-spaces: only applies to --format jsonl (chat examples carry no keys)"
                .to_string()
                .into(),
        );
    }
    if a.with_spaces {
        // The key spaces first, so that `import` rebuilds them exactly.
        let header = SpacesHeader {
            trajdb_spaces: db.spaces(),
        };
        write_line(&mut out, &json_line(&header)?)?;
    }
    let mut skipped = 0u64;
    let mut damaged: Vec<(u64, String)> = Vec::new();
    let ids = db.ids();
    let bar = Progress::bar(ids.len() as u64, "exporting", false);
    for id in ids {
        bar.inc(1);
        let t = match db.get(id) {
            Ok(t) => t,
            Err(e) if a.skip_damaged => {
                eprintln!("trajdb: skipped trajectory {id}: {e}");
                damaged.push((id, e.to_string()));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if a.success_only && t.outcome.success != Some(true) {
            continue;
        }
        match a.format {
            ExportFormat::Jsonl => write_line(&mut out, &json_line(&t)?)?,
            ExportFormat::Chat => match chat_example(&t) {
                Some(ex) => write_line(&mut out, &json_line(&ex)?)?,
                None => skipped += 1,
            },
        }
    }
    out.flush().map_err(out_err)?;
    bar.finish();
    if skipped > 0 && !progress::quiet() {
        eprintln!(
            "trajdb: skipped {skipped} trajectories without steps (no assistant turn to export)"
        );
    }
    let mut failures = Vec::new();
    if !damaged.is_empty() {
        let ids: Vec<String> = damaged.iter().map(|(id, _)| id.to_string()).collect();
        failures.push(format!(
            "{} damaged {} skipped (ids {})",
            damaged.len(),
            if damaged.len() == 1 {
                "trajectory was"
            } else {
                "trajectories were"
            },
            ids.join(", ")
        ));
    }
    failures.extend(lost_tail);
    if !failures.is_empty() {
        return Err(super::Failure(format!(
            "{}; every other trajectory was exported",
            failures.join("; ")
        )));
    }
    // A damaged tail no checkpoint vouches for (the open's warning named it) is what
    // `verify` would find; otherwise damage elsewhere in the log (a key-space definition, a
    // usage event) lost nothing exported, but is said, not hidden.
    if a.skip_damaged && db.open_report().truncated_bytes == 0 {
        if let Err(e) = db.verify() {
            eprintln!(
                "trajdb: every trajectory was exported; the log is damaged where it holds no trajectory: {e}"
            );
        }
    }
    Ok(())
}
