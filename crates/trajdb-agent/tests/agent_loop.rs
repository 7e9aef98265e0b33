//! The ReAct loop against a scripted environment: retrievals logged once each, Q agrees with
//! the episode log, trajectories stored with all their keys.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::BTreeMap;

use trajdb::{Database, Embedder, HashEmbedder, Options, Stage};
use trajdb_agent::policy::{Context, Policy};
use trajdb_agent::react::{ensure_spaces, run_episode, AgentOptions, ReasonRetrieval, Store};
use trajdb_agent::{AgentResult, Environment};

/// Count up to 3 with `inc`; anything else wastes a step; at most 5 steps.
struct Counter {
    n: u32,
    steps: u32,
}

impl Environment for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn task_id(&self) -> String {
        "count-3".into()
    }
    fn goal(&self) -> String {
        "reach 3".into()
    }
    fn observation(&self) -> String {
        format!("count: {}", self.n)
    }
    fn step(&mut self, action: &str) -> AgentResult<()> {
        self.steps += 1;
        if action == "inc" {
            self.n += 1;
        }
        Ok(())
    }
    fn done(&self) -> bool {
        self.n >= 3 || self.steps >= 5
    }
    fn success(&self) -> bool {
        self.n >= 3
    }
}

/// Always says to increment; records how many examples it was shown per stage.
#[derive(Default)]
struct Scripted {
    shown: Vec<(&'static str, usize)>,
}

impl Policy for Scripted {
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.shown.push(("plan", c.examples.len()));
        Ok("increment three times".into())
    }
    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.shown.push(("reason", c.examples.len()));
        Ok(format!("at {} I increment", c.observation))
    }
    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.shown.push(("act", c.examples.len()));
        Ok("inc".into())
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn loop_stores_keys_logs_every_retrieval_once_and_q_matches_episode_log() {
    let dir = temp("agent-loop");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let opts = AgentOptions {
        store: Store::All,
        reason_retrieval: ReasonRetrieval::EveryStep,
        ..Default::default()
    };

    // First episode: empty database, nothing retrieved; stored as a success with all keys.
    let mut p = Scripted::default();
    let r1 = run_episode(&db, &emb, &mut p, &mut Counter { n: 0, steps: 0 }, &opts).unwrap();
    assert!(r1.success);
    assert_eq!(r1.retrieval_calls, 1 + 2 * 3);
    assert_eq!(r1.examples_retrieved, 0);
    let id1 = r1.stored.unwrap();
    let t1 = db.get(id1).unwrap();
    assert_eq!(t1.steps.len(), 3);
    assert_eq!(t1.steps[1].observation, "count: 1");
    assert_eq!(t1.steps[1].reasoning, "at count: 1 I increment");
    for k in ["goal", "plan"] {
        assert_eq!(
            t1.keys[k],
            emb.embed(if k == "goal" {
                "reach 3"
            } else {
                "increment three times"
            })
            .unwrap()
        );
    }
    for k in ["observation", "reasoning", "action"] {
        assert_eq!(t1.step_keys[k].len(), 3);
    }
    assert_eq!(
        t1.step_keys["reasoning"][2],
        emb.embed("at count: 2 I increment").unwrap()
    );

    // A failing episode: it starts with 4 of its 5 steps used, so one increment is all it gets.
    let mut p2 = Scripted::default();
    let r2 = run_episode(&db, &emb, &mut p2, &mut Counter { n: 0, steps: 4 }, &opts).unwrap();
    assert!(!r2.success);
    // It saw the first trajectory at every stage (the failure itself is stored but never
    // retrieved: success filter).
    assert!(p2.shown.iter().all(|&(_, n)| n == 1), "{:?}", p2.shown);
    let fail_id = r2.stored.unwrap();
    assert_eq!(db.get(fail_id).unwrap().outcome.success, Some(false));

    // Third episode succeeds and sees only the successful trajectory.
    let mut p3 = Scripted::default();
    let r3 = run_episode(&db, &emb, &mut p3, &mut Counter { n: 1, steps: 0 }, &opts).unwrap();
    assert!(r3.success);
    assert_eq!(r3.examples_retrieved, r3.retrieval_calls);

    // Every retrieved example is one event, with its stage and (for step stages) its step.
    let eps = db.episodes();
    assert_eq!(eps.len(), 3);
    for (ep, r) in eps.iter().zip([&r1, &r2, &r3]) {
        assert_eq!(Some(ep.id), r.episode);
        assert_eq!(ep.events.len(), r.examples_retrieved);
        assert_eq!(ep.outcome, Some(r.success));
        for e in &ep.events {
            assert_eq!(e.id, id1);
            match e.stage {
                Stage::Plan => assert_eq!(e.step, None),
                _ => assert!(e.step.is_some_and(|s| s < 3)),
            }
        }
        let plans = ep.events.iter().filter(|e| e.stage == Stage::Plan).count();
        assert_eq!(plans, usize::from(r.examples_retrieved > 0));
    }
    assert_eq!(db.utility(fail_id).retrievals, 0);

    // Q recomputed from the episode log equals the stored Q.
    let mut num: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for ep in &eps {
        let Some(o) = ep.outcome else { continue };
        for (id, f) in ep.counts() {
            let e = num.entry(id).or_default();
            e.0 += f * u64::from(o);
            e.1 += f;
        }
    }
    for (id, (s, n)) in num {
        assert_eq!(db.utility(id).q(), Some(s as f64 / n as f64));
    }
    // id1: retrieved 1+2*1 times in the failure, 1+2*2 times in the success.
    assert_eq!(db.utility(id1).retrievals, 3 + 5);
    assert_eq!(db.utility(id1).q(), Some(5.0 / 8.0));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records, per reasoning call, the ids of the examples shown and the history length.
#[derive(Default)]
struct Recorder {
    reason_ids: Vec<Vec<u64>>,
    act_ids: Vec<Vec<u64>>,
    history: Vec<usize>,
}

impl Policy for Recorder {
    fn plan(&mut self, _: &Context<'_>) -> AgentResult<String> {
        Ok("increment three times".into())
    }
    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.reason_ids
            .push(c.examples.iter().map(|e| e.id).collect());
        self.history.push(c.history.len());
        Ok(format!("at {} I increment", c.observation))
    }
    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.act_ids.push(c.examples.iter().map(|e| e.id).collect());
        Ok("inc".into())
    }
}

#[test]
fn reference_reasoning_retrieves_once_then_reuses_the_acting_examples() {
    let dir = temp("agent-first-step");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let opts = AgentOptions::default();
    assert_eq!(opts.reason_retrieval, ReasonRetrieval::FirstStep);
    for _ in 0..2 {
        run_episode(
            &db,
            &emb,
            &mut Scripted::default(),
            &mut Counter { n: 0, steps: 0 },
            &opts,
        )
        .unwrap();
    }
    let mut p = Recorder::default();
    let r = run_episode(&db, &emb, &mut p, &mut Counter { n: 0, steps: 0 }, &opts).unwrap();
    // Plan, one reasoning retrieval at step 0, then one acting retrieval per step.
    assert_eq!(r.retrieval_calls, 1 + 1 + 3);
    assert_eq!(p.reason_ids.len(), 3);
    for step in 1..3 {
        assert_eq!(p.reason_ids[step], p.act_ids[step - 1], "step {step}");
    }
    assert!(!p.reason_ids[0].is_empty());
    // Each stage sees the episode so far.
    assert_eq!(p.history, vec![0, 1, 2]);
    let stored = db.get(r.stored.unwrap()).unwrap();
    assert_eq!(stored.meta["retrieval_calls"], "5");
    assert_eq!(stored.meta["steps"], "3");
    // Every step retrieves for reasoning with EveryStep.
    let every = AgentOptions {
        reason_retrieval: ReasonRetrieval::EveryStep,
        ..Default::default()
    };
    let r = run_episode(
        &db,
        &emb,
        &mut Recorder::default(),
        &mut Counter { n: 0, steps: 0 },
        &every,
    )
    .unwrap();
    assert_eq!(r.retrieval_calls, 1 + 2 * 3);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn disabled_stages_do_not_retrieve_and_evaluation_logs_nothing() {
    let dir = temp("agent-stages");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    run_episode(
        &db,
        &emb,
        &mut Scripted::default(),
        &mut Counter { n: 0, steps: 0 },
        &AgentOptions::default(),
    )
    .unwrap();
    let opts = AgentOptions {
        stages: trajdb_agent::react::Stages {
            plan: false,
            reason: true,
            act: false,
        },
        reason_retrieval: ReasonRetrieval::EveryStep,
        store: Store::Nothing,
        log_usage: false,
        ..Default::default()
    };
    let mut p = Scripted::default();
    let r = run_episode(&db, &emb, &mut p, &mut Counter { n: 0, steps: 0 }, &opts).unwrap();
    assert_eq!(r.retrieval_calls, 3);
    assert_eq!(r.stored, None);
    assert_eq!(r.episode, None);
    assert_eq!(db.episodes().len(), 1);
    assert_eq!(db.ids().len(), 1);
    assert!(p.shown.iter().all(|&(s, n)| (s == "reason") == (n == 1)));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The offline stand-in policy on Wordcraft
// ---------------------------------------------------------------------------------------------

use std::sync::Arc;

use trajdb_agent::policy::{parse_selected, parse_table, OfflinePolicy};
use trajdb_agent::wordcraft::{RecipeBook, Task, WordcraftEnv};

/// Plays a fixed list of entity names.
struct Replay {
    names: Vec<String>,
    at: usize,
}

impl Policy for Replay {
    fn plan(&mut self, _: &Context<'_>) -> AgentResult<String> {
        Ok("follow the recipe".into())
    }
    fn reason(&mut self, _: &Context<'_>) -> AgentResult<String> {
        Ok(format!("select {}", self.names[self.at % self.names.len()]))
    }
    fn act(&mut self, _: &Context<'_>) -> AgentResult<String> {
        self.at += 1;
        Ok(format!(
            "select {}",
            self.names[(self.at - 1) % self.names.len()]
        ))
    }
}

/// Every pair a trajectory combined, in order (first, second), read from its text.
fn pairs_of(t: &trajdb::Trajectory) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for st in &t.steps {
        let name = st.action.strip_prefix("select ").unwrap().to_owned();
        if let Some(first) = parse_selected(&st.observation) {
            out.push((first, name));
        }
    }
    out
}

fn depth2_task(book: &RecipeBook) -> Task {
    book.tasks(2)
        .into_iter()
        .find(|t| t.recipes.len() == 2 && book.is_solvable(t))
        .unwrap()
}

#[test]
fn table_parsing_keeps_names_with_spaces() {
    let obs = "Goal: create acid rain\ntable: 0:acid rain 1:water 2:hot chocolate bar\nselected: hot chocolate bar";
    assert_eq!(
        parse_table(obs),
        vec!["acid rain", "water", "hot chocolate bar"]
    );
    assert_eq!(parse_selected(obs).as_deref(), Some("hot chocolate bar"));
    assert_eq!(parse_selected("table: 0:a\nselected: none"), None);
}

#[test]
fn offline_policy_reproduces_the_recipe_of_a_stored_success_for_the_same_goal() {
    let dir = temp("agent-same-goal");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let book = Arc::new(RecipeBook::builtin_default());
    let task = depth2_task(&book);
    // task.recipes goes from the goal down: make the intermediate first.
    let name = |id: u32| book.name(id).unwrap().to_owned();
    let (ga, gb, goal) = task.recipes[0];
    let (ia, ib, inter) = task.recipes[1];
    let script = vec![name(ia), name(ib), name(ga), name(gb)];
    let mut env = WordcraftEnv::new(book.clone(), task.clone(), 4, 4, 1).unwrap();
    let mut replay = Replay {
        names: script,
        at: 0,
    };
    let stored = run_episode(&db, &emb, &mut replay, &mut env, &AgentOptions::default()).unwrap();
    assert!(stored.success, "the scripted recipe must work");
    let want = vec![(name(ia), name(ib)), (name(ga), name(gb))];
    assert_eq!(pairs_of(&stored.trajectory), want);

    // Other tables (other distractors, other order): the policy repeats the recipe.
    let mut solved = 0;
    for seed in 2..12u64 {
        let mut env = WordcraftEnv::new(book.clone(), task.clone(), 4, 4, seed).unwrap();
        let mut p = OfflinePolicy::new(seed);
        let opts = AgentOptions {
            store: Store::Nothing,
            log_usage: false,
            ..Default::default()
        };
        let r = run_episode(&db, &emb, &mut p, &mut env, &opts).unwrap();
        let got = pairs_of(&r.trajectory);
        let unordered = |v: &[(String, String)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| {
                    if a <= b {
                        (a.clone(), b.clone())
                    } else {
                        (b.clone(), a.clone())
                    }
                })
                .collect()
        };
        assert_eq!(
            unordered(&got),
            unordered(&want),
            "seed {seed}: {:?}",
            r.trajectory.steps
        );
        assert!(r.trajectory.final_observation.contains(&name(inter)));
        solved += usize::from(r.success);
        let _ = goal;
    }
    assert_eq!(solved, 10);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn offline_policy_acts_only_on_table_entities_and_never_repeats_a_pair() {
    let dir = temp("agent-explore");
    let db = Database::open(&dir, Options::default()).unwrap();
    let emb = HashEmbedder::default();
    ensure_spaces(&db, &emb).unwrap();
    let book = Arc::new(RecipeBook::builtin_default());
    let tasks = book.tasks(2);
    let opts = AgentOptions {
        store: Store::Successes,
        ..Default::default()
    };
    let mut p = OfflinePolicy::new(3);
    let mut combos = 0;
    // 60 episodes with 8 combinations each: the database fills with successes of other
    // tasks (examples naming entities absent from the current table) as it goes.
    for (i, task) in tasks.iter().step_by(97).take(60).enumerate() {
        let mut env = WordcraftEnv::new(book.clone(), task.clone(), 4, 8, i as u64).unwrap();
        let r = run_episode(&db, &emb, &mut p, &mut env, &opts).unwrap();
        let mut seen = std::collections::HashSet::new();
        for st in &r.trajectory.steps {
            let name = st.action.strip_prefix("select ").unwrap();
            let table = parse_table(&st.observation);
            assert!(table.iter().any(|t| t == name), "{name} not on {table:?}");
        }
        for (a, b) in pairs_of(&r.trajectory) {
            let key = if a <= b { (a, b) } else { (b, a) };
            assert!(
                seen.insert(key.clone()),
                "pair {key:?} repeated in {:?}",
                r.trajectory.steps
            );
            combos += 1;
        }
    }
    assert!(combos > 200, "{combos} combinations checked");
    assert!(
        !db.ids().is_empty(),
        "some episodes succeeded and were stored"
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn ctx<'a>(obs: &'a str, thought: &'a str) -> Context<'a> {
    Context {
        goal: "create zzqx",
        category: None,
        plan: "",
        observation: obs,
        thought,
        actions: None,
        action_space: None,
        history: &[],
        examples: &[],
    }
}

#[test]
fn offline_policy_decides_from_context_text_alone() {
    // Names no recipe book has: the policy can only be reading the context (it holds no
    // environment or recipe book: `Policy` methods get a `Context` and nothing else).
    let table = ["ploof", "wug snark", "blick"];
    let obs = "Goal: create zzqx\ntable: 0:ploof 1:wug snark 2:blick\nselected: none";
    let mut p = OfflinePolicy::new(0);
    p.plan(&ctx("", "")).unwrap();
    let thought = p.reason(&ctx(obs, "")).unwrap();
    let a = p.act(&ctx(obs, &thought)).unwrap();
    let first = a.strip_prefix("select ").unwrap().to_owned();
    assert!(table.contains(&first.as_str()), "{a}");
    let obs2 = format!("Goal: create zzqx\ntable: 0:ploof 1:wug snark 2:blick\nselected: {first}");
    let thought2 = p.reason(&ctx(&obs2, "")).unwrap();
    let b = p.act(&ctx(&obs2, &thought2)).unwrap();
    let second = b.strip_prefix("select ").unwrap();
    assert!(table.contains(&second), "{b}");
}
