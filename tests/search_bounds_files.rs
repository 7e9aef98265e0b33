//! Search-bounds files (`quant-N.idx`, `bounds-N.idx`): saved when a writer checkpoints,
//! loaded by the next open's first search instead of being rebuilt from every key row, and
//! ignored whenever they do not prove that they derive from this database's rows. Answers
//! never change: every retrieval here is compared with the exhaustive one.

mod support;
use support::*;

use trajdb::{Database, Filter, Options, RetrieveQuery};

const DIMS: usize = 16;
/// Enough trajectories for the quantised first pass (it starts at 4,096 rows).
const N: u64 = 4_200;

fn near(rng: &mut Rng, center: &[f32], spread: f32) -> Vec<f32> {
    center.iter().map(|c| c + spread * rng.f32()).collect()
}

/// Appends `count` clustered trajectories (ids from `first`).
fn fill(db: &Database, rng: &mut Rng, centres: &[Vec<f32>], first: u64, count: u64) {
    let mut batch = Vec::new();
    for n in first..first + count {
        let c = &centres[rng.below(centres.len() as u64) as usize];
        let steps = 1 + rng.below(6) as usize;
        let mut t = random_traj(rng, DIMS, steps, n);
        t.keys.insert("goal".into(), near(rng, c, 0.1));
        t.keys.insert("plan".into(), near(rng, c, 0.1));
        let obs = (0..steps).map(|_| near(rng, c, 0.2)).collect();
        t.step_keys.insert("observation".into(), obs);
        batch.push(t);
        if batch.len() == 256 {
            db.append_many(&batch).unwrap();
            batch.clear();
        }
    }
    db.append_many(&batch).unwrap();
}

fn queries(rng: &mut Rng, centres: &[Vec<f32>]) -> Vec<RetrieveQuery> {
    (0..6)
        .map(|i| {
            let c = &centres[i % centres.len()];
            RetrieveQuery {
                keys: vec![
                    ("goal".into(), near(rng, c, 0.05)),
                    ("plan".into(), near(rng, c, 0.05)),
                ],
                step_key: Some(("observation".into(), near(rng, c, 0.2))),
                k: [1, 10, 50][i % 3],
                window: 2,
                filter: Filter {
                    success_only: i % 2 == 0,
                    ..Default::default()
                },
                embedder: None,
            }
        })
        .collect()
}

/// Every query's pruned answer equals the exhaustive one; also a plain search.
fn check_answers(db: &Database, qs: &[RetrieveQuery], what: &str) {
    for (i, q) in qs.iter().enumerate() {
        assert_eq!(
            db.retrieve(q).unwrap(),
            db.retrieve_exhaustive(q).unwrap().0,
            "{what}: query {i}"
        );
    }
    let goal = &qs[0].keys[0].1;
    let quantised = db.search("goal", goal, 10, &Filter::default()).unwrap();
    assert_eq!(quantised.len(), 10, "{what}: search");
}

fn loaded(db: &Database) -> Vec<(bool, bool)> {
    db.search_bounds_loaded()
        .into_iter()
        .map(|(_, q, b)| (q, b))
        .collect()
}

fn writer() -> Options {
    Options::default()
}

fn read_only() -> Options {
    Options {
        read_only: true,
        ..Options::default()
    }
}

fn build(name: &str) -> (std::path::PathBuf, Vec<Vec<f32>>, Vec<RetrieveQuery>) {
    let (dir, db) = buffered_db(name, DIMS as u32);
    let mut rng = Rng::new(77);
    let centres: Vec<Vec<f32>> = (0..8).map(|_| rng.vec(DIMS)).collect();
    fill(&db, &mut rng, &centres, 0, N);
    let qs = queries(&mut rng, &centres);
    // Builds the quantised copies and the step bounds in memory; close saves them.
    check_answers(&db, &qs, "first handle");
    assert_eq!(loaded(&db), vec![(false, false); 3]);
    db.close().unwrap();
    (dir, centres, qs)
}

#[test]
fn bounds_saved_at_close_are_loaded_by_the_next_open_with_the_same_answers() {
    let (dir, _, qs) = build("sbf-load");
    for f in ["quant-0.idx", "quant-1.idx", "bounds-2.idx"] {
        assert!(dir.join(f).exists(), "{f} was not written");
    }
    for opts in [read_only(), writer()] {
        let db = Database::open(&dir, opts.clone()).unwrap();
        check_answers(&db, &qs, "reopened");
        assert_eq!(
            loaded(&db),
            vec![(true, false), (true, false), (false, true)],
            "read_only {}",
            opts.read_only
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commits_after_the_saved_bounds_extend_the_loaded_ones() {
    let (dir, centres, qs) = build("sbf-extend");
    let db = Database::open(&dir, writer()).unwrap();
    let mut rng = Rng::new(5);
    fill(&db, &mut rng, &centres, N, 300);
    check_answers(&db, &qs, "after appends");
    assert_eq!(
        loaded(&db),
        vec![(true, false), (true, false), (false, true)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_missing_or_foreign_bounds_file_is_ignored_and_answers_do_not_change() {
    let (dir, _, qs) = build("sbf-damage");
    // A flipped byte in the body of the step bounds; the first quantised copy removed.
    let path = dir.join("bounds-2.idx");
    let mut b = std::fs::read(&path).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x40;
    std::fs::write(&path, &b).unwrap();
    std::fs::remove_file(dir.join("quant-0.idx")).unwrap();
    // Space 1's copy replaced by one derived from another database's rows of the same
    // shape (same space id, dims and metric; other rows).
    let (other, _, _) = build("sbf-other");
    std::fs::copy(other.join("quant-1.idx"), dir.join("quant-1.idx")).unwrap();
    let db = Database::open(&dir, read_only()).unwrap();
    check_answers(&db, &qs, "damaged files");
    assert_eq!(loaded(&db), vec![(false, false); 3]);
    drop(db);
    // A cut-short file.
    let q0 = std::fs::read(other.join("quant-0.idx")).unwrap();
    std::fs::write(dir.join("quant-0.idx"), &q0[..q0.len() / 3]).unwrap();
    let db = Database::open(&dir, read_only()).unwrap();
    check_answers(&db, &qs, "cut file");
    assert_eq!(loaded(&db)[0], (false, false));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn a_database_opened_by_scanning_the_log_does_not_use_bounds_files() {
    let (dir, _, qs) = build("sbf-scan");
    let db = Database::open(
        &dir,
        Options {
            read_only: true,
            verify_on_open: true,
            ..Options::default()
        },
    )
    .unwrap();
    check_answers(&db, &qs, "scanned open");
    assert_eq!(loaded(&db), vec![(false, false); 3]);
    let _ = std::fs::remove_dir_all(&dir);
}
