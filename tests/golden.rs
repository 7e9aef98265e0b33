//! Golden databases: a committed database per format version, and damaged copies of it.
//! Each opens (or refuses) exactly as recorded. `make_golden` (ignored) regenerates them:
//! `cargo test --test golden -- --ignored make_golden`.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use std::path::{Path, PathBuf};

use common::{create_spaces, traj_for};
use trajdb::{Database, Error, Options, RetrievalEvent, Stage};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A private copy, so opening never writes into the committed files.
fn copy(name: &str) -> PathBuf {
    // Tests run in parallel and may copy the same golden database: each copy is its own.
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dst = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-golden-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(golden(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// The ids stored in v1 (id 3 deleted) and the episodes' (outcome, retrieved ids).
const LIVE: [u64; 5] = [1, 2, 4, 5, 6];

fn ro() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

fn check_v1_content(db: &Database, live: &[u64]) {
    assert_eq!(db.ids(), live);
    for id in live {
        assert_eq!(db.get(*id).unwrap(), traj_for(*id));
    }
    let eps = db.episodes();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].outcome, Some(true));
    assert_eq!(
        eps[0].events.iter().map(|e| e.id).collect::<Vec<_>>(),
        [2, 4]
    );
    assert_eq!(eps[1].outcome, Some(false));
    assert_eq!(eps[1].events.iter().map(|e| e.id).collect::<Vec<_>>(), [2]);
    assert_eq!(db.utility(2).q(), Some(0.5));
    assert_eq!(db.utility(4).q(), Some(1.0));
    db.verify().unwrap();
}

#[test]
fn golden_v1_opens_with_exact_content() {
    let dir = copy("v1");
    check_v1_content(&Database::open(&dir, ro()).unwrap(), &LIVE);
    check_v1_content(&Database::open(&dir, Options::default()).unwrap(), &LIVE);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v1_torn_tail_loses_only_the_torn_frame() {
    let dir = copy("v1-torn-tail");
    let db = Database::open(&dir, ro()).unwrap();
    assert!(db.open_report().torn_reason.is_some());
    // The torn frame is the last episode outcome: everything else is there.
    assert_eq!(db.ids(), LIVE);
    assert_eq!(db.episodes()[1].outcome, None);
    drop(db);
    let db = Database::open(&dir, Options::default()).unwrap();
    assert!(db.open_report().truncated_bytes > 0);
    db.verify().unwrap();
    drop(db);
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.open_report().truncated_bytes, 0, "the cut is durable");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v1_corrupt_middle_is_refused_at_the_damaged_frame() {
    let dir = copy("v1-corrupt-middle");
    let at = std::fs::read_to_string(golden("v1-corrupt-middle").join("OFFSET.txt")).unwrap();
    let at: u64 = at.trim().parse().unwrap();
    for opts in [ro(), Options::default()] {
        match Database::open(&dir, opts) {
            Err(e @ Error::Corrupt { .. }) => {
                let Error::Corrupt {
                    offset, ref path, ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(offset, at);
                assert!(path.ends_with("log"));
                assert!(e.to_string().contains(&format!("at byte {at}")));
            }
            other => panic!("expected Corrupt at {at}, got {:?}", other.map(|_| ())),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn golden_v1_newer_version_is_refused_as_incompatible() {
    let dir = copy("v1-newer-version");
    for opts in [ro(), Options::default()] {
        match Database::open(&dir, opts) {
            Err(Error::IncompatibleVersion {
                found, supported, ..
            }) => assert_eq!((found, supported), (2, 1)),
            other => panic!("expected IncompatibleVersion, got {:?}", other.map(|_| ())),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frame (start, end) offsets of the log.
fn frames(log: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut pos = 64;
    while pos + 24 <= log.len() {
        let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + (24 + len).div_ceil(8) * 8;
        v.push((pos, end));
        pos = end;
    }
    v
}

#[test]
#[ignore = "regenerates the committed golden databases"]
fn make_golden() {
    let v1 = golden("v1");
    let _ = std::fs::remove_dir_all(&v1);
    {
        let db = Database::open(&v1, Options::default()).unwrap();
        create_spaces(&db);
        for id in 1..=6 {
            db.append(&traj_for(id)).unwrap();
        }
        let ev = |id| RetrievalEvent {
            id,
            step: None,
            stage: Stage::Plan,
        };
        let a = db.begin_episode().unwrap();
        db.log_retrievals(a, &[ev(2), ev(4)]).unwrap();
        db.set_episode_outcome(a, Some(true)).unwrap();
        db.delete(3).unwrap();
        let b = db.begin_episode().unwrap();
        db.log_retrievals(b, &[ev(2)]).unwrap();
        db.set_episode_outcome(b, Some(false)).unwrap();
    }
    std::fs::remove_file(v1.join(trajdb::LOCK_FILE)).unwrap();
    // `v1` is the format as written before origin ids: header bytes 48..56 zero.
    let mut log = std::fs::read(v1.join("log")).unwrap();
    log[48..56].fill(0);
    let crc = crc32fast::hash(&log[..60]);
    log[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(v1.join("log"), &log).unwrap();
    let fr = frames(&log);
    let variant = |name: &str, log: &[u8], extra: Option<String>| {
        let d = golden(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["keys-0.vec", "keys-1.vec"] {
            std::fs::copy(v1.join(f), d.join(f)).unwrap();
        }
        std::fs::write(d.join("log"), log).unwrap();
        if let Some(x) = extra {
            std::fs::write(d.join("OFFSET.txt"), x).unwrap();
        }
    };
    // Torn tail: the last frame cut in half.
    let (s, e) = *fr.last().unwrap();
    variant("v1-torn-tail", &log[..s + (e - s) / 2], None);
    // Corrupt middle: a payload byte of the fourth frame (a trajectory) flipped.
    let (s, _) = fr[3];
    let mut bad = log.clone();
    bad[s + 30] ^= 0xFF;
    variant("v1-corrupt-middle", &bad, Some(format!("{s}\n")));
    // Newer version: version 2 with a valid header checksum.
    let mut newer = log.clone();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&newer[..60]);
    newer[60..64].copy_from_slice(&crc.to_le_bytes());
    variant("v1-newer-version", &newer, None);
}

/// The merge golden database (`tests/golden/v1-merge`): a fork (so its log has an ORIGIN
/// record) that wrote one trajectory of its own, then merged a second database whose ids
/// overlap (EPISODE_MERGED, trajectories with a provenance origin). Built by
/// `make_golden_merge`.
#[test]
fn golden_v1_merge_opens_with_origins_and_merged_usage() {
    use trajdb::Origin;
    let dir = copy("v1-merge");
    let log = std::fs::read(dir.join("log")).unwrap();
    let header_origin = u64::from_le_bytes(log[48..56].try_into().unwrap());
    assert_ne!(header_origin, 0);
    let kinds: Vec<u16> = frames(&log)
        .iter()
        .map(|&(s, _)| u16::from_le_bytes([log[s + 16], log[s + 17]]))
        .collect();
    assert!(kinds.contains(&8) && kinds.contains(&9), "{kinds:?}");
    for opts in [ro(), Options::default()] {
        let db = Database::open(&dir, opts).unwrap();
        assert_eq!(db.ids(), [1, 2, 3, 4, 5, 6]);
        let fork_origin = db.origin().unwrap();
        assert_ne!(fork_origin, header_origin, "the fork's ORIGIN record");
        for id in 1..=3 {
            assert_eq!(
                db.trajectory_origin(id),
                Some(Origin {
                    db: header_origin,
                    id
                })
            );
            assert_eq!(db.get(id).unwrap(), traj_for(id));
        }
        assert_eq!(
            db.trajectory_origin(4),
            Some(Origin {
                db: fork_origin,
                id: 4
            })
        );
        let merged = db.trajectory_origin(5).unwrap();
        assert!(merged.db != header_origin && merged.db != fork_origin);
        for (id, raw) in [(5, 1), (6, 2)] {
            let o = Origin {
                db: merged.db,
                id: raw,
            };
            assert_eq!(db.trajectory_origin(id), Some(o));
            let mut t = db.get(id).unwrap();
            assert_eq!(t.provenance.origin, Some(o));
            t.provenance.origin = None;
            t.id = Some(raw);
            assert_eq!(t, traj_for(raw));
        }
        let eps = db.episodes();
        assert_eq!(eps.len(), 2);
        assert_eq!(
            eps[0].origin,
            Origin {
                db: header_origin,
                id: 1
            }
        );
        assert_eq!(
            eps[1].origin,
            Origin {
                db: merged.db,
                id: 1
            }
        );
        assert_eq!(
            eps[1].events.iter().map(|e| e.id).collect::<Vec<_>>(),
            [5, 5, 6]
        );
        assert_eq!(db.utility(1).q(), Some(1.0));
        assert_eq!(db.utility(5).q(), Some(0.0));
        assert_eq!(db.utility(5).retrievals, 2);
        db.verify().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "regenerates the committed merge golden database"]
fn make_golden_merge() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-merge-src");
    let _ = std::fs::remove_dir_all(&tmp);
    let ev = |id| RetrievalEvent {
        id,
        step: None,
        stage: Stage::Plan,
    };
    let parent = Database::open(tmp.join("parent"), Options::default()).unwrap();
    create_spaces(&parent);
    for id in 1..=3 {
        parent.append(&traj_for(id)).unwrap();
    }
    let e = parent.begin_episode().unwrap();
    parent.log_retrievals(e, &[ev(1), ev(2)]).unwrap();
    parent.set_episode_outcome(e, Some(true)).unwrap();
    let out = golden("v1-merge");
    let _ = std::fs::remove_dir_all(&out);
    parent.fork(&out).unwrap();
    let other = Database::open(tmp.join("other"), Options::default()).unwrap();
    create_spaces(&other);
    for id in 1..=2 {
        let mut t = traj_for(id);
        t.id = None;
        other.append(&t).unwrap();
    }
    let e = other.begin_episode().unwrap();
    other.log_retrievals(e, &[ev(1), ev(1), ev(2)]).unwrap();
    other.set_episode_outcome(e, Some(false)).unwrap();
    {
        let db = Database::open(&out, Options::default()).unwrap();
        db.append(&traj_for(4)).unwrap();
        db.merge_from(&other).unwrap();
    }
    let _ = std::fs::remove_file(out.join(trajdb::LOCK_FILE));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The committed v1 database has key files of key-file version 1 (cosine keys stored as
/// given). A reader does not use them and answers from the log; the first writable open
/// rebuilds them as version 2 with the cosine key normalised, and both answer the same.
#[test]
fn golden_v1_key_files_of_version_1_are_rebuilt_with_normalised_cosine_rows() {
    use trajdb::index::kernels::normalised;
    use trajdb::index::keyfile::{KEY_HEADER_LEN, KEY_VERSION};
    use trajdb::Filter;
    let dir = copy("v1");
    let version = |f: &str| {
        let b = std::fs::read(dir.join(f)).unwrap();
        u32::from_le_bytes(b[8..12].try_into().unwrap())
    };
    assert_eq!(version("keys-0.vec"), 1, "the committed file is version 1");
    let q: Vec<f32> = traj_for(4).keys["goal"].iter().map(|x| x * 3.0).collect();
    let read_only = Database::open(&dir, ro()).unwrap();
    let before = read_only.search("goal", &q, 3, &Filter::default()).unwrap();
    drop(read_only);
    assert_eq!(
        version("keys-0.vec"),
        1,
        "a reader never rewrites a key file"
    );
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(version("keys-0.vec"), KEY_VERSION);
    assert_eq!(version("keys-1.vec"), KEY_VERSION);
    assert_eq!(
        db.search("goal", &q, 3, &Filter::default()).unwrap(),
        before
    );
    assert_eq!(before[0].id, 4, "the query is trajectory 4's key, scaled");
    assert!((before[0].score - 1.0).abs() < 1e-6, "{}", before[0].score);
    // Row 0 of the cosine space is trajectory 1's goal key, normalised; the log (and so
    // `get`) keeps the key as given.
    let b = std::fs::read(dir.join("keys-0.vec")).unwrap();
    let h = usize::try_from(KEY_HEADER_LEN).unwrap();
    let key = &traj_for(1).keys["goal"];
    let row: Vec<f32> = b[h..h + key.len() * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(row, normalised(key));
    assert_ne!(&row, key, "the stored row differs from the given key");
    assert_eq!(&db.get(1).unwrap().keys["goal"], key);
    let norm: f64 = row
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    db.verify().unwrap();
    drop(db);
    check_v1_content(&Database::open(&dir, ro()).unwrap(), &LIVE);
    let _ = std::fs::remove_dir_all(&dir);
}
