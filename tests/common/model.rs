//! Model-based testing: random operation sequences run against the database on a
//! [`CrashBackend`] and against a plain in-memory model of what the database must hold.
//!
//! An operation picks its target by index (`pick % live`), so a sequence is plain data that
//! does not depend on the state it runs in and can be written down as a regression test.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use trajdb::index::kernels::reference;
use trajdb::storage::fault::{CrashBackend, SplitMix};
use trajdb::storage::Backend;
use trajdb::{
    Database, Durability, Filter, Metric, Outcome, RetrievalEvent, Stage, Trajectory, Utility,
};

use super::{create_spaces, opts, traj_for, GOAL_DIMS, OBS_DIMS};

/// One operation of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Appends `n` trajectories with fresh explicit ids.
    Append { n: u8 },
    /// Appends one trajectory without an id (the database assigns it).
    AppendAuto,
    /// Logs retrievals of the picked live trajectories (in a new episode when asked or
    /// when there is none).
    Retrieve {
        new_episode: bool,
        ep: u8,
        picks: Vec<u8>,
    },
    /// Sets the picked episode's outcome.
    EpisodeOutcome { ep: u8, outcome: Option<bool> },
    /// Relabels the picked trajectory.
    SetOutcome { pick: u8, success: Option<bool> },
    /// Deletes the picked trajectory.
    Delete { pick: u8 },
    /// Compacts.
    Compact,
    /// Forks into a fresh backend; continues on the fork when `switch`.
    Fork { switch: bool },
    /// Syncs.
    Sync,
    /// Crashes: keeps only synced bytes (and a torn tail when `torn`), then reopens.
    Crash {
        torn: bool,
        garbage: bool,
        seed: u64,
    },
    /// Closes and reopens.
    Reopen,
    /// Searches both key spaces and checks against brute force.
    Search {
        seed: u64,
        k: u8,
        success_only: bool,
    },
}

/// What the database must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Live trajectories in commit order.
    pub trajs: Vec<Trajectory>,
    /// Ids present in the log (live and deleted since the last compaction).
    pub log_ids: BTreeSet<u64>,
    /// Episodes: id -> (outcome, events).
    pub episodes: BTreeMap<u64, (Option<bool>, Vec<RetrievalEvent>)>,
    /// Ids below this are never assigned again (a compaction records its next id).
    pub id_floor: u64,
}

impl Model {
    fn live_ids(&self) -> Vec<u64> {
        self.trajs.iter().map(|t| t.id.unwrap_or(0)).collect()
    }

    fn utilities(&self) -> BTreeMap<u64, Utility> {
        let mut m: BTreeMap<u64, Utility> = BTreeMap::new();
        for (outcome, events) in self.episodes.values() {
            let mut seen = BTreeSet::new();
            for e in events {
                let u = m.entry(e.id).or_default();
                u.retrievals += 1;
                if seen.insert(e.id) {
                    u.episodes += 1;
                }
                if let Some(o) = outcome {
                    u.labelled_retrievals += 1;
                    u.success_retrievals += u64::from(*o);
                }
            }
        }
        m
    }

    /// The id an append without an id gets.
    fn next_auto_id(&self) -> u64 {
        self.log_ids.last().map_or(1, |m| m + 1).max(self.id_floor)
    }

    fn compact(&mut self) {
        self.id_floor = self.next_auto_id();
        let live: BTreeSet<u64> = self.live_ids().into_iter().collect();
        for (_, events) in self.episodes.values_mut() {
            events.retain(|e| live.contains(&e.id));
        }
        self.log_ids = live;
    }
}

/// A random sequence of `len` operations from `seed`.
pub fn gen_ops(seed: u64, len: usize) -> Vec<Op> {
    let mut r = SplitMix::new(seed);
    let mut ops = Vec::with_capacity(len);
    for _ in 0..len {
        let b = |r: &mut SplitMix| u8::try_from(r.below(256)).unwrap();
        let op = match r.below(100) {
            0..=29 => Op::Append {
                n: 1 + u8::try_from(r.below(3)).unwrap(),
            },
            30..=33 => Op::AppendAuto,
            34..=46 => Op::Retrieve {
                new_episode: r.below(3) == 0,
                ep: b(&mut r),
                picks: (0..1 + r.below(4)).map(|_| b(&mut r)).collect(),
            },
            47..=53 => Op::EpisodeOutcome {
                ep: b(&mut r),
                outcome: [Some(true), Some(false), None][usize::try_from(r.below(3)).unwrap()],
            },
            54..=58 => Op::SetOutcome {
                pick: b(&mut r),
                success: [Some(true), Some(false), None][usize::try_from(r.below(3)).unwrap()],
            },
            59..=66 => Op::Delete { pick: b(&mut r) },
            67..=70 => Op::Compact,
            71..=73 => Op::Fork {
                switch: r.below(2) == 0,
            },
            74..=77 => Op::Sync,
            78..=86 => Op::Crash {
                torn: r.below(2) == 0,
                garbage: r.below(2) == 0,
                seed: r.next_u64(),
            },
            87..=90 => Op::Reopen,
            _ => Op::Search {
                seed: r.next_u64(),
                k: 1 + u8::try_from(r.below(6)).unwrap(),
                success_only: r.below(2) == 0,
            },
        };
        ops.push(op);
    }
    ops
}

/// Durability for a sequence seed: all three modes are covered.
pub fn durability_for(seed: u64) -> Durability {
    match seed % 3 {
        0 => Durability::SyncEachCommit,
        1 => Durability::GroupCommit,
        _ => Durability::Buffered,
    }
}

/// Runs a sequence; panics with the step and a description on the first disagreement.
/// Returns the number of crashes and reopens checked.
pub fn run(ops: &[Op], durability: Durability) -> u64 {
    let mut backend = CrashBackend::new();
    let mut db = reopen(&backend, durability, "initial open");
    create_spaces(&db);
    db.sync().unwrap();
    let mut model = Model::default();
    // Model states since the last durable point, oldest first: after a crash the database
    // must equal one of them (a prefix of the unsynced history, never a part of a commit).
    let mut since_durable: Vec<Model> = vec![model.clone()];
    let mut next_id = 1u64;
    let mut checks = 0;
    for (step, op) in ops.iter().enumerate() {
        let at = format!("step {step} ({op:?}) durability {durability:?}");
        let mut durable_now = durability != Durability::Buffered;
        match op {
            Op::Append { n } => {
                for _ in 0..*n {
                    let id = next_id.max(model.next_auto_id());
                    next_id = id + 1;
                    let got = db
                        .append(&traj_for(id))
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(got, id, "{at}");
                    model.trajs.push(traj_for(id));
                    model.log_ids.insert(id);
                    if *n > 1 && !durable_now {
                        since_durable.push(model.clone());
                    }
                }
            }
            Op::AppendAuto => {
                let want = model.next_auto_id();
                let mut t = traj_for(want);
                t.id = None;
                let got = db.append(&t).unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(got, want, "{at}: assigned id");
                next_id = next_id.max(want + 1);
                model.trajs.push(traj_for(want));
                model.log_ids.insert(want);
            }
            Op::Retrieve {
                new_episode,
                ep,
                picks,
            } => {
                let live = model.live_ids();
                if live.is_empty() {
                    continue;
                }
                let ep_id = if *new_episode || model.episodes.is_empty() {
                    let want = model.episodes.keys().last().map_or(1, |m| m + 1);
                    let got = db.begin_episode().unwrap_or_else(|e| panic!("{at}: {e}"));
                    assert_eq!(got, want, "{at}: episode id");
                    model.episodes.insert(got, (None, Vec::new()));
                    if !durable_now {
                        since_durable.push(model.clone());
                    }
                    got
                } else {
                    *model
                        .episodes
                        .keys()
                        .nth(usize::from(*ep) % model.episodes.len())
                        .unwrap()
                };
                let events: Vec<RetrievalEvent> = picks
                    .iter()
                    .map(|p| {
                        let t = &model.trajs[usize::from(*p) % live.len()];
                        let n = u32::try_from(t.steps.len()).unwrap();
                        RetrievalEvent {
                            id: t.id.unwrap(),
                            step: (n > 0).then(|| u32::from(*p) % n),
                            stage: [Stage::Plan, Stage::Reason, Stage::Act, Stage::Other]
                                [usize::from(*p) % 4],
                        }
                    })
                    .collect();
                db.log_retrievals(ep_id, &events)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.episodes.get_mut(&ep_id).unwrap().1.extend(events);
            }
            Op::EpisodeOutcome { ep, outcome } => {
                if model.episodes.is_empty() {
                    continue;
                }
                let id = *model
                    .episodes
                    .keys()
                    .nth(usize::from(*ep) % model.episodes.len())
                    .unwrap();
                db.set_episode_outcome(id, *outcome)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.episodes.get_mut(&id).unwrap().0 = *outcome;
            }
            Op::SetOutcome { pick, success } => {
                if model.trajs.is_empty() {
                    continue;
                }
                let i = usize::from(*pick) % model.trajs.len();
                let o = Outcome {
                    success: *success,
                    reward: Some(f64::from(*pick)),
                };
                db.set_outcome(model.trajs[i].id.unwrap(), o)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                model.trajs[i].outcome = o;
            }
            Op::Delete { pick } => {
                if model.trajs.is_empty() {
                    continue;
                }
                let i = usize::from(*pick) % model.trajs.len();
                let id = model.trajs.remove(i).id.unwrap();
                db.delete(id).unwrap_or_else(|e| panic!("{at}: {e}"));
            }
            Op::Compact => {
                db.compact().unwrap_or_else(|e| panic!("{at}: {e}"));
                model.compact();
                durable_now = true;
                check(&db, &model, &at).unwrap_or_else(|e| panic!("{e}"));
            }
            Op::Fork { switch } => {
                let dst = CrashBackend::new();
                db.fork_into(&dst).unwrap_or_else(|e| panic!("{at}: {e}"));
                durable_now = true;
                let fork = reopen(&dst, durability, &at);
                check(&fork, &model, &format!("{at} (fork)")).unwrap_or_else(|e| panic!("{e}"));
                checks += 1;
                if *switch {
                    drop(db);
                    db = fork;
                    backend = dst;
                }
            }
            Op::Sync => {
                // Every other sync writes a checkpoint too (which syncs first), so crashes
                // land before, during and after checkpoints as well as between them.
                if step % 2 == 1 {
                    db.checkpoint()
                        .unwrap_or_else(|e| panic!("{at}: checkpoint: {e}"));
                } else {
                    db.sync().unwrap_or_else(|e| panic!("{at}: {e}"));
                }
                durable_now = true;
            }
            Op::Crash {
                torn,
                garbage,
                seed,
            } => {
                let after = if *torn {
                    backend.crash_torn(*seed, *garbage)
                } else {
                    backend.crash()
                };
                drop(db);
                backend = after;
                db = reopen(&backend, durability, &at);
                let mut errs = Vec::new();
                let mut found = None;
                for (i, m) in since_durable.iter().enumerate().rev() {
                    match check(&db, m, &at) {
                        Ok(()) => {
                            found = Some(i);
                            break;
                        }
                        Err(e) => errs.push(e),
                    }
                }
                let Some(i) = found else {
                    panic!(
                        "{at}: after the crash the database equals no state between the last durable one and the last commit:\n{}",
                        errs.join("\n")
                    );
                };
                if i + 1 != since_durable.len() {
                    // Lost unsynced commits: the model goes back to what survived.
                    model = since_durable[i].clone();
                    next_id = next_id.max(model.next_auto_id());
                }
                checks += 1;
                durable_now = true;
            }
            Op::Reopen => {
                drop(db);
                db = reopen(&backend, durability, &at);
                check(&db, &model, &at).unwrap_or_else(|e| panic!("{e}"));
                checks += 1;
                durable_now = true;
            }
            Op::Search {
                seed,
                k,
                success_only,
            } => {
                check_search(&db, &model, *seed, usize::from(*k), *success_only)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
            }
        }
        if durable_now {
            since_durable = vec![model.clone()];
        } else if since_durable.last() != Some(&model) {
            since_durable.push(model.clone());
        }
    }
    drop(db);
    let db = reopen(&backend, durability, "final reopen");
    check(&db, &model, "final reopen").unwrap_or_else(|e| panic!("{e}"));
    checks + 1
}

/// Opens that used a checkpoint file, and opens checked against a full scan (all threads).
pub static CHECKPOINT_OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Opens compared with a full scan of the same files.
pub static FULL_SCAN_CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn reopen(backend: &CrashBackend, durability: Durability, at: &str) -> Database {
    let b: Arc<dyn Backend> = Arc::new(backend.clone());
    let db = Database::open_backend(b, opts(durability))
        .unwrap_or_else(|e| panic!("{at}: the database does not open: {e}"));
    same_as_full_scan(&db, backend, at);
    db
}

/// The state `db` opened with (from a checkpoint or not) equals the state a read-only open
/// that ignores the checkpoint and scans the whole log (`verify_on_open`) builds from the
/// same files.
pub fn same_as_full_scan(db: &Database, backend: &CrashBackend, at: &str) {
    use std::sync::atomic::Ordering;
    let full = Database::open_backend(
        Arc::new(backend.clone()),
        trajdb::Options {
            read_only: true,
            verify_on_open: true,
            ..trajdb::Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{at}: the full-scan open fails: {e}"));
    assert_eq!(full.open_report().checkpoint_end, None, "{at}");
    let (got, want) = (db.state_digest(), full.state_digest());
    if got != want {
        let diff: Vec<String> = got
            .lines()
            .zip(want.lines())
            .filter(|(a, b)| a != b)
            .take(3)
            .map(|(a, b)| format!("  opened:    {a}\n  full scan: {b}"))
            .collect();
        panic!(
            "{at}: the state opened ({:?}) differs from a full scan:\n{}",
            db.open_report(),
            diff.join("\n")
        );
    }
    FULL_SCAN_CHECKS.fetch_add(1, Ordering::Relaxed);
    if db.open_report().checkpoint_end.is_some() {
        CHECKPOINT_OPENS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Compares everything observable with the model.
pub fn check(db: &Database, m: &Model, at: &str) -> Result<(), String> {
    let ids = db.ids();
    if ids != m.live_ids() {
        return Err(format!("{at}: ids {ids:?}, model {:?}", m.live_ids()));
    }
    let deleted = db.stats().deleted;
    let want_deleted = (m.log_ids.len() - m.trajs.len()) as u64;
    if deleted != want_deleted {
        return Err(format!(
            "{at}: {deleted} deleted trajectories in the log, model {want_deleted}"
        ));
    }
    for t in &m.trajs {
        let got = db
            .get(t.id.unwrap())
            .map_err(|e| format!("{at}: get: {e}"))?;
        if &got != t {
            return Err(format!(
                "{at}: trajectory differs:\n db    {got:?}\n model {t:?}"
            ));
        }
    }
    let utils: BTreeMap<u64, Utility> = db.utilities().into_iter().collect();
    let want = m.utilities();
    if utils != want {
        return Err(format!("{at}: utilities {utils:?}, model {want:?}"));
    }
    for (id, u) in &want {
        if db.utility(*id).q() != u.q() {
            return Err(format!("{at}: Q of {id} differs"));
        }
    }
    let eps: BTreeMap<u64, (Option<bool>, Vec<RetrievalEvent>)> = db
        .episodes()
        .into_iter()
        .map(|e| (e.id, (e.outcome, e.events)))
        .collect();
    if eps != m.episodes {
        return Err(format!("{at}: episodes {eps:?}, model {:?}", m.episodes));
    }
    db.verify().map_err(|e| format!("{at}: verify: {e}"))?;
    for seed in 0..2 {
        check_search(db, m, seed, 3, seed == 1).map_err(|e| format!("{at}: {e}"))?;
    }
    Ok(())
}

/// Checks `search` on both spaces against a brute-force scan of the model.
pub fn check_search(
    db: &Database,
    m: &Model,
    seed: u64,
    k: usize,
    success_only: bool,
) -> Result<(), String> {
    let mut r = SplitMix::new(seed);
    let mut q = |dims: u32| -> Vec<f32> {
        (0..dims)
            .map(|_| 0.05 + (r.below(1000) as f32) / 1000.0)
            .collect()
    };
    let filter = Filter {
        success_only,
        ..Default::default()
    };
    for (space, dims, metric) in [
        ("goal", GOAL_DIMS, Metric::Cosine),
        ("obs", OBS_DIMS, Metric::L2),
    ] {
        let query = q(dims);
        let mut want: Vec<(f32, u64, Option<u32>)> = Vec::new();
        for t in &m.trajs {
            if success_only && t.outcome.success != Some(true) {
                continue;
            }
            if space == "goal" {
                want.push((
                    reference(metric, &t.keys["goal"], &query),
                    t.id.unwrap(),
                    None,
                ));
            } else if let Some(rows) = t.step_keys.get("obs") {
                for (s, v) in rows.iter().enumerate() {
                    want.push((
                        reference(metric, v, &query),
                        t.id.unwrap(),
                        Some(u32::try_from(s).unwrap()),
                    ));
                }
            }
        }
        want.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = db
            .search(space, &query, k, &filter)
            .map_err(|e| format!("search {space}: {e}"))?;
        if hits.len() != want.len().min(k) {
            return Err(format!(
                "search {space}: {} hits, brute force {}",
                hits.len(),
                want.len().min(k)
            ));
        }
        for (i, h) in hits.iter().enumerate() {
            let Some(exp) = want.iter().find(|w| w.1 == h.id && w.2 == h.step) else {
                return Err(format!(
                    "search {space}: hit {h:?} is not a live qualifying row"
                ));
            };
            if (exp.0 - h.score).abs() > 1e-3 || (want[i].0 - h.score).abs() > 1e-3 {
                return Err(format!(
                    "search {space}: hit {i} {h:?}, brute force score {} and rank-{i} score {}",
                    exp.0, want[i].0
                ));
            }
        }
    }
    Ok(())
}

/// A sequence read from arbitrary bytes (for the fuzzer): 10 bytes per operation.
pub fn ops_from_bytes(data: &[u8]) -> (Vec<Op>, Durability) {
    let durability = durability_for(u64::from(data.first().copied().unwrap_or(0)));
    let mut ops = Vec::new();
    for c in data.get(1..).unwrap_or(&[]).chunks(10).take(64) {
        let mut b = [0u8; 10];
        b[..c.len()].copy_from_slice(c);
        let seed = u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
        let o3 = [Some(true), Some(false), None][usize::from(b[1] % 3)];
        let op = match b[0] % 100 {
            0..=29 => Op::Append { n: 1 + b[1] % 3 },
            30..=33 => Op::AppendAuto,
            34..=46 => Op::Retrieve {
                new_episode: b[1] & 1 == 1,
                ep: b[2],
                picks: b[3..3 + usize::from(b[1] % 4) + 1].to_vec(),
            },
            47..=53 => Op::EpisodeOutcome {
                ep: b[2],
                outcome: o3,
            },
            54..=58 => Op::SetOutcome {
                pick: b[2],
                success: o3,
            },
            59..=66 => Op::Delete { pick: b[1] },
            67..=70 => Op::Compact,
            71..=73 => Op::Fork {
                switch: b[1] & 1 == 1,
            },
            74..=77 => Op::Sync,
            78..=86 => Op::Crash {
                torn: b[1] & 1 == 1,
                garbage: b[1] & 2 == 2,
                seed,
            },
            87..=90 => Op::Reopen,
            _ => Op::Search {
                seed,
                k: 1 + b[1] % 6,
                success_only: b[1] & 8 == 8,
            },
        };
        ops.push(op);
    }
    (ops, durability)
}

/// What [`run_concurrent`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConcurrentFigures {
    /// Crash states opened and checked against the acknowledged commits.
    pub crashes: u64,
    /// Appends and deletes acknowledged under `GroupCommit`.
    pub acked: u64,
    /// Compactions completed beside them.
    pub compactions: u64,
    /// Whole-trajectory reads made by reader threads beside them.
    pub reads: u64,
}

/// Compaction in a loop beside two threads appending (and deleting some of what they
/// appended) under `GroupCommit`, and two reader threads, on a [`CrashBackend`]. Meanwhile
/// the main thread repeatedly takes what a power cut would leave and checks it: every
/// acknowledged append there, whole, every acknowledged delete gone, and it opens and
/// verifies. Runs for `secs` seconds.
pub fn run_concurrent(secs: f64, seed: u64) -> ConcurrentFigures {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    let backend = CrashBackend::new();
    let db = Arc::new(reopen(&backend, Durability::GroupCommit, "concurrent open"));
    create_spaces(&db);
    db.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    // Acknowledged appends and deletes, recorded only after the call returned Ok.
    let appended = Arc::new(Mutex::new(BTreeSet::new()));
    let deleted = Arc::new(Mutex::new(BTreeSet::new()));
    // Deletes begun (recorded before the call): such an id may be gone after a crash.
    let deleting = Arc::new(Mutex::new(BTreeSet::new()));
    let compactions = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (db, stop, next_id) = (db.clone(), stop.clone(), next_id.clone());
        let (appended, deleted, deleting) = (appended.clone(), deleted.clone(), deleting.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = SplitMix::new(seed ^ (w + 1));
            let mut mine = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                db.append(&traj_for(id)).unwrap();
                appended.lock().unwrap().insert(id);
                mine.push(id);
                if r.below(2) == 0 {
                    let victim =
                        mine.swap_remove(usize::try_from(r.below(mine.len() as u64)).unwrap());
                    deleting.lock().unwrap().insert(victim);
                    db.delete(victim).unwrap();
                    deleted.lock().unwrap().insert(victim);
                }
            }
        }));
    }
    {
        let (db, stop, compactions) = (db.clone(), stop.clone(), compactions.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                db.compact().unwrap();
                compactions.fetch_add(1, Ordering::SeqCst);
                // A pause lets appends run against each new log before it is replaced.
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    for _ in 0..2 {
        let (db, stop, reads) = (db.clone(), stop.clone(), reads.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = SplitMix::new(seed);
            while !stop.load(Ordering::SeqCst) {
                let ids = db.ids();
                if ids.is_empty() {
                    std::thread::yield_now();
                    continue;
                }
                let id = ids[usize::try_from(r.below(ids.len() as u64)).unwrap()];
                match db.get(id) {
                    Ok(t) => assert_eq!(t, traj_for(id), "reader: trajectory {id} differs"),
                    Err(trajdb::Error::NotFound { .. }) => {}
                    Err(e) => panic!("reader: get {id}: {e}"),
                }
                db.search("goal", &[0.5; GOAL_DIMS as usize], 3, &Filter::default())
                    .unwrap_or_else(|e| panic!("reader: search: {e}"));
                reads.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let start = Instant::now();
    let mut figures = ConcurrentFigures::default();
    let mut r = SplitMix::new(seed);
    while start.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_micros(100 + r.below(500)));
        // What was acknowledged before the power cut must be in what it leaves.
        let acked_appends = appended.lock().unwrap().clone();
        let acked_deletes = deleted.lock().unwrap().clone();
        let after = backend.crash();
        let maybe_deleted = deleting.lock().unwrap().clone();
        let db2 = reopen(&after, Durability::GroupCommit, "concurrent crash");
        let ids: BTreeSet<u64> = db2.ids().into_iter().collect();
        for id in &acked_appends {
            if !maybe_deleted.contains(id) {
                assert!(
                    ids.contains(id),
                    "crash {}: acknowledged trajectory {id} is lost",
                    figures.crashes
                );
            }
        }
        for id in &acked_deletes {
            assert!(
                !ids.contains(id),
                "crash {}: deleted trajectory {id} is back",
                figures.crashes
            );
        }
        for id in ids.iter().rev().take(8) {
            assert_eq!(db2.get(*id).unwrap(), traj_for(*id));
        }
        db2.verify()
            .unwrap_or_else(|e| panic!("crash {}: verify: {e}", figures.crashes));
        figures.crashes += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    figures.acked = (appended.lock().unwrap().len() + deleted.lock().unwrap().len()) as u64;
    figures.compactions = compactions.load(Ordering::SeqCst);
    figures.reads = reads.load(Ordering::SeqCst);
    figures
}

/// A maintenance step that [`fault_every_step`] fails at each of its I/O operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// `compact`, failures on the database's backend.
    Compact,
    /// `fork_into`, failures on the source backend (its pre-copy sync and checkpoint).
    ForkSource,
    /// `fork_into`, failures on the destination backend.
    ForkDestination,
    /// `sync`: the log sync and the key-file checkpoint.
    Checkpoint,
    /// `checkpoint`: the log sync, the key-file checkpoint and writing the checkpoint file.
    StateCheckpoint,
}

/// Figures of [`fault_every_step`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FaultFigures {
    /// Failures injected.
    pub injected: u64,
    /// States (after the failure, then after a crash) checked against the model.
    pub states: u64,
}

/// Content for seed `seed`, committed through `db` and recorded in a model: appends,
/// deletes, a relabel and episodes with retrievals and outcomes.
fn prepare(db: &Database, seed: u64) -> Model {
    let mut r = SplitMix::new(seed);
    let mut m = Model::default();
    let n = 3 + r.below(5);
    for id in 1..=n {
        db.append(&traj_for(id)).unwrap();
        m.trajs.push(traj_for(id));
        m.log_ids.insert(id);
    }
    for _ in 0..r.below(3) {
        let i = usize::try_from(r.below(m.trajs.len() as u64)).unwrap();
        let id = m.trajs.remove(i).id.unwrap();
        db.delete(id).unwrap();
    }
    let i = usize::try_from(r.below(m.trajs.len() as u64)).unwrap();
    let o = Outcome {
        success: Some(r.below(2) == 0),
        reward: Some(1.5),
    };
    db.set_outcome(m.trajs[i].id.unwrap(), o).unwrap();
    m.trajs[i].outcome = o;
    for _ in 0..1 + r.below(2) {
        let ep = db.begin_episode().unwrap();
        let id = m.trajs[usize::try_from(r.below(m.trajs.len() as u64)).unwrap()]
            .id
            .unwrap();
        let ev = RetrievalEvent {
            id,
            step: None,
            stage: Stage::Plan,
        };
        db.log_retrievals(ep, &[ev]).unwrap();
        let outcome = [Some(true), Some(false), None][usize::try_from(r.below(3)).unwrap()];
        db.set_episode_outcome(ep, outcome).unwrap();
        m.episodes.insert(ep, (outcome, vec![ev]));
    }
    m
}

/// For every I/O operation of `what` (and every kind of failure), fails that operation and
/// checks: the handle is switched or refuses writes (`PreviousIo`); an append it still
/// acknowledges survives a crash; after a crash the database opens and equals the model
/// (compacted or not, for a compaction cut short); a fork destination either opens with
/// the whole content or has no log and can be forked into again.
pub fn fault_every_step(what: Maintenance, seed: u64, durability: Durability) -> FaultFigures {
    use trajdb::storage::fault::{FailingBackend, Op as F};
    let mut fig = FaultFigures::default();
    for kind in [
        None,
        Some(F::Write),
        Some(F::Sync),
        Some(F::Rename),
        Some(F::Remove),
        Some(F::Open),
        Some(F::Read),
        Some(F::SetLen),
    ] {
        for n in 1..=200u64 {
            let crash = CrashBackend::new();
            let src_fail = FailingBackend::new(Arc::new(crash.clone()), kind, 0);
            let db = Database::open_backend(Arc::new(src_fail.clone()), super::opts(durability))
                .unwrap();
            create_spaces(&db);
            let model = prepare(&db, seed);
            let at = format!("{what:?} seed {seed} {kind:?} at {n}");
            let dst = CrashBackend::new();
            let dst_fail = FailingBackend::new(Arc::new(dst.clone()), kind, 0);
            let armed = if what == Maintenance::ForkDestination {
                &dst_fail
            } else {
                &src_fail
            };
            armed.fail_after(n);
            let r = match what {
                Maintenance::Compact => db.compact(),
                Maintenance::ForkSource | Maintenance::ForkDestination => db.fork_into(&dst_fail),
                Maintenance::Checkpoint => db.sync(),
                Maintenance::StateCheckpoint => db.checkpoint(),
            };
            if !armed.fired() {
                r.unwrap_or_else(|e| panic!("{at}: failed with nothing injected: {e}"));
                armed.fail_after(0);
                break;
            }
            fig.injected += 1;
            let mut candidates = vec![model.clone()];
            if what == Maintenance::Compact {
                let mut c = model.clone();
                c.compact();
                candidates.push(c);
            }
            // The handle: switched (writes work and are durable) or refusing writes.
            let id = model.next_auto_id().max(100);
            match db.append(&traj_for(id)) {
                Ok(_) => {
                    for c in &mut candidates {
                        c.trajs.push(traj_for(id));
                        c.log_ids.insert(id);
                    }
                }
                Err(trajdb::Error::PreviousIo) => {}
                Err(e) => panic!("{at}: append after the failure: {e}"),
            }
            let mut states = vec![crash.crash()];
            if what != Maintenance::ForkDestination {
                states.push(crash.crash_torn(n, true));
            }
            drop(db);
            for state in states {
                let db2 = reopen(&state, durability, &at);
                let errs: Vec<String> = candidates
                    .iter()
                    .filter_map(|c| check(&db2, c, &at).err())
                    .collect();
                assert!(
                    errs.len() < candidates.len(),
                    "{at}: after a crash the database equals no model state:\n{}",
                    errs.join("\n")
                );
                fig.states += 1;
            }
            if matches!(what, Maintenance::ForkSource | Maintenance::ForkDestination) {
                let after = dst.crash();
                let opened = Database::open_backend(
                    Arc::new(after.clone()),
                    trajdb::Options {
                        create: false,
                        ..super::opts(durability)
                    },
                );
                let fork = match opened {
                    Ok(f) => f,
                    Err(trajdb::Error::NotADatabase { .. }) => {
                        // No log: nothing half there; forking again must work.
                        let again = reopen(&crash.crash(), durability, &at);
                        again
                            .fork_into(&after)
                            .unwrap_or_else(|e| panic!("{at}: fork again: {e}"));
                        reopen(&after, durability, &at)
                    }
                    Err(e) => panic!("{at}: fork destination: {e}"),
                };
                let ok = candidates.iter().any(|c| check(&fork, c, &at).is_ok())
                    || check(&fork, &model, &at).is_ok();
                assert!(ok, "{at}: fork destination differs from the source");
                fig.states += 1;
            }
        }
    }
    fig
}
