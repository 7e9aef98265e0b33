//! `trajdb verify`, `compact`, `repair`, `fork` and `delete`.

use std::path::Path;

use trajdb::{Database, Durability};

use super::progress::{note, Progress};
use super::{open_read_as, open_write, CliResult};

/// `trajdb verify DB`: read-only, so it runs beside a writer and never repairs anything.
pub fn verify(db: &Path) -> CliResult {
    let d = open_read_as(db, false)?;
    let spin = Progress::spinner("verifying");
    let r = d.verify()?;
    spin.finish();
    let torn = d.open_report();
    let s = d.stats();
    let stale = if r.stale_graphs.is_empty() {
        String::new()
    } else {
        format!(
            "; graph files not used (they index other rows; `trajdb build-graph` rebuilds them): {}",
            r.stale_graphs.join("; ")
        )
    };
    println!(
        "ok: {} frames, {} trajectory records, {} key rows checked against the log, {} key-file rows checked on disk, {} graph nodes checked; {} live trajectories, {} key space{}{}{stale}",
        r.frames,
        r.trajectories,
        r.rows,
        r.key_file_rows,
        r.graph_rows,
        s.trajectories,
        s.spaces.len(),
        if s.spaces.len() == 1 { "" } else { "s" },
        if torn.truncated_bytes > 0 {
            format!(
                " ({} bytes of torn tail after the last commit will be cut by the next writer)",
                torn.truncated_bytes
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

fn size(d: &Database) -> (u64, u64) {
    let s = d.stats();
    (s.log_bytes, s.spaces.iter().map(|s| s.file_bytes).sum())
}

/// `trajdb repair DB [--force]`: cuts the log at its first damaged frame, then opens the
/// database so key files are rebuilt, and says what was kept and cut. When valid commits
/// follow the damage (open refuses the log as corrupt), it refuses unless `force`: those
/// commits would be cut with the damage, and a flipped byte at rest should not silently cost
/// every later commit.
pub fn repair(db: &Path, force: bool) -> CliResult {
    // A plain read-only open reads the checkpoint, so it sees a log cut below it (frames
    // that had been synced are gone), which the cut below would otherwise hide for good.
    let first = Database::open(
        db,
        trajdb::Options {
            read_only: true,
            create: false,
            ..trajdb::Options::default()
        },
    )
    .ok()
    .map(|p| p.open_report().clone());
    let cut_before = first.as_ref().and_then(|r| r.log_cut_at);
    if !force {
        if let Some(r) = first.as_ref().filter(|r| r.damaged_committed_end.is_some()) {
            let len = std::fs::metadata(db.join("log")).map_or(0, |m| m.len());
            let at = len.saturating_sub(r.truncated_bytes);
            return Err(format!(
                "{}: the log's last {} bytes, from byte {at}, are damaged, and its checkpoint records them as committed: damage at rest, not a torn write. Nothing was written. Restore the log from a copy if you have one, or salvage the other trajectories with `trajdb export --skip-damaged --with-spaces`; rerun with --force to cut them (the bytes are kept in log.cut-{at}; the loss is then permanent)",
                db.display(),
                r.truncated_bytes
            )
            .into());
        }
        if let Some((len, covered)) = cut_before {
            return Err(format!(
                "{}: the log ends at byte {len} but its checkpoint recorded commits up to byte {covered}: committed frames were cut from the end of the log (a log restored from an older copy, or truncated). Nothing was written. Restore the log from a copy if you have one; rerun with --force to go on without those commits (the loss is then permanent)",
                db.display()
            )
            .into());
        }
        let probe = Database::open(
            db,
            trajdb::Options {
                read_only: true,
                create: false,
                // Scan the whole log: a checkpoint would let damage it covers go unseen.
                verify_on_open: true,
                ..trajdb::Options::default()
            },
        );
        if let Err(trajdb::Error::Corrupt { offset, .. }) = probe {
            let len = std::fs::metadata(db.join("log")).map_or(0, |m| m.len());
            return Err(format!(
                "{}: valid commits follow the damaged frame at byte {offset}; repair would remove them with it ({} bytes, to the end of the log). Copy the database first (trajdb fork cannot read it; use cp -r), then rerun with --force to cut there (the bytes are kept in log.cut-{offset})",
                db.display(),
                len.saturating_sub(offset)
            )
            .into());
        }
    }
    let r = Database::repair(db)?;
    let d = super::open_write_with(db, Durability::SyncEachCommit, force)?;
    let s = d.stats();
    let lost = r
        .checkpoint_lost
        .map(|(seq, end)| (end, Some(seq)))
        .or(cut_before.map(|(_, covered)| (covered, None)));
    if let Some((covered, seq)) = lost {
        let upto = seq.map_or_else(String::new, |q| format!(" (commit {q})"));
        println!(
            "gave up the commits the checkpoint recorded up to byte {covered}{upto} that the log no longer holds: kept {} live trajectories, last commit {}",
            s.trajectories, s.commit_seq
        );
    }
    match r.cut_at {
        None if lost.is_some() => {}
        None => println!(
            "nothing to repair: every frame of the log checks ({} live trajectories)",
            s.trajectories
        ),
        Some(at) => println!(
            "cut the log at byte {at}: {} bytes removed{}; kept {} live trajectories (last commit {})",
            r.cut_bytes,
            r.cut_file
                .map(|f| format!(" and saved to {}", db.join(f).display()))
                .unwrap_or_default(),
            s.trajectories,
            s.commit_seq
        ),
    }
    Ok(())
}

/// `trajdb compact DB`.
pub fn compact(db: &Path) -> CliResult {
    let d = open_write(db, Durability::SyncEachCommit)?;
    let (log0, keys0) = size(&d);
    let deleted = d.stats().deleted;
    let spin = Progress::spinner("compacting");
    d.compact()?;
    // Rebuilt search bounds for the new log, saved when the handle closes.
    d.build_search_bounds();
    spin.finish();
    let (log1, keys1) = size(&d);
    println!(
        "compacted {}: removed {deleted} deleted trajectories; log {log0} -> {log1} bytes, key files {keys0} -> {keys1} bytes",
        db.display()
    );
    Ok(())
}

/// `trajdb fork DB DST`.
pub fn fork(db: &Path, dst: &Path) -> CliResult {
    let d = open_write(db, Durability::SyncEachCommit)?;
    let spin = Progress::spinner("forking");
    d.fork(dst)?;
    spin.finish();
    note(&format!(
        "trajdb: forked {} into {}",
        db.display(),
        dst.display()
    ));
    Ok(())
}

/// `trajdb delete DB ID`.
pub fn delete(db: &Path, id: u64) -> CliResult {
    let d = open_write(db, Durability::SyncEachCommit)?;
    d.delete(id)?;
    note(&format!(
        "trajdb: deleted trajectory {id} (run `trajdb compact` to reclaim its space)"
    ));
    Ok(())
}

/// `trajdb build-graph DB --space NAME [--m M] [--ef-construction EF] [--drop]`.
pub fn build_graph(a: &super::BuildGraphArgs) -> CliResult {
    let d = open_write(&a.db, Durability::SyncEachCommit)?;
    if a.drop {
        let had = d.graph_status(&a.space)?.is_some();
        d.drop_graph(&a.space)?;
        note(&if had {
            format!("trajdb: dropped the graph index of key space `{}`", a.space)
        } else {
            format!(
                "trajdb: key space `{}` had no graph index; nothing to drop",
                a.space
            )
        });
        return Ok(());
    }
    let params = trajdb::GraphParams {
        m: usize::try_from(a.m).map_err(|_| format!("--m {} is too large", a.m))?,
        ef_construction: usize::try_from(a.ef_construction)
            .map_err(|_| format!("--ef-construction {} is too large", a.ef_construction))?,
    };
    let spin = Progress::spinner("building the graph index");
    let st = d.build_graph(&a.space, params)?;
    spin.finish();
    println!(
        "graph index of key space `{}`: {} of {} rows, m {}, ef_construction {}",
        a.space, st.nodes, st.rows, st.params.m, st.params.ef_construction
    );
    Ok(())
}

/// `trajdb merge DST SRC...`: checks every source first (an incompatible one is refused with
/// one line and nothing is written), then merges them in order.
pub fn merge(a: &super::MergeArgs) -> CliResult {
    let mut srcs = Vec::with_capacity(a.sources.len());
    for p in &a.sources {
        // Full checking as it opens (a merge reads every commit anyway), so a damaged source
        // is refused before the destination is created or written.
        let src = super::open_read_quiet(p, true)?;
        super::refuse_lost_commits(p, &src, "nothing was merged")?;
        super::warn_open(p, &src);
        srcs.push(src);
    }
    let refs: Vec<&Database> = srcs.iter().collect();
    // The sources fit together before a new destination is created, and fit the
    // destination before anything is written to it.
    if !a.dst.join("log").exists() {
        Database::check_sources(&refs)?;
    }
    let dst = super::open_create(&a.dst, Durability::SyncEachCommit)?;
    dst.check_merge(&refs)?;
    for (path, src) in a.sources.iter().zip(&refs) {
        let spin = Progress::spinner("merging");
        let r = dst.merge_from(src)?;
        spin.finish();
        if a.json {
            let line = serde_json::json!({ "source": path.display().to_string(), "report": r });
            super::write_line(&mut std::io::stdout().lock(), &line.to_string())?;
        } else {
            println!(
                "merged {}: {} trajectories added ({} already there, {} relabelled), {} episodes begun, {} retrievals added{}, {} episode outcomes set; {} commits",
                path.display(),
                r.trajectories,
                r.trajectories_present,
                r.trajectory_outcomes,
                r.episodes,
                r.retrievals,
                if r.retrievals_skipped > 0 {
                    format!(
                        " ({} skipped: their trajectory was deleted in the source before it was merged)",
                        r.retrievals_skipped
                    )
                } else {
                    String::new()
                },
                r.episode_outcomes,
                r.commits
            );
        }
    }
    let s = dst.stats();
    note(&format!(
        "trajdb: {} now holds {} trajectories and {} episodes",
        a.dst.display(),
        s.trajectories,
        s.episodes
    ));
    Ok(())
}
