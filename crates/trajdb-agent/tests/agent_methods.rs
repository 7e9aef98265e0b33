//! Exemplar curation, the fork db-curation relies on, the predictor's AUROC, and a short
//! db-curation run end to end.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::sync::Arc;

use std::collections::BTreeSet;
use trajdb_agent::methods::{
    curate, q_values, run_seed, segment_ends, Curation, Experiment, Method, QWeighting,
};
use trajdb_agent::policy::{OfflinePolicy, Policy};

use trajdb::{Database, Embedder, HashEmbedder, Options, RetrievalEvent, Stage, Trajectory};
use trajdb_agent::predict::{
    auroc, calibration, fit_logistic, recipe_features, shown_recipes, Predictor, FEATURES,
};
use trajdb_agent::react::{ensure_spaces, AgentOptions};
use trajdb_agent::wordcraft::{Interface, RecipeBook};
use trajdb_agent::{wordcraft_task_id, AgentResult};

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn traj(task: &str, success: bool) -> Trajectory {
    let mut t = Trajectory {
        task: task.into(),
        env: "wordcraft".into(),
        goal: format!("goal of {task}"),
        ..Default::default()
    };
    t.outcome.success = Some(success);
    t
}

/// One episode that retrieved `ids` (once each) and ended with `success`.
fn episode(db: &Database, ids: &[u64], success: bool) {
    let ep = db.begin_episode().unwrap();
    let ev: Vec<RetrievalEvent> = ids
        .iter()
        .map(|&id| RetrievalEvent {
            id,
            step: None,
            stage: Stage::Plan,
        })
        .collect();
    db.log_retrievals(ep, &ev).unwrap();
    db.set_episode_outcome(ep, Some(success)).unwrap();
}

#[test]
fn exemplar_curation_keeps_one_highest_q_success_per_training_task() {
    let base = temp("curate");
    let book = RecipeBook::builtin_default();
    let tasks: Vec<_> = book.tasks(1).into_iter().take(3).collect();
    let ids: Vec<String> = tasks.iter().map(|t| wordcraft_task_id(&book, t)).collect();
    let a = Database::open(base.join("a"), Options::default()).unwrap();
    let b = Database::open(base.join("b"), Options::default()).unwrap();
    let a1 = a.append(&traj(&ids[0], true)).unwrap();
    let a2 = a.append(&traj(&ids[0], true)).unwrap();
    let a3 = a.append(&traj(&ids[1], true)).unwrap();
    let af = a.append(&traj(&ids[2], false)).unwrap();
    let b1 = b.append(&traj(&ids[0], true)).unwrap();
    let b2 = b.append(&traj(&ids[1], true)).unwrap();
    // Q(a1) = 1/2, Q(a2) = 1, Q(b1) = 0; a3 never retrieved (no Q), Q(b2) = 1.
    episode(&a, &[a1, a2], true);
    episode(&a, &[a1], false);
    episode(&a, &[af], true);
    episode(&b, &[b1], false);
    episode(&b, &[b2], true);
    let out = curate(
        &[a, b],
        &tasks,
        &book,
        &base.join("out"),
        &HashEmbedder::default(),
        Curation::TRAJDB,
    )
    .unwrap();
    let kept: Vec<Trajectory> = out
        .ids()
        .into_iter()
        .map(|id| out.get(id).unwrap())
        .collect();
    // At most one per training task; the failed task has none.
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].task, ids[0]);
    assert_eq!(kept[0].meta["curated_from"], format!("db-0:{a2}"));
    assert_eq!(kept[1].task, ids[1]);
    assert_eq!(kept[1].meta["curated_from"], format!("db-1:{b2}"));
    assert!(kept.iter().all(|t| t.outcome.success == Some(true)));
    let _ = a3;
    drop(out);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn fork_used_by_db_curation_leaves_the_source_untouched() {
    let base = temp("fork");
    let src = Database::open(base.join("src"), Options::default()).unwrap();
    let t1 = src.append(&traj("t1", true)).unwrap();
    episode(&src, &[t1], true);
    let before = (src.ids(), src.commit_seq(), src.utilities(), src.episodes());
    src.fork(base.join("dst")).unwrap();
    let dst = Database::open(base.join("dst"), Options::default()).unwrap();
    assert_eq!(dst.ids(), before.0);
    let t2 = dst.append(&traj("t2", false)).unwrap();
    episode(&dst, &[t1, t2], false);
    dst.delete(t1).unwrap();
    assert_eq!(
        (src.ids(), src.commit_seq(), src.utilities(), src.episodes()),
        before
    );
    src.verify().unwrap();
    drop(src);
    let again = Database::open(base.join("src"), Options::default()).unwrap();
    assert_eq!(again.ids(), before.0);
    assert_eq!(again.utility(t1).q(), Some(1.0));
    drop((again, dst));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn auroc_is_one_when_separable_zero_when_inverted_half_on_ties() {
    let labels = [false, false, true, true];
    assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
    assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
    assert_eq!(auroc(&[0.5; 4], &labels), Some(0.5));
    // One tie between a positive and a negative counts one half: (1 + 1 + 0.5 + 1) / 4.
    assert_eq!(auroc(&[0.1, 0.4, 0.4, 0.8], &labels), Some(0.875));
    assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &labels), Some(0.75));
    assert_eq!(auroc(&[0.3, 0.7], &[true, true]), None);
}

#[test]
fn calibration_bins_count_and_average() {
    let bins = calibration(&[0.05, 0.15, 0.95, 1.0], &[false, true, true, true], 10);
    assert_eq!(bins.len(), 3);
    assert_eq!((bins[0].count, bins[0].observed), (1, 0.0));
    assert_eq!((bins[2].count, bins[2].observed), (2, 1.0));
    assert!((bins[2].mean_predicted - 0.975).abs() < 1e-12);
}

#[test]
fn segments_double_from_the_first_length_ten_for_the_reference_twenty_for_the_paper_text() {
    assert_eq!(segment_ends(400, 20), vec![20, 60, 140, 300, 400]);
    assert_eq!(segment_ends(10, 20), vec![10]);
    assert_eq!(segment_ends(160, 10), vec![10, 30, 70, 150, 160]);
    assert_eq!(segment_ends(5, 0), vec![1, 3, 5]);
}

/// Trajectory with the meta the agent stores: its episode and retrieval calls.
fn traj_of_episode(task: &str, success: bool, ep: u64, calls: u64) -> Trajectory {
    let mut t = traj(task, success);
    t.meta.insert("episode".into(), ep.to_string());
    t.meta.insert("retrieval_calls".into(), calls.to_string());
    t
}

#[test]
fn q_weighting_paper_counts_retrievals_per_call_weighs_each_episode_by_its_calls() {
    let base = temp("qweight");
    let db = Database::open(base.join("a"), Options::default()).unwrap();
    let x = db.append(&traj("x", true)).unwrap();
    // Episode 1 (success, 2 calls) retrieved x once; episode 2 (failure, 10 calls)
    // retrieved x 4 times.
    let e1 = db.begin_episode().unwrap();
    let ev = |n: usize| -> Vec<RetrievalEvent> {
        (0..n)
            .map(|_| RetrievalEvent {
                id: x,
                step: None,
                stage: Stage::Act,
            })
            .collect()
    };
    db.log_retrievals(e1, &ev(1)).unwrap();
    db.set_episode_outcome(e1, Some(true)).unwrap();
    let e2 = db.begin_episode().unwrap();
    db.log_retrievals(e2, &ev(4)).unwrap();
    db.set_episode_outcome(e2, Some(false)).unwrap();
    db.append(&traj_of_episode("t1", true, e1, 2)).unwrap();
    db.append(&traj_of_episode("t2", false, e2, 10)).unwrap();
    // Paper: 1 / (1 + 4) = 0.2. Per call: (1/2) / (1/2 + 4/10) = 0.5 / 0.9.
    let paper = q_values(&db, QWeighting::Paper).unwrap()[&x];
    let per_call = q_values(&db, QWeighting::PerCall).unwrap()[&x];
    assert!((paper - 0.2).abs() < 1e-12, "{paper}");
    assert!((per_call - 0.5 / 0.9).abs() < 1e-12, "{per_call}");
    drop(db);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn reference_curation_keeps_only_q_above_zero_trajdb_keeps_the_best_anyway() {
    let base = temp("qthreshold");
    let book = RecipeBook::builtin_default();
    let tasks: Vec<_> = book.tasks(1).into_iter().take(3).collect();
    let ids: Vec<String> = tasks.iter().map(|t| wordcraft_task_id(&book, t)).collect();
    let make = |name: &str| {
        let db = Database::open(base.join(name), Options::default()).unwrap();
        let zero = db.append(&traj(&ids[0], true)).unwrap(); // Q = 0
        let _never = db.append(&traj(&ids[1], true)).unwrap(); // no Q
        let good = db.append(&traj(&ids[2], true)).unwrap(); // Q = 1
        episode(&db, &[zero], false);
        episode(&db, &[good], true);
        db
    };
    let kept = |rule: Curation, out: &str| -> Vec<String> {
        let src = make(&format!("src-{out}"));
        let db = curate(
            &[src],
            &tasks,
            &book,
            &base.join(out),
            &HashEmbedder::default(),
            rule,
        )
        .unwrap();
        db.ids()
            .into_iter()
            .map(|id| db.get(id).unwrap().task)
            .collect()
    };
    assert_eq!(kept(Curation::REFERENCE, "ref"), vec![ids[2].clone()]);
    assert_eq!(kept(Curation::TRAJDB, "ours"), ids);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn short_db_curation_run_reports_consistent_figures() {
    let base = temp("dbcur");
    let book = Arc::new(RecipeBook::builtin_default());
    let tasks = book.tasks(1);
    let (train, test) = (&tasks[..30], &tasks[30..40]);
    let factory =
        |seed: u64| -> AgentResult<Box<dyn Policy>> { Ok(Box::new(OfflinePolicy::new(seed))) };
    let mut calls = 0usize;
    let mut progress = |_: usize, _: usize| calls += 1;
    let mut e = Experiment {
        book: book.clone(),
        train,
        test,
        seed: 7,
        agent: AgentOptions::default(),
        hindsight: true,
        population: 3,
        dir: base.clone(),
        distractors: 4,
        max_combinations: 4,
        embedder: &HashEmbedder::default(),
        policy: &factory,
        checkpoints: vec![10],
        progress: &mut progress,
        interface: Interface::Select,
        segment_first: 20,
        curation: Curation::TRAJDB,
        starter: &[],
        max_failures: 0,
    };
    let r = run_seed(Method::DbCuration, &mut e).unwrap();
    assert!(r.forks <= 2);
    assert_eq!(r.predictions.len(), 10);
    assert_eq!(r.curve.first().map(|p| p.0), Some(0));
    assert_eq!(
        r.curve.last().map(|p| (p.0, p.1)),
        Some((r.final_trajectories.1, r.after))
    );
    assert!(calls >= 90);
    let db = Database::open(
        &r.final_db,
        Options {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(db.ids().len(), r.final_trajectories.0);
    assert!(db.episodes().len() >= 30);
    drop(db);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn wordcraft_task_ids_are_unique_per_tree_and_do_not_spell_out_the_recipes() {
    let book = RecipeBook::builtin_default();
    let tasks = book.tasks(2);
    let ids: std::collections::HashSet<String> =
        tasks.iter().map(|t| wordcraft_task_id(&book, t)).collect();
    assert_eq!(ids.len(), tasks.len(), "one id per task");
    for t in tasks.iter().take(200) {
        let id = wordcraft_task_id(&book, t);
        for &(a, b, r) in &t.recipes {
            for e in [a, b, r] {
                let name = book.name(e).unwrap();
                assert!(!id.contains(name), "task id {id} names entity {name}");
            }
        }
    }
}

fn step(observation: &str, action: &str) -> trajdb::Step {
    trajdb::Step {
        observation: observation.into(),
        reasoning: String::new(),
        action: action.into(),
        reward: None,
    }
}

/// A successful episode for `create steam`: water + fire on a table with earth.
fn steam_episode() -> Trajectory {
    let mut t = traj("steam", true);
    t.goal = "create steam".into();
    t.steps = vec![
        step(
            "Goal: create steam\ntable: 0:water 1:fire 2:earth\nselected: none",
            "select water",
        ),
        step(
            "Goal: create steam\ntable: 0:water 1:fire 2:earth\nselected: water",
            "select fire",
        ),
    ];
    t.final_observation =
        "Goal: create steam\ntable: 0:water 1:fire 2:earth 3:steam\nselected: none".into();
    t
}

#[test]
fn shown_recipes_reads_pairs_and_products_from_steps() {
    let mut t = steam_episode();
    assert_eq!(
        shown_recipes(&t),
        vec![("fire".to_owned(), "water".to_owned(), "steam".to_owned())]
    );
    // A pair after which nothing new appears is not a recipe; the next pair's product is
    // read from the final observation.
    t.steps.insert(
        0,
        step(
            "Goal: create steam\ntable: 0:water 1:fire 2:earth\nselected: earth",
            "select earth",
        ),
    );
    t.steps.insert(
        0,
        step(
            "Goal: create steam\ntable: 0:water 1:fire 2:earth\nselected: none",
            "select earth",
        ),
    );
    assert_eq!(shown_recipes(&t).len(), 1);
    // A second selection on a different selected entity is not read as a pair.
    t.steps[3].observation = "Goal: create steam\ntable: 0:water 1:fire\nselected: fire".into();
    assert!(shown_recipes(&t).is_empty());
}

#[test]
fn recipe_features_find_direct_and_chained_routes_to_the_goal() {
    let r = |a: &str, b: &str, p: &str| (a.to_owned(), b.to_owned(), p.to_owned());
    let known: BTreeSet<_> = [r("fire", "water", "steam"), r("earth", "steam", "geyser")]
        .into_iter()
        .collect();
    let table = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let t = table(&["water", "fire", "earth"]);
    assert_eq!(recipe_features(&known, &t, "steam", 4), (1, true, true));
    assert_eq!(recipe_features(&known, &t, "geyser", 4), (1, false, true));
    assert_eq!(recipe_features(&known, &t, "geyser", 1), (1, false, false));
    let t = table(&["water", "fire", "air"]);
    assert_eq!(recipe_features(&known, &t, "geyser", 4), (1, false, false));
    assert_eq!(recipe_features(&known, &t, "mud", 4), (1, false, false));
}

#[test]
fn logistic_fit_ranks_by_an_informative_feature() {
    // Feature 3 decides the outcome (with noise from one flipped label); the rest are
    // constant or uninformative.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..200 {
        let on = i % 4 == 0;
        let mut x = [0.0; FEATURES];
        x[0] = f64::from(i % 7);
        x[3] = f64::from(u8::from(on));
        xs.push(x);
        ys.push(on != (i == 5));
    }
    let (mean, sd, w, b) = fit_logistic(&xs, &ys, 0.01);
    assert!(w[3] > 1.0, "weight {w:?}");
    let scores: Vec<f64> = xs
        .iter()
        .map(|x| {
            let z: f64 = (0..FEATURES).map(|j| w[j] * (x[j] - mean[j]) / sd[j]).sum();
            1.0 / (1.0 + (-(z + b)).exp())
        })
        .collect();
    assert!(auroc(&scores, &ys).unwrap() > 0.95);
}

#[test]
fn training_features_see_only_what_was_stored_before_the_episode() {
    let dir = temp("predict-asof");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let keyed = |mut t: Trajectory| {
        t.keys.insert("goal".into(), emb.embed(&t.goal).unwrap());
        let obs = t
            .steps
            .iter()
            .map(|s| emb.embed(&s.observation).unwrap())
            .collect();
        t.step_keys.insert("observation".into(), obs);
        t
    };
    db.append(&keyed(steam_episode())).unwrap();
    let mut failed = steam_episode();
    failed.outcome.success = Some(false);
    db.append(&keyed(failed)).unwrap();
    let p = Predictor::default();
    let rows = p.training_rows(&db, &emb).unwrap();
    assert_eq!(rows.len(), 2);
    // The first episode had nothing before it; the second saw the first's recipe.
    assert_eq!(rows[0].0.goal_recipe_on_table, 0.0);
    assert!(rows[0].1);
    assert_eq!(rows[1].0.goal_recipe_on_table, 1.0);
    assert_eq!(rows[1].0.goal_reachable, 1.0);
    assert_eq!(rows[1].0.table_size, 3.0);
    assert!(!rows[1].1);
    // Now the task sees both; a table without fire cannot use the recipe.
    let obs = "Goal: create steam\ntable: 0:water 1:earth\nselected: none";
    let f = p
        .features(&db, &emb, "create steam", obs, None, 0.5)
        .unwrap();
    assert_eq!((f.goal_recipe_on_table, f.table_size), (0.0, 2.0));
    assert!(p.fit(&db, &emb).unwrap().is_some());
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The offline stand-in, except that planning fails with an LLM error on every third call.
struct Flaky {
    inner: OfflinePolicy,
    calls: usize,
}

impl Policy for Flaky {
    fn plan(&mut self, c: &trajdb_agent::policy::Context<'_>) -> AgentResult<String> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return Err(trajdb_agent::AgentError::Llm(
                trajdb_agent::openai::LlmError::Timeout {
                    url: "http://127.0.0.1:9/v1/chat/completions".into(),
                    after: std::time::Duration::from_secs(1),
                },
            ));
        }
        self.inner.plan(c)
    }
    fn reason(&mut self, c: &trajdb_agent::policy::Context<'_>) -> AgentResult<String> {
        self.inner.reason(c)
    }
    fn act(&mut self, c: &trajdb_agent::policy::Context<'_>) -> AgentResult<String> {
        self.inner.act(c)
    }
}

fn flaky_run(name: &str, max_failures: usize) -> AgentResult<trajdb_agent::methods::SeedResult> {
    let base = temp(name);
    let book = Arc::new(RecipeBook::builtin_default());
    let tasks = book.tasks(1);
    let (train, test) = (&tasks[..9], &tasks[100..106]);
    let factory = |seed: u64| -> AgentResult<Box<dyn Policy>> {
        Ok(Box::new(Flaky {
            inner: OfflinePolicy::new(seed),
            calls: 0,
        }))
    };
    let mut progress = |_: usize, _: usize| {};
    let mut e = Experiment {
        book: book.clone(),
        train,
        test,
        seed: 1,
        agent: AgentOptions::default(),
        hindsight: false,
        population: 1,
        dir: base.clone(),
        distractors: 0,
        max_combinations: 4,
        embedder: &HashEmbedder::default(),
        policy: &factory,
        checkpoints: vec![],
        progress: &mut progress,
        interface: Interface::Combine,
        segment_first: 10,
        curation: Curation::REFERENCE,
        starter: &[],
        max_failures,
    };
    let r = run_seed(Method::TrajBootstrap, &mut e);
    if let Ok(r) = &r {
        let db = Database::open(
            &r.final_db,
            Options {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let errors: Vec<Trajectory> = db
            .ids()
            .into_iter()
            .map(|id| db.get(id).unwrap())
            .filter(|t| t.meta.contains_key("error"))
            .collect();
        // Training: calls 3, 6, 9 of 9 failed; each is stored with an unknown outcome.
        assert_eq!(errors.len(), 3);
        assert!(errors.iter().all(|t| t.outcome.success.is_none()));
        assert!(errors[0].meta["error"].contains("timed out"));
        assert_eq!(db.ids().len(), 9);
    }
    let _ = std::fs::remove_dir_all(&base);
    r
}

#[test]
fn a_failing_task_is_recorded_and_counted_and_the_run_goes_on() {
    let r = flaky_run("flaky-ok", 100).unwrap();
    // 3 training failures, and in each of the two evaluations (before, after: a fresh
    // policy each) calls 3 and 6 of 6 fail.
    let train = r.failures.iter().filter(|f| f.part == "train").count();
    let test = r.failures.iter().filter(|f| f.part == "test").count();
    assert_eq!((train, test), (3, 4));
    assert_eq!(r.failures[0].index, 2);
    assert!(r.after <= 4.0 / 6.0 + 1e-9);
}

#[test]
fn more_failures_than_tolerated_end_the_run_with_one_clear_error() {
    let err = flaky_run("flaky-abort", 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.starts_with("3 tasks failed, more than the 2 tolerated"),
        "{err}"
    );
    assert!(err.contains("timed out"), "{err}");
}
