//! `trajdb get` and `trajdb export`.

use std::io::{self, Write};

use trajdb::export::{chat_example, usage_lines};
use trajdb::jsonl::SpacesHeader;
use trajdb::Trajectory;

use super::{
    json_line, open_read, out_err, write_line, CliResult, ExportArgs, ExportFormat, GetArgs,
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

/// `trajdb export DB`.
pub fn export(a: &ExportArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    if a.usage {
        for l in usage_lines(&db) {
            write_line(&mut out, &json_line(&l)?)?;
        }
        return out.flush().map_err(out_err);
    }
    if a.format == ExportFormat::Jsonl {
        // The key spaces first, so that `import` rebuilds them exactly.
        let header = SpacesHeader {
            trajdb_spaces: db.spaces(),
        };
        write_line(&mut out, &json_line(&header)?)?;
    }
    let mut skipped = 0u64;
    for id in db.ids() {
        let t = db.get(id)?;
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
    if skipped > 0 {
        eprintln!(
            "trajdb: skipped {skipped} trajectories without steps (no assistant turn to export)"
        );
    }
    Ok(())
}
