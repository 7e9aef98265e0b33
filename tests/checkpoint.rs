//! The checkpoint file: open reads it and only the log after it, with the same state a full
//! scan builds; a stale, foreign, damaged or half-written checkpoint is ignored (with the
//! reason in the open report) and the log is scanned instead.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{create_spaces, traj_for};
use trajdb::checkpoint::{CHECKPOINT_FILE, CHECKPOINT_HEADER_LEN};
use trajdb::storage::fault::CrashBackend;
use trajdb::storage::{Backend, MemBackend};
use trajdb::{Database, Durability, Options, Outcome};

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn ro() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

fn full_scan() -> Options {
    Options {
        read_only: true,
        verify_on_open: true,
        ..Options::default()
    }
}

/// Content with deletes, relabels (twice), episodes with retrievals and outcomes.
fn fill(db: &Database, ids: std::ops::RangeInclusive<u64>) {
    for id in ids.clone() {
        db.append(&traj_for(id)).unwrap();
    }
    let first = *ids.start();
    db.delete(first + 1).unwrap();
    for success in [Some(true), Some(false)] {
        db.set_outcome(
            first + 2,
            Outcome {
                success,
                reward: Some(0.5),
            },
        )
        .unwrap();
    }
    let ep = common::log_plan_retrieval(db, first + 2);
    db.set_episode_outcome(ep, Some(true)).unwrap();
}

/// Opens `dir` with `opts` and checks the state equals a full scan of the same files.
fn open_same_as_full_scan(dir: &Path, opts: Options) -> Database {
    let db = Database::open(dir, opts).unwrap();
    let full = Database::open(dir, full_scan()).unwrap();
    assert_eq!(full.open_report().checkpoint_end, None);
    assert_eq!(db.state_digest(), full.state_digest());
    db
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("log")).unwrap().len()
}

#[test]
fn close_writes_a_checkpoint_that_writer_and_reader_opens_use() {
    let dir = scratch("use");
    let db = Database::open(&dir, Options::default()).unwrap();
    create_spaces(&db);
    fill(&db, 1..=20);
    db.close().unwrap();
    assert!(dir.join(CHECKPOINT_FILE).is_file());
    let end = log_len(&dir);
    for opts in [ro(), Options::default()] {
        let db = open_same_as_full_scan(&dir, opts);
        assert_eq!(db.open_report().checkpoint_end, Some(end));
        assert_eq!(db.open_report().checkpoint_ignored, None);
        db.verify().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commits_after_the_checkpoint_are_read_from_the_log_tail() {
    let mem = CrashBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    let db = Database::open_backend(b.clone(), Options::default()).unwrap();
    create_spaces(&db);
    fill(&db, 1..=10);
    db.checkpoint().unwrap();
    fill(&db, 11..=20);
    // A crash: no close, so the checkpoint covers only the first half.
    let after = mem.crash();
    drop(db);
    let db = Database::open_backend(Arc::new(after.clone()), Options::default()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    common::model::same_as_full_scan(&db, &after, "after a crash past the checkpoint");
    assert_eq!(db.ids().len(), 18);
    db.verify().unwrap();
}

/// Builds a database in `dir` with a checkpoint covering ids 1..=10 and more commits after
/// it, closed without a checkpoint of those (the checkpoint file is put back).
fn with_old_checkpoint(dir: &Path) -> Vec<u8> {
    let db = Database::open(dir, Options::default()).unwrap();
    create_spaces(&db);
    fill(&db, 1..=10);
    db.close().unwrap();
    std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap()
}

#[test]
fn a_checkpoint_whose_frames_the_log_lost_is_ignored() {
    let dir = scratch("cut");
    let old = with_old_checkpoint(&dir);
    // An older build cuts the log (as repair would) and appends other commits: the
    // checkpoint file is still there and now describes frames the log no longer has.
    let cut = log_len(&dir) - 8;
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("log"))
        .unwrap()
        .set_len(cut)
        .unwrap();
    let db = Database::open(&dir, ro()).unwrap();
    let why = db.open_report().checkpoint_ignored.clone().unwrap();
    assert!(why.contains("was cut"), "{why}");
    drop(db);
    // Frames the checkpoint records are gone: a writer must accept that explicitly.
    assert!(matches!(
        Database::open(&dir, Options::default()),
        Err(trajdb::Error::Corrupt { .. })
    ));
    let db = open_same_as_full_scan(
        &dir,
        Options {
            accept_log_cut: true,
            ..Options::default()
        },
    );
    assert!(db.open_report().checkpoint_ignored.is_some());
    fill(&db, 30..=33);
    db.close().unwrap();
    // The old checkpoint put back over the new one.
    std::fs::write(dir.join(CHECKPOINT_FILE), &old).unwrap();
    let db = open_same_as_full_scan(&dir, ro());
    let why = db.open_report().checkpoint_ignored.clone().unwrap();
    assert!(
        why.contains("no frame with sequence number") || why.contains("was cut"),
        "{why}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_of_another_log_is_ignored() {
    let (a, b) = (scratch("foreign-a"), scratch("foreign-b"));
    with_old_checkpoint(&a);
    with_old_checkpoint(&b);
    std::fs::copy(a.join(CHECKPOINT_FILE), b.join(CHECKPOINT_FILE)).unwrap();
    let db = open_same_as_full_scan(&b, ro());
    let why = db.open_report().checkpoint_ignored.clone().unwrap();
    assert!(why.contains("belongs to log"), "{why}");
    drop(db);
    // Compaction makes a new log and a checkpoint for it; the old one would be foreign.
    let old = std::fs::read(a.join(CHECKPOINT_FILE)).unwrap();
    let db = Database::open(&a, Options::default()).unwrap();
    db.compact().unwrap();
    drop(db);
    let db = open_same_as_full_scan(&a, ro());
    assert_eq!(db.open_report().checkpoint_end, Some(log_len(&a)));
    drop(db);
    std::fs::write(a.join(CHECKPOINT_FILE), &old).unwrap();
    let db = open_same_as_full_scan(&a, ro());
    assert!(db.open_report().checkpoint_ignored.is_some());
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_damaged_or_half_written_checkpoint_is_ignored() {
    let dir = scratch("damaged");
    let good = with_old_checkpoint(&dir);
    let body = usize::try_from(CHECKPOINT_HEADER_LEN).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("shorter than its header", good[..40].to_vec()),
        ("a write cut short", good[..good.len() - 8].to_vec()),
        ("header checksum", {
            let mut b = good.clone();
            b[20] ^= 1;
            b
        }),
        ("body checksum", {
            let mut b = good.clone();
            b[body + 100] ^= 0x10;
            b
        }),
        ("magic", vec![0u8; good.len()]),
    ];
    for (want, bytes) in cases.drain(..) {
        std::fs::write(dir.join(CHECKPOINT_FILE), &bytes).unwrap();
        let db = open_same_as_full_scan(&dir, ro());
        let why = db.open_report().checkpoint_ignored.clone().unwrap();
        assert!(why.contains(want), "{want}: {why}");
    }
    // A half-written `checkpoint.new` is never read; the good checkpoint still is.
    std::fs::write(dir.join(CHECKPOINT_FILE), &good).unwrap();
    std::fs::write(dir.join("checkpoint.new"), &good[..100]).unwrap();
    let db = open_same_as_full_scan(&dir, ro());
    assert!(db.open_report().checkpoint_end.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_key_file_that_no_longer_vouches_for_the_checkpoint_rows_is_noticed() {
    let dir = scratch("keyfile");
    with_old_checkpoint(&dir);
    let key = dir.join("keys-0.vec");
    // A header that vouches for fewer rows than the checkpoint records.
    let mut k = std::fs::read(&key).unwrap();
    k[32..40].copy_from_slice(&1u64.to_le_bytes());
    let crc = crc32fast::hash(&k[..60]);
    k[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&key, &k).unwrap();
    let db = open_same_as_full_scan(&dir, ro());
    let why = db.open_report().checkpoint_ignored.clone().unwrap();
    assert!(why.contains("fewer than the checkpoint"), "{why}");
    drop(db);
    // The writer rebuilds the key file and a checkpoint: the next open uses it again.
    let db = open_same_as_full_scan(&dir, Options::default());
    db.verify().unwrap();
    drop(db);
    let db = open_same_as_full_scan(&dir, ro());
    assert!(db.open_report().checkpoint_end.is_some());
    db.verify().unwrap();
    drop(db);
    // A key file gone entirely.
    std::fs::remove_file(&key).unwrap();
    let db = open_same_as_full_scan(&dir, ro());
    assert!(db
        .open_report()
        .checkpoint_ignored
        .clone()
        .unwrap()
        .contains("missing"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_on_open_ignores_the_checkpoint() {
    let dir = scratch("paranoid");
    with_old_checkpoint(&dir);
    for read_only in [true, false] {
        let db = Database::open(
            &dir,
            Options {
                read_only,
                verify_on_open: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(db.open_report().checkpoint_end, None);
        assert_eq!(db.open_report().checkpoint_ignored, None);
        assert_eq!(db.ids().len(), 9);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fork_and_compaction_leave_checkpoints_for_their_logs() {
    let dir = scratch("fork");
    let dst = scratch("fork-dst");
    let db = Database::open(&dir, Options::default()).unwrap();
    create_spaces(&db);
    fill(&db, 1..=12);
    db.fork(&dst).unwrap();
    let f = open_same_as_full_scan(&dst, ro());
    // The checkpoint covers the copied commits; the fork's ORIGIN record (a new origin id
    // for the copy, format-spec.md "Origins and merging") follows it and is read as the tail.
    let end = f
        .open_report()
        .checkpoint_end
        .expect("opened from the checkpoint");
    assert!(end < log_len(&dst), "{end} vs {}", log_len(&dst));
    assert_ne!(f.origin(), db.origin(), "the fork has its own origin id");
    assert_eq!(f.ids(), db.ids());
    drop(f);
    db.compact().unwrap();
    let c = open_same_as_full_scan(&dir, ro());
    assert_eq!(c.open_report().checkpoint_end, Some(log_len(&dir)));
    drop(c);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dst);
}

#[test]
fn repair_removes_the_checkpoint_before_cutting() {
    let dir = scratch("repair");
    with_old_checkpoint(&dir);
    // Damage the last frame's payload: repair cuts it.
    let len = log_len(&dir);
    let mut log = std::fs::read(dir.join("log")).unwrap();
    let at = usize::try_from(len).unwrap() - 12;
    log[at] ^= 0xFF;
    std::fs::write(dir.join("log"), &log).unwrap();
    let r = Database::repair(&dir).unwrap();
    assert!(r.cut_at.is_some());
    assert!(!dir.join(CHECKPOINT_FILE).exists());
    let db = open_same_as_full_scan(&dir, Options::default());
    db.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checkpoint_is_written_automatically_after_enough_log() {
    // Keys of 8192 dims make 32 KiB frames: about 1100 of them pass the 32 MiB threshold.
    let mem = MemBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    // GroupCommit: `Buffered` writers get no automatic checkpoint (it would sync), which
    // the end of this test checks.
    let db = Database::open_backend(
        b.clone(),
        Options {
            durability: Durability::GroupCommit,
            ..Options::default()
        },
    )
    .unwrap();
    db.create_space(&trajdb::SpaceDef::new(
        "big",
        trajdb::Level::Trajectory,
        8192,
        trajdb::Metric::Dot,
    ))
    .unwrap();
    let key: Vec<f32> = (0..8192).map(|i| (i % 7) as f32).collect();
    let mut n = 0;
    while mem.file(CHECKPOINT_FILE).is_none() {
        let mut t = trajdb::Trajectory::default();
        t.keys.insert("big".into(), key.clone());
        db.append(&t).unwrap();
        n += 1;
        assert!(n < 1200, "no checkpoint after {n} commits");
    }
    assert!(n > 1000, "checkpoint after only {n} commits");
    let covered = db.stats().log_bytes;
    std::mem::forget(db); // a crash: no close
    let db = Database::open_backend(b, Options::default()).unwrap();
    assert_eq!(db.open_report().checkpoint_end, Some(covered));
    assert_eq!(db.ids().len(), n);

    // Under `Buffered` the same log gets no automatic checkpoint (it would sync); close
    // writes one.
    let mem = MemBackend::new();
    let b: Arc<dyn Backend> = Arc::new(mem.clone());
    let db = Database::open_backend(
        b,
        Options {
            durability: Durability::Buffered,
            ..Options::default()
        },
    )
    .unwrap();
    db.create_space(&trajdb::SpaceDef::new(
        "big",
        trajdb::Level::Trajectory,
        8192,
        trajdb::Metric::Dot,
    ))
    .unwrap();
    for _ in 0..1200 {
        let mut t = trajdb::Trajectory::default();
        t.keys.insert("big".into(), key.clone());
        db.append(&t).unwrap();
    }
    assert!(
        mem.file(CHECKPOINT_FILE).is_none(),
        "no automatic checkpoint when Buffered"
    );
    db.close().unwrap();
    assert!(mem.file(CHECKPOINT_FILE).is_some(), "close writes one");
}

#[test]
fn golden_v1_checkpoint_opens_from_its_checkpoint() {
    let dir = copy_of_golden("v1-checkpoint-v2", "golden");
    for opts in [ro(), Options::default()] {
        let db = open_same_as_full_scan(&dir, opts);
        assert_eq!(db.open_report().checkpoint_end, Some(log_len(&dir)));
        assert_eq!(db.ids(), [1, 2, 4, 5, 6]);
        assert_eq!(db.utility(2).q(), Some(0.5));
        db.verify().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy of `tests/golden/NAME` in a scratch directory.
fn copy_of_golden(name: &str, scratch_name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let dir = scratch(scratch_name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

/// A checkpoint of version 1 (golden `v1-checkpoint`, written by builds before the block
/// checksums) is ignored with the reason, the log is scanned, and a writable open replaces
/// it by one this build then opens from.
#[test]
fn golden_checkpoint_of_version_1_is_ignored_then_replaced_by_a_writer() {
    let dir = copy_of_golden("v1-checkpoint", "golden-ckpt-v1");
    let db = open_same_as_full_scan(&dir, ro());
    let why = db.open_report().checkpoint_ignored.clone().unwrap();
    assert!(why.contains("checkpoint version 1 is not 2"), "{why}");
    assert_eq!(db.ids(), [1, 2, 4, 5, 6]);
    drop(db);
    let db = open_same_as_full_scan(&dir, Options::default());
    assert!(db.open_report().checkpoint_ignored.is_some());
    drop(db);
    let db = open_same_as_full_scan(&dir, ro());
    assert_eq!(db.open_report().checkpoint_end, Some(log_len(&dir)));
    assert_eq!(db.open_report().checkpoint_ignored, None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The checkpoint this build writes for golden v1 is byte for byte the committed one in
/// `tests/golden/v1-checkpoint-v2` (checkpoint version 2; its other files are v1's log and
/// the key files a writable open rebuilds): the layout holds still.
/// `cargo test --test checkpoint -- --ignored make_golden_checkpoint` regenerates it.
#[test]
fn golden_v1_checkpoint_is_what_this_build_writes() {
    let got = checkpoint_of_golden_v1();
    let want = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-checkpoint-v2/checkpoint"),
    )
    .unwrap();
    assert_eq!(got, want);
}

/// The checkpoint and the key files (rebuilt as this build's key-file version) that a
/// writable open of golden v1 writes.
fn checkpoint_of_golden_v1() -> Vec<u8> {
    checkpoint_and_key_files_of_golden_v1().0
}

fn checkpoint_and_key_files_of_golden_v1() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let dir = scratch("golden-make");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    // A writable open of a log with commits and no checkpoint writes one.
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(db.open_report().checkpoint_error.is_none());
    drop(db);
    assert_eq!(
        std::fs::read(dir.join("log")).unwrap(),
        std::fs::read(src.join("log")).unwrap(),
        "log unchanged by the open"
    );
    let b = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
    let keys = ["keys-0.vec", "keys-1.vec"]
        .into_iter()
        .map(|name| (name, std::fs::read(dir.join(name)).unwrap()))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (b, keys)
}

#[test]
#[ignore = "regenerates tests/golden/v1-checkpoint-v2 (log, checkpoint and key files)"]
fn make_golden_checkpoint() {
    let (b, keys) = checkpoint_and_key_files_of_golden_v1();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let dst = root.join("v1-checkpoint-v2");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::copy(root.join("v1/log"), dst.join("log")).unwrap();
    std::fs::write(dst.join("checkpoint"), b).unwrap();
    // The key files the checkpoint vouches for (golden v1's are an older key-file version,
    // which a writable open rebuilds).
    for (name, bytes) in keys {
        std::fs::write(dst.join(name), bytes).unwrap();
    }
}

/// The decoder never panics or over-allocates on mutated checkpoints whose checksums are
/// fixed up (so the body's decoding is reached), and refuses every truncation.
#[test]
fn mutated_checkpoints_with_valid_checksums_are_refused_or_decoded_never_panic() {
    let file = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-checkpoint-v2/checkpoint"),
    )
    .unwrap();
    assert!(trajdb::fuzz_decode_checkpoint(&file));
    // Header and body, without the block table (recomputed after each mutation).
    let mut good = file.clone();
    trajdb::fuzz_fix_checkpoint(&mut good, true);
    assert_eq!(good, file, "fixing a valid file changes nothing");
    let body_end = {
        let body_len = u64::from_le_bytes(file[64..72].try_into().unwrap());
        96 + usize::try_from(body_len).unwrap()
    };
    let good = file[..body_end].to_vec();
    let fix = |b: &mut Vec<u8>| trajdb::fuzz_fix_checkpoint(b, false);
    let mut rng = trajdb::rng::SplitMix64::new(7);
    let mut refused = 0;
    for i in 0..20_000u64 {
        let mut b = good.clone();
        for _ in 0..1 + i % 3 {
            let at = 96 + usize::try_from(rng.next_u64() % (b.len() as u64 - 96)).unwrap();
            // Mostly large values, to push counts and indexes past every bound.
            b[at] = if i % 2 == 0 {
                0xFF
            } else {
                rng.next_u64() as u8
            };
        }
        fix(&mut b);
        refused += usize::from(!trajdb::fuzz_decode_checkpoint(&b));
    }
    assert!(refused > 1000, "{refused} of 20000 refused");
    for n in 0..file.len() {
        assert!(
            !trajdb::fuzz_decode_checkpoint(&file[..n]),
            "prefix of {n} bytes"
        );
    }
}

#[test]
fn a_writer_open_from_a_checkpoint_covering_the_whole_log_needs_no_sync_but_an_unsynced_tail_is_synced(
) {
    use trajdb::storage::fault::{FailingBackend, Op};
    let mem = CrashBackend::new();
    let db = Database::open_backend(
        Arc::new(mem.clone()),
        Options {
            durability: Durability::Buffered,
            ..Options::default()
        },
    )
    .unwrap();
    create_spaces(&db);
    fill(&db, 1..=10);
    db.close().unwrap();

    // The checkpoint was written after the log was synced to its end: nothing to sync.
    let counting = FailingBackend::new(Arc::new(mem.clone()), Some(Op::Sync), 0);
    let db = Database::open_backend(Arc::new(counting.clone()), Options::default()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    assert_eq!(
        counting.count(),
        0,
        "syncs at a writer open with nothing new"
    );

    // A process appends without syncing and dies (its written bytes stay in the files, as
    // in the page cache); the next writer open must make them durable before a power cut.
    db.append(&traj_for(11)).unwrap();
    std::mem::forget(db);
    let counting = FailingBackend::new(Arc::new(mem.clone()), Some(Op::Sync), 0);
    let db = Database::open_backend(Arc::new(counting.clone()), Options::default()).unwrap();
    assert!(
        counting.count() > 0,
        "the unsynced tail was not synced at open"
    );
    assert_eq!(db.ids().len(), 10);
    let after_power_cut = mem.crash();
    std::mem::forget(db);
    let db = Database::open_backend(Arc::new(after_power_cut), ro()).unwrap();
    assert!(db.ids().contains(&11), "the tail found at open was lost");
}

#[test]
fn a_key_file_copied_from_a_diverged_fork_is_not_trusted_and_is_rebuilt_from_the_log() {
    let a = scratch("fork-a");
    let b = scratch("fork-b");
    let db = Database::open(&a, Options::default()).unwrap();
    create_spaces(&db);
    for id in 1..=5 {
        db.append(&traj_for(id)).unwrap();
    }
    db.fork(&b).unwrap();
    for id in 6..=8 {
        db.append(&traj_for(id)).unwrap();
    }
    db.close().unwrap();
    // The fork gets the same ids with other keys.
    let other = Database::open(&b, Options::default()).unwrap();
    for id in 6..=8 {
        let mut t = traj_for(id + 100);
        t.id = Some(id);
        other.append(&t).unwrap();
    }
    other.close().unwrap();
    for f in ["keys-0.vec", "keys-1.vec"] {
        std::fs::copy(b.join(f), a.join(f)).unwrap();
    }
    // Writer first (the open that used to vouch for the foreign rows), then a reader.
    for opts in [Options::default(), ro()] {
        let db = open_same_as_full_scan(&a, opts);
        db.verify().unwrap();
        let t = db.get(7).unwrap();
        assert_eq!(t.keys, traj_for(7).keys, "the log's keys, not the fork's");
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_log_cut_before_its_checkpoint_is_reported_fails_verify_and_keeps_writers_out_until_accepted() {
    let dir = scratch("cut-boundary");
    let db = Database::open(&dir, Options::default()).unwrap();
    create_spaces(&db);
    for id in 1..=3 {
        db.append(&traj_for(id)).unwrap();
    }
    db.sync().unwrap();
    let boundary = log_len(&dir);
    for id in 4..=5 {
        db.append(&traj_for(id)).unwrap();
    }
    db.close().unwrap();
    let full = log_len(&dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("log"))
        .unwrap();
    f.set_len(boundary).unwrap();
    drop(f);
    let db = Database::open(&dir, ro()).unwrap();
    assert_eq!(db.ids().len(), 3, "the log holds three commits now");
    assert_eq!(db.open_report().log_cut_at, Some((boundary, full)));
    let e = db.verify().unwrap_err();
    assert!(
        e.to_string().contains("were cut from the end of the log"),
        "{e}"
    );
    drop(db);
    // A writable open refuses the cut log before writing anything, so the loss stays
    // visible (and the log can be restored) however many write commands are tried.
    let ckpt = std::fs::read(dir.join("checkpoint")).unwrap();
    for _ in 0..2 {
        match Database::open(&dir, Options::default()) {
            Err(trajdb::Error::Corrupt { path, offset, what }) => {
                assert!(path.ends_with("log"), "{path:?}");
                assert_eq!(offset, boundary);
                assert!(what.contains("accept_log_cut"), "{what}");
            }
            Err(e) => panic!("expected Corrupt naming the log, got {e}"),
            Ok(_) => panic!("a writable open accepted a log cut before its checkpoint"),
        }
    }
    assert_eq!(log_len(&dir), boundary, "the log was not touched");
    assert_eq!(std::fs::read(dir.join("checkpoint")).unwrap(), ckpt);
    let db = Database::open(&dir, ro()).unwrap();
    assert_eq!(db.open_report().log_cut_at, Some((boundary, full)));
    assert!(db.verify().is_err());
    drop(db);
    // Accepting the loss: the writer keeps the three commits the log holds and records the
    // shorter log, after which every open and verify pass.
    let db = Database::open(
        &dir,
        Options {
            accept_log_cut: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(db.open_report().log_cut_at, Some((boundary, full)));
    assert_eq!(db.ids().len(), 3);
    db.append(&traj_for(6)).unwrap();
    db.close().unwrap();
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.open_report().log_cut_at, None);
    assert_eq!(db.ids().len(), 4);
    db.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The step-bounds file (`bounds-1.idx`, format-spec.md "Search-bounds files") that a writer
/// saves for golden `v1-checkpoint`'s step space after building its bounds.
fn bounds_file_of_golden_v1_checkpoint() -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-checkpoint-v2");
    let dir = scratch("golden-bounds-make");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let db = Database::open(&dir, Options::default()).unwrap();
    db.build_search_bounds();
    db.close().unwrap();
    let b = std::fs::read(dir.join("bounds-1.idx")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    b
}

/// The step-bounds file this build writes for golden `v1-checkpoint` is byte for byte the
/// committed `tests/golden/v1-bounds/bounds-1.idx`, and this build loads the committed one
/// (beside v1-checkpoint's files) on the first retrieval. `cargo test --test checkpoint --
/// --ignored make_golden_bounds` regenerates it.
#[test]
fn golden_v1_bounds_file_is_what_this_build_writes_and_reads() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-bounds/bounds-1.idx");
    assert_eq!(
        bounds_file_of_golden_v1_checkpoint(),
        std::fs::read(&golden).unwrap()
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-checkpoint-v2");
    let dir = scratch("golden-bounds-read");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    std::fs::copy(&golden, dir.join("bounds-1.idx")).unwrap();
    let db = Database::open(&dir, ro()).unwrap();
    let t = traj_for(1);
    let q = trajdb::RetrieveQuery {
        keys: vec![("goal".into(), t.keys["goal"].clone())],
        step_key: Some(("obs".into(), t.step_keys["obs"][0].clone())),
        k: 3,
        window: 1,
        filter: trajdb::Filter::default(),
        embedder: None,
    };
    let got = db.retrieve(&q).unwrap();
    assert_eq!(got, db.retrieve_exhaustive(&q).unwrap().0);
    assert_eq!(
        db.search_bounds_loaded()[1],
        ("obs".to_owned(), false, true)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "regenerates tests/golden/v1-bounds (the step-bounds file of v1-checkpoint)"]
fn make_golden_bounds() {
    let dst = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1-bounds");
    std::fs::create_dir_all(&dst).unwrap();
    std::fs::write(
        dst.join("bounds-1.idx"),
        bounds_file_of_golden_v1_checkpoint(),
    )
    .unwrap();
}

/// Writes a database whose checkpoint body spans several 64 KiB blocks (3000 trajectories,
/// some deleted, some relabelled, episodes) and returns its checkpoint file.
fn with_multi_block_checkpoint(dir: &Path) -> Vec<u8> {
    let db = Database::open(
        dir,
        Options {
            durability: Durability::Buffered,
            ..Options::default()
        },
    )
    .unwrap();
    create_spaces(&db);
    let ts: Vec<_> = (1..=3000).map(traj_for).collect();
    for chunk in ts.chunks(500) {
        db.append_many(chunk).unwrap();
    }
    fill(&db, 3001..=3010);
    db.close().unwrap();
    std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap()
}

/// The number of 64 KiB blocks of a checkpoint file's body.
fn blocks_of(file: &[u8]) -> usize {
    let body_len = u64::from_le_bytes(file[64..72].try_into().unwrap());
    usize::try_from(body_len.div_ceil(1 << 16)).unwrap()
}

#[test]
fn open_from_a_checkpoint_checks_no_block_of_the_trajectory_table_or_row_metadata() {
    let dir = scratch("lazy");
    let file = with_multi_block_checkpoint(&dir);
    let total = blocks_of(&file);
    assert!(total >= 4, "{total} blocks");
    for opts in [ro(), Options::default()] {
        let db = Database::open(&dir, opts).unwrap();
        assert!(db.open_report().checkpoint_end.is_some());
        // Only block 0 (counts, spaces, names, usage) is read at open.
        assert_eq!(db.checkpoint_blocks_checked(), Some((1, total)));
        // A point lookup checks only the blocks it reads (the id search's records, the
        // slot's record and history).
        assert!(db.contains(2999));
        let (after_lookup, _) = db.checkpoint_blocks_checked().unwrap();
        assert!(after_lookup < total, "{after_lookup} of {total}");
        // An operation over every trajectory checks the rest, once.
        assert_eq!(db.stats().trajectories, 3009);
        assert_eq!(db.checkpoint_blocks_checked(), Some((total, total)));
        assert_eq!(db.checkpoint_damage(), None);
        assert_eq!(db.get(2999).unwrap(), traj_for(2999));
    }
    let db = open_same_as_full_scan(&dir, ro());
    db.verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_byte_in_any_checkpoint_block_is_found_on_first_use_and_the_log_answers() {
    let dir = scratch("block-damage");
    let good = with_multi_block_checkpoint(&dir);
    let total = blocks_of(&good);
    let body_len = usize::try_from(u64::from_le_bytes(good[64..72].try_into().unwrap())).unwrap();
    let want_ids = Database::open(&dir, full_scan()).unwrap().ids();
    for block in 0..total {
        let start = (block << 16) + 96;
        let end = (start + (1 << 16)).min(96 + body_len);
        // A byte in the middle of the block: a trajectory record, history or row metadata
        // in the later blocks.
        let at = start + (end - start) / 2;
        for opts in [ro(), Options::default()] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(dir.join(CHECKPOINT_FILE), &bad).unwrap();
            let db = Database::open(&dir, opts.clone()).unwrap();
            if block == 0 {
                // The front block is checked at open: the checkpoint is ignored there.
                let why = db.open_report().checkpoint_ignored.clone().unwrap();
                assert!(why.contains("body checksum mismatch in block 0"), "{why}");
            } else {
                assert!(db.open_report().checkpoint_end.is_some(), "block {block}");
                assert_eq!(db.checkpoint_damage(), None, "nothing read yet");
                // The first use finds the damage and answers from the log.
                assert_eq!(db.ids(), want_ids, "block {block}");
                let why = db.checkpoint_damage().expect("damage found");
                assert!(
                    why.contains(&format!("block {block} (bytes {start}..{end})"))
                        && why.contains("checkpoint"),
                    "{why}"
                );
                assert_eq!(
                    db.checkpoint_blocks_checked(),
                    None,
                    "state rebuilt by a scan"
                );
            }
            let full = Database::open(&dir, full_scan()).unwrap();
            assert_eq!(db.state_digest(), full.state_digest(), "block {block}");
            assert_eq!(db.get(1234).unwrap(), traj_for(1234));
            // `verify` reports the damage while the file is still damaged (a read-only
            // handle, or a writer before its next checkpoint), and passes once a writer
            // has replaced it: the answers were sound either way.
            let still_damaged = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap() == bad;
            match db.verify() {
                Ok(_) => assert!(!still_damaged, "block {block}: damage not reported"),
                Err(e) => {
                    assert!(still_damaged, "block {block}: {e}");
                    let msg = e.to_string();
                    assert!(
                        matches!(e, trajdb::Error::Corrupt { .. })
                            && msg.contains("checkpoint is damaged"),
                        "block {block}: {msg}"
                    );
                }
            }
            if !opts.read_only {
                assert!(
                    !still_damaged || block == 0,
                    "block {block}: a writer replaces it after rebuilding"
                );
            } else {
                assert!(
                    still_damaged,
                    "a read-only handle never writes the checkpoint"
                );
            }
            let writer = !db.options().read_only;
            drop(db);
            if writer && block > 0 {
                // The writer replaced the damaged checkpoint: the next open reads a sound one.
                let db = Database::open(&dir, ro()).unwrap();
                assert!(db.open_report().checkpoint_end.is_some());
                assert_eq!(db.ids(), want_ids);
                assert_eq!(db.checkpoint_damage(), None, "block {block}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_names_every_damaged_checkpoint_block() {
    let dir = scratch("verify-blocks");
    let good = with_multi_block_checkpoint(&dir);
    let total = blocks_of(&good);
    let mut bad = good.clone();
    let damaged = [1, total - 1];
    for b in damaged {
        bad[96 + (b << 16) + 17] ^= 1;
    }
    std::fs::write(dir.join(CHECKPOINT_FILE), &bad).unwrap();
    let db = Database::open(&dir, ro()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    match db.verify() {
        Err(trajdb::Error::Corrupt { path, offset, what }) => {
            assert_eq!(path, dir.join(CHECKPOINT_FILE));
            assert_eq!(offset, 96 + (1 << 16));
            assert!(what.contains("2 checkpoint block(s)"), "{what}");
            for b in damaged {
                assert!(what.contains(&format!("block {b} at bytes")), "{what}");
            }
        }
        other => panic!("verify: {other:?}"),
    }
    // The handle still answers, from the log.
    assert_eq!(db.get(5).unwrap(), traj_for(5));
    assert!(db.checkpoint_damage().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Byte offset in the file and count of the trajectory area of a checkpoint, from the
/// counts and the area order of format-spec.md ("Checkpoint body").
fn trajectory_area_of(file: &[u8]) -> (usize, usize) {
    let count = |i: usize| {
        let at = 96 + 8 * i;
        usize::try_from(u64::from_le_bytes(file[at..at + 8].try_into().unwrap())).unwrap()
    };
    let pad = |n: usize| n.next_multiple_of(8);
    // counts: next_id, next_episode, spaces, defs bytes, trajs, history, names, name bytes,
    // rows, counters, episodes, events, origin, merged, deleted, flags.
    let mut at = 96 + 128;
    at += pad(16 * count(2));
    at += pad(count(3));
    at += pad(4 * count(6));
    at += pad(count(7));
    at += pad(40 * count(9)) + pad(48 * count(10)) + pad(16 * count(11)) + pad(24 * count(13));
    (at, count(4))
}

#[test]
fn a_damaged_trajectory_record_is_found_by_a_point_lookup_of_it_and_the_log_answers() {
    let dir = scratch("point-damage");
    let good = with_multi_block_checkpoint(&dir);
    let (area, n) = trajectory_area_of(&good);
    assert_eq!(n, 3010);
    // One slot per 64 KiB block the trajectory area covers (slot p holds id p + 1).
    let first_block = (area - 96) >> 16;
    let last_block = (area - 96 + n * 88 - 1) >> 16;
    for block in first_block..=last_block {
        let mid = 96 + (block << 16) + (1 << 15);
        let slot = (mid.max(area) - area) / 88;
        let slot = slot.min(n - 1);
        let id = u64::try_from(slot).unwrap() + 1;
        let rec = area + slot * 88;
        let rec_block = (rec - 96) >> 16;
        let mut bad = good.clone();
        // The record's `seq` field: what the lookup returns, not what it searches by.
        bad[rec + 8] ^= 0x01;
        std::fs::write(dir.join(CHECKPOINT_FILE), &bad).unwrap();
        for opts in [ro(), Options::default()] {
            let db = Database::open(&dir, opts).unwrap();
            if rec_block == 0 {
                // Block 0 (with the small areas) is checked at open: ignored there.
                let why = db.open_report().checkpoint_ignored.clone().unwrap();
                assert!(why.contains("block 0"), "{why}");
                continue;
            }
            assert!(
                db.open_report().checkpoint_end.is_some(),
                "block {rec_block}"
            );
            let want_live = id != 3002; // fill() deletes 3002
            assert_eq!(db.contains(id), want_live, "id {id}");
            let why = db.checkpoint_damage().expect("found by the lookup");
            assert!(why.contains(&format!("block {rec_block} ")), "{why}");
            if want_live {
                assert_eq!(db.get(id).unwrap(), traj_for(id));
            }
            let full = Database::open(&dir, full_scan()).unwrap();
            assert_eq!(db.state_digest(), full.state_digest());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_block_under_a_log_tail_that_deletes_and_relabels_never_gives_a_wrong_answer() {
    let dir = scratch("tail-damage");
    let good = with_multi_block_checkpoint(&dir);
    // Commits after the checkpoint that change checkpointed slots, then the old checkpoint
    // put back (it still covers a prefix of the log).
    let db = Database::open(&dir, Options::default()).unwrap();
    for id in [17, 1500, 2990] {
        db.delete(id).unwrap();
    }
    for id in [18, 1501, 2991] {
        db.set_outcome(
            id,
            Outcome {
                success: Some(true),
                reward: Some(2.0),
            },
        )
        .unwrap();
    }
    db.close().unwrap();
    let total = blocks_of(&good);
    for block in 1..total {
        let mut bad = good.clone();
        bad[96 + (block << 16) + 100] ^= 0x08;
        std::fs::write(dir.join(CHECKPOINT_FILE), &bad).unwrap();
        let db = Database::open(&dir, ro()).unwrap();
        let full = Database::open(&dir, full_scan()).unwrap();
        // A lookup first, then everything: both from checked bytes or from the log.
        for id in [17, 18, 1500, 1501, 2990, 2991, 5] {
            assert_eq!(db.contains(id), full.contains(id), "block {block} id {id}");
        }
        assert_eq!(db.state_digest(), full.state_digest(), "block {block}");
        assert_eq!(db.get(1501).unwrap(), full.get(1501).unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Filters read a checkpoint's trajectory records in place after a checkpointed open; every
/// filter (success as of several commits, with relabels; env; task; deleted; excluded ids)
/// gives what it gives on the state a scan builds.
#[test]
fn filters_over_a_checkpointed_table_match_a_full_scan() {
    let dir = scratch("filters");
    let db = Database::open(&dir, Options::default()).unwrap();
    create_spaces(&db);
    fill(&db, 1..=40);
    for id in [5, 6, 7] {
        db.set_outcome(
            id,
            Outcome {
                success: Some(id != 6),
                reward: None,
            },
        )
        .unwrap();
    }
    db.delete(9).unwrap();
    db.close().unwrap();
    let db = Database::open(&dir, ro()).unwrap();
    assert!(db.open_report().checkpoint_end.is_some());
    let full = Database::open(&dir, full_scan()).unwrap();
    let last = full.commit_seq();
    // Counts read off the records in place (one trajectory deleted: not every row live).
    assert_eq!(format!("{:?}", db.stats()), format!("{:?}", full.stats()));
    assert!(db.stats().spaces.iter().all(|s| s.live_rows < s.rows));
    assert_eq!(
        db.ids_as_of(Some(20)).unwrap(),
        full.ids_as_of(Some(20)).unwrap()
    );
    assert_eq!(db.commit_points(), full.commit_points());
    let q = traj_for(3).keys["goal"].clone();
    let sq = traj_for(3).step_keys["obs"][0].clone();
    let mut filters = Vec::new();
    for as_of in [
        None,
        Some(5),
        Some(20),
        Some(last - 4),
        Some(last - 1),
        Some(last),
    ] {
        filters.push(trajdb::Filter {
            success_only: true,
            as_of,
            ..Default::default()
        });
        filters.push(trajdb::Filter {
            as_of,
            ..Default::default()
        });
    }
    filters.push(trajdb::Filter {
        env: Some("env-1".into()),
        ..Default::default()
    });
    filters.push(trajdb::Filter {
        task: Some("task-2".into()),
        exclude: vec![7, 12],
        ..Default::default()
    });
    filters.push(trajdb::Filter {
        provenance: Some(trajdb::ProvenanceKind::SelfGenerated),
        ..Default::default()
    });
    for f in &filters {
        assert_eq!(
            db.search("goal", &q, 50, f).unwrap(),
            full.search("goal", &q, 50, f).unwrap(),
            "{f:?}"
        );
        assert_eq!(
            db.search("obs", &sq, 50, f).unwrap(),
            full.search("obs", &sq, 50, f).unwrap(),
            "{f:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A damaged byte inside the key rows a checkpoint vouches for (open does not read them) is
/// found by the first search of that space, which refuses to answer with an error naming
/// the key file; the log still holds every row, and removing the checkpoint brings back
/// the original answers.
#[test]
fn a_damaged_key_row_under_a_checkpoint_is_refused_by_the_first_search_not_served() {
    let dir = scratch("keyrow");
    with_old_checkpoint(&dir);
    let q = [0.3f32, 0.5, 0.2, 0.9];
    let want = {
        let db = Database::open(&dir, ro()).unwrap();
        assert!(db.open_report().checkpoint_end.is_some());
        db.search("goal", &q, 5, &Default::default()).unwrap()
    };
    let key = dir.join("keys-0.vec");
    let clean = std::fs::read(&key).unwrap();
    // Inside the second row of space 0 (header 64 bytes, rows of 4 f32).
    let at = 64 + 16 + 5;
    let mut k = clean.clone();
    k[at] ^= 0x40;
    std::fs::write(&key, &k).unwrap();
    for opts in [ro(), Options::default()] {
        let db = Database::open(&dir, opts.clone()).unwrap();
        assert!(
            db.open_report().checkpoint_end.is_some(),
            "opened from the checkpoint"
        );
        let err = db.search("goal", &q, 5, &Default::default()).unwrap_err();
        assert!(matches!(err, trajdb::Error::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("keys-0.vec") && msg.contains("checkpoint"),
            "{msg}"
        );
        // Every query path of the space refuses, again and again; other data still reads.
        assert!(db.search("goal", &q, 5, &Default::default()).is_err());
        let rq = trajdb::RetrieveQuery {
            keys: vec![("goal".into(), q.to_vec())],
            k: 3,
            ..Default::default()
        };
        assert!(matches!(
            db.retrieve(&rq),
            Err(trajdb::Error::Corrupt { .. })
        ));
        assert!(db.get(3).is_ok());
        assert!(db.verify().is_err());
        drop(db);
        // The writer open must not have rewritten the damaged rows as if they were sound.
        std::fs::write(&key, &k).unwrap();
    }
    // Without the checkpoint the rows come from the log again: the original answers.
    std::fs::remove_file(dir.join(CHECKPOINT_FILE)).unwrap();
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.search("goal", &q, 5, &Default::default()).unwrap(), want);
    db.verify().unwrap();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
