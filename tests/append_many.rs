//! `Database::append_many`: ids in order, one sync for the batch, and a refused trajectory
//! leaves the ones before it committed and names its index.

use trajdb::{Database, Durability, Level, Metric, Options, SpaceDef, Trajectory};

fn traj(goal: &str, key: Vec<f32>) -> Trajectory {
    let mut t = Trajectory {
        goal: goal.into(),
        ..Default::default()
    };
    t.keys.insert("goal".into(), key);
    t
}

#[test]
fn append_many_commits_in_order_and_survives_reopen() {
    let dir = tempdir("ok");
    for durability in [
        Durability::SyncEachCommit,
        Durability::GroupCommit,
        Durability::Buffered,
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        let opts = Options {
            durability,
            ..Default::default()
        };
        let db = Database::open(&dir, opts.clone()).expect("open");
        db.create_space(&SpaceDef::new("goal", Level::Trajectory, 2, Metric::Dot))
            .expect("space");
        let batch: Vec<Trajectory> = (0..5)
            .map(|i| traj(&format!("g{i}"), vec![i as f32, 1.0]))
            .collect();
        let ids = db.append_many(&batch).expect("append_many");
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        drop(db);
        let db = Database::open(&dir, opts).expect("reopen");
        assert_eq!(db.ids(), ids);
        assert_eq!(db.get(3).expect("get").goal, "g2");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn append_many_refusal_keeps_the_prefix_and_names_the_index() {
    let dir = tempdir("bad");
    let db = Database::open(&dir, Options::default()).expect("open");
    db.create_space(&SpaceDef::new("goal", Level::Trajectory, 2, Metric::Dot))
        .expect("space");
    let batch = vec![
        traj("a", vec![1.0, 0.0]),
        traj("b", vec![1.0, 0.0, 0.0]),
        traj("c", vec![0.0, 1.0]),
    ];
    let e = db.append_many(&batch).expect_err("dims").to_string();
    assert!(e.contains("batch[1]"), "{e}");
    assert_eq!(db.ids(), [1]);
    drop(db);
    let db = Database::open(&dir, Options::default()).expect("reopen");
    assert_eq!(db.ids(), [1]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("trajdb-append-many-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
