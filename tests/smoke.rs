//! End-to-end basics: append, search, retrieve, usage counters and reopen.

use trajdb::{
    Database, Filter, Level, Metric, Options, RetrievalEvent, RetrieveQuery, SpaceDef, Stage, Step,
    Trajectory,
};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-smoke-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn traj(goal: &str, ok: bool, g: [f32; 2], steps: &[[f32; 2]]) -> Trajectory {
    let mut t = Trajectory {
        goal: goal.into(),
        env: "test".into(),
        ..Default::default()
    };
    t.outcome.success = Some(ok);
    t.keys.insert("goal".into(), g.to_vec());
    for (i, _) in steps.iter().enumerate() {
        t.steps.push(Step {
            observation: format!("obs {i}"),
            reasoning: format!("think {i}"),
            action: format!("act {i}"),
            reward: None,
        });
    }
    t.step_keys.insert(
        "observation".into(),
        steps.iter().map(|s| s.to_vec()).collect(),
    );
    t
}

#[test]
fn append_search_retrieve_and_reopen_keep_everything() {
    let dir = tmp("basic");
    let ids;
    {
        let db = Database::open(&dir, Options::default()).unwrap();
        db.create_space(&SpaceDef::new("goal", Level::Trajectory, 2, Metric::Cosine))
            .unwrap();
        db.create_space(&SpaceDef::new(
            "observation",
            Level::Step,
            2,
            Metric::Cosine,
        ))
        .unwrap();
        let a = db
            .append(&traj(
                "a",
                true,
                [1.0, 0.0],
                &[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            ))
            .unwrap();
        let b = db
            .append(&traj("b", false, [1.0, 0.1], &[[0.0, 1.0]]))
            .unwrap();
        let c = db
            .append(&traj("c", true, [0.0, 1.0], &[[0.0, 1.0], [1.0, 0.0]]))
            .unwrap();
        ids = (a, b, c);
        let hits = db
            .search("goal", &[1.0, 0.0], 2, &Filter::default())
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![a, b]);
        let ok = Filter {
            success_only: true,
            ..Default::default()
        };
        let hits = db.search("goal", &[1.0, 0.0], 2, &ok).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![a, c]);
        let ex = db
            .retrieve(&RetrieveQuery {
                keys: vec![("goal".into(), vec![1.0, 0.0])],
                step_key: Some(("observation".into(), vec![0.0, 1.0])),
                k: 2,
                window: 0,
                filter: ok.clone(),
                embedder: None,
            })
            .unwrap();
        assert_eq!(ex[0].id, a);
        assert_eq!(ex[0].matched_step, Some(1));
        assert_eq!(ex[0].trajectory.steps.len(), 1);
        assert_eq!(ex[0].trajectory.steps[0].action, "act 1");
        let ep = db.begin_episode().unwrap();
        db.log_retrievals(
            ep,
            &[
                RetrievalEvent {
                    id: a,
                    step: Some(1),
                    stage: Stage::Reason,
                },
                RetrievalEvent {
                    id: a,
                    step: None,
                    stage: Stage::Plan,
                },
                RetrievalEvent {
                    id: c,
                    step: None,
                    stage: Stage::Plan,
                },
            ],
        )
        .unwrap();
        assert_eq!(db.utility(a).q(), None);
        db.set_episode_outcome(ep, Some(true)).unwrap();
        let ep2 = db.begin_episode().unwrap();
        db.log_retrievals(
            ep2,
            &[RetrievalEvent {
                id: a,
                step: None,
                stage: Stage::Act,
            }],
        )
        .unwrap();
        db.set_episode_outcome(ep2, Some(false)).unwrap();
        let u = db.utility(a);
        assert_eq!((u.retrievals, u.episodes), (3, 2));
        assert!((u.q().unwrap() - 2.0 / 3.0).abs() < 1e-9);
        db.verify().unwrap();
    }
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.ids(), vec![ids.0, ids.1, ids.2]);
    assert!((db.utility(ids.0).q().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    let t = db.get(ids.0).unwrap();
    assert_eq!(t.steps.len(), 3);
    assert_eq!(t.step_keys["observation"][2], vec![1.0, 1.0]);
    db.verify().unwrap();
    db.delete(ids.1).unwrap();
    let before = db.stats().log_bytes;
    db.compact().unwrap();
    assert!(db.stats().log_bytes < before);
    assert_eq!(db.ids(), vec![ids.0, ids.2]);
    db.verify().unwrap();
    drop(db);
    let db = Database::open(&dir, Options::default()).unwrap();
    assert_eq!(db.ids(), vec![ids.0, ids.2]);
    assert!((db.utility(ids.0).q().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    db.verify().unwrap();
}
