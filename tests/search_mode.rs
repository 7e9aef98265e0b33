//! The automatic choice between the exact scan and the graph index (`SearchMode`,
//! `Options::exact_below_rows`): below the threshold `Auto` answers exactly even with a
//! graph, at or above it through the graph, `Exact` overrides, no graph means the scan, a
//! retrieve goes approximate only when every key space qualifies, and `stats` reports it.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use support::{clustered, tmp, Rng};
use trajdb::{
    Database, Durability, Filter, GraphParams, Level, Metric, Options, RetrieveQuery, SearchMode,
    SearchPath, SpaceDef, Step, Trajectory,
};

const DIMS: usize = 32;
const N: usize = 2000;

fn opts(exact_below_rows: u64) -> Options {
    Options {
        durability: Durability::Buffered,
        exact_below_rows,
        ..Default::default()
    }
}

fn params() -> GraphParams {
    GraphParams {
        m: 4,
        ef_construction: 8,
    }
}

/// A database of `N` clustered goal keys and a step space `obs` of 4 steps each, with
/// graphs on the spaces named in `graphs`, reopened with threshold `threshold`.
fn make_db(name: &str, graphs: &[&str], threshold: u64) -> (std::path::PathBuf, Database) {
    let dir = tmp(name);
    let db = Database::open(&dir, opts(threshold)).unwrap();
    db.create_space(&SpaceDef::new(
        "goal",
        Level::Trajectory,
        DIMS as u32,
        Metric::Cosine,
    ))
    .unwrap();
    db.create_space(&SpaceDef::new(
        "obs",
        Level::Step,
        DIMS as u32,
        Metric::Cosine,
    ))
    .unwrap();
    let mut rng = Rng::new(7);
    let goals = clustered(&mut rng, N, 40, DIMS);
    let steps = clustered(&mut rng, N * 4, 40, DIMS);
    let ts: Vec<Trajectory> = goals
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut t = Trajectory {
                goal: format!("goal {i}"),
                ..Default::default()
            };
            t.outcome.success = Some(i.is_multiple_of(2));
            t.keys.insert("goal".into(), g.clone());
            for _ in 0..4 {
                t.steps.push(Step::default());
            }
            t.step_keys
                .insert("obs".into(), steps[i * 4..i * 4 + 4].to_vec());
            t
        })
        .collect();
    db.append_many(&ts).unwrap();
    for g in graphs {
        db.build_graph(g, params()).unwrap();
    }
    (dir, db)
}

fn reopen(dir: &std::path::Path, db: Database, threshold: u64) -> Database {
    db.close().unwrap();
    Database::open(dir, opts(threshold)).unwrap()
}

/// A query whose graph answer (a sparse graph, beam 10) differs from the exact answer, so
/// that telling the two paths apart by their hits means something.
fn query_where_graph_differs(db: &Database) -> Vec<f32> {
    let mut rng = Rng::new(99);
    for q in clustered(&mut rng, 200, 40, DIMS) {
        let exact = db.search("goal", &q, 10, &Filter::default()).unwrap();
        let approx = db
            .search_approx("goal", &q, 10, 10, &Filter::default())
            .unwrap();
        if approx != exact {
            return q;
        }
    }
    panic!("the graph walk found the exact top 10 for all 200 queries; make the graph sparser");
}

#[test]
fn below_the_threshold_auto_scans_exactly_even_with_a_graph() {
    let (dir, db) = make_db("mode-below", &["goal"], u64::MAX);
    let q = query_where_graph_differs(&db);
    // One row short of the threshold: exact.
    let db = reopen(&dir, db, N as u64 + 1);
    let f = Filter::default();
    let (hits, path) = db
        .search_mode("goal", &q, 10, &f, SearchMode::Auto, 10)
        .unwrap();
    assert_eq!(path, SearchPath::BelowThreshold);
    assert_eq!(hits, db.search("goal", &q, 10, &f).unwrap());
    assert_ne!(hits, db.search_approx("goal", &q, 10, 10, &f).unwrap());
    assert_eq!(db.auto_path("goal").unwrap(), SearchPath::BelowThreshold);
    // `Approx` still walks the graph below the threshold.
    let (approx, path) = db
        .search_mode("goal", &q, 10, &f, SearchMode::Approx, 10)
        .unwrap();
    assert_eq!(path, SearchPath::Graph);
    assert_eq!(approx, db.search_approx("goal", &q, 10, 10, &f).unwrap());
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn at_the_threshold_auto_walks_the_graph_and_exact_overrides_it() {
    let (dir, db) = make_db("mode-above", &["goal"], N as u64);
    let q = query_where_graph_differs(&db);
    let f = Filter::default();
    let exact = db.search("goal", &q, 10, &f).unwrap();
    let graph = db.search_approx("goal", &q, 10, 10, &f).unwrap();
    let (hits, path) = db
        .search_mode("goal", &q, 10, &f, SearchMode::Auto, 10)
        .unwrap();
    assert_eq!(path, SearchPath::Graph);
    assert_eq!(hits, graph);
    assert_ne!(hits, exact);
    // Per query, `Exact` gives the exact answer on the same space.
    let (hits, path) = db
        .search_mode("goal", &q, 10, &f, SearchMode::Exact, 10)
        .unwrap();
    assert_eq!(path, SearchPath::Requested);
    assert_eq!(hits, exact);
    // `search` itself stays exact whatever the threshold.
    assert_eq!(db.search("goal", &q, 10, &f).unwrap(), exact);
    // A beam of the row count (or of a quarter of it) is answered by the scan: the exact
    // answer, which a walk cannot promise (a row unlike every other can be out of its reach).
    for ef in [N, N / 4] {
        let (wide, path) = db
            .search_mode("goal", &q, 10, &f, SearchMode::Auto, ef)
            .unwrap();
        assert_eq!((&wide, path), (&exact, SearchPath::WideBeam), "ef {ef}");
    }
    // Just below a quarter the graph is walked.
    let (_, path) = db
        .search_mode("goal", &q, 10, &f, SearchMode::Auto, N / 4 - 1)
        .unwrap();
    assert_eq!(path, SearchPath::Graph);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_graph_auto_and_approx_scan_exactly() {
    let (dir, db) = make_db("mode-nograph", &[], 0);
    let mut rng = Rng::new(3);
    let f = Filter {
        success_only: true,
        ..Default::default()
    };
    for q in clustered(&mut rng, 5, 40, DIMS) {
        let exact = db.search("goal", &q, 7, &f).unwrap();
        for mode in [SearchMode::Auto, SearchMode::Approx] {
            let (hits, path) = db.search_mode("goal", &q, 7, &f, mode, 10).unwrap();
            assert_eq!(path, SearchPath::NoGraph, "{mode:?}");
            assert_eq!(hits, exact, "{mode:?}");
        }
    }
    assert_eq!(db.auto_path("goal").unwrap(), SearchPath::NoGraph);
    // Errors are the search's: unknown space, wrong dimensions.
    for mode in [SearchMode::Auto, SearchMode::Exact, SearchMode::Approx] {
        assert!(db
            .search_mode("nope", &[0.0; DIMS], 1, &f, mode, 10)
            .is_err());
        assert!(db.search_mode("goal", &[1.0; 3], 1, &f, mode, 10).is_err());
    }
    assert!(db.auto_path("nope").is_err());
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_search_for_no_rows_reports_the_path_a_search_would_take() {
    // k = 0 returns nothing; the path it reports is the decision the search makes, not a
    // fixed "graph" (a space without a graph said `graph` before).
    let (dir, db) = make_db("mode-k0", &["goal"], 0);
    let q = vec![0.5f32; DIMS];
    let f = Filter::default();
    let (hits, path) = db.search_approx_path("goal", &q, 0, 10, &f).unwrap();
    assert!(hits.is_empty());
    assert_eq!(path, SearchPath::Graph);
    let (hits, path) = db.search_approx_path("obs", &q, 0, 10, &f).unwrap();
    assert!(hits.is_empty());
    assert_eq!(path, SearchPath::NoGraph);
    let (_, path) = db.search_approx_path("goal", &q, 0, N, &f).unwrap();
    assert_eq!(path, SearchPath::WideBeam);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn retrieve_query(rng: &mut Rng) -> RetrieveQuery {
    let q = clustered(rng, 2, 40, DIMS);
    RetrieveQuery {
        keys: vec![("goal".into(), q[0].clone())],
        step_key: Some(("obs".into(), q[1].clone())),
        k: 10,
        window: 1,
        filter: Filter {
            success_only: true,
            ..Default::default()
        },
        embedder: None,
    }
}

#[test]
fn auto_retrieve_goes_through_the_graphs_only_when_every_key_space_qualifies() {
    // goal has N rows, obs 4 N; only goal has a graph.
    let (dir, db) = make_db("mode-retrieve", &["goal"], 0);
    let mut rng = Rng::new(5);
    let rq = retrieve_query(&mut rng);
    let exact = db.retrieve(&rq).unwrap();
    let (got, p) = db.retrieve_mode(&rq, SearchMode::Auto, 16).unwrap();
    assert_eq!(p.path, SearchPath::NoGraph);
    assert_eq!(p.decided_by.as_deref(), Some("obs"));
    assert!(p.spaces.is_empty());
    assert_eq!(got, exact);
    // Forced onto the graphs, with only the step space lacking one: goal's candidates come
    // from its graph, so the call is a graph call.
    let (_, p) = db.retrieve_mode(&rq, SearchMode::Approx, 16).unwrap();
    assert_eq!(p.path, SearchPath::Graph);
    // A step-key-only query forced onto a space without a graph never touched a graph: the
    // path says so and names the space, as an automatic exact retrieve does.
    let obs_only = RetrieveQuery {
        keys: Vec::new(),
        ..rq.clone()
    };
    let (_, p) = db.retrieve_mode(&obs_only, SearchMode::Approx, 16).unwrap();
    assert_eq!(p.path, SearchPath::NoGraph);
    assert_eq!(p.decided_by.as_deref(), Some("obs"));
    assert_eq!(p.spaces, vec![("obs".to_string(), SearchPath::NoGraph)]);

    // Both spaces indexed and at or above the threshold: the graphs answer.
    db.build_graph("obs", params()).unwrap();
    let (got, p) = db.retrieve_mode(&rq, SearchMode::Auto, 16).unwrap();
    assert_eq!(p.path, SearchPath::Graph);
    assert_eq!(p.decided_by, None);
    assert_eq!(
        p.spaces,
        vec![
            ("goal".to_string(), SearchPath::Graph),
            ("obs".to_string(), SearchPath::Graph)
        ]
    );
    assert_eq!(got, db.retrieve_approx(&rq, 16).unwrap());

    // Exact overrides.
    let (got, p) = db.retrieve_mode(&rq, SearchMode::Exact, 16).unwrap();
    assert_eq!((p.path, p.decided_by), (SearchPath::Requested, None));
    assert_eq!(got, exact);

    // Threshold between goal's rows and obs's rows: goal is too small, so all is exact.
    let db = reopen(&dir, db, N as u64 + 1);
    let (got, p) = db.retrieve_mode(&rq, SearchMode::Auto, 16).unwrap();
    assert_eq!(p.path, SearchPath::BelowThreshold);
    assert_eq!(p.decided_by.as_deref(), Some("goal"));
    assert_eq!(got, exact);
    // The step key alone qualifies: approximate.
    let step_only = RetrieveQuery {
        keys: Vec::new(),
        ..rq.clone()
    };
    let (got, p) = db.retrieve_mode(&step_only, SearchMode::Auto, 16).unwrap();
    assert_eq!(p.path, SearchPath::Graph);
    assert_eq!(got, db.retrieve_approx(&step_only, 16).unwrap());
    // No key at all is refused on every path, as `retrieve` refuses it.
    let none = RetrieveQuery {
        keys: Vec::new(),
        step_key: None,
        ..rq.clone()
    };
    for mode in [SearchMode::Auto, SearchMode::Exact, SearchMode::Approx] {
        let e = db.retrieve_mode(&none, mode, 16).unwrap_err();
        assert!(e.to_string().contains("no trajectory key"), "{mode:?}: {e}");
    }
    assert!(db.retrieve_approx(&none, 16).is_err());
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stats_say_which_spaces_have_a_graph_and_whether_auto_uses_it() {
    let (dir, db) = make_db("mode-stats", &["goal"], N as u64 + 1);
    let s = db.stats();
    assert_eq!(s.exact_below_rows, N as u64 + 1);
    let goal = s.spaces.iter().find(|s| s.def.name == "goal").unwrap();
    let obs = s.spaces.iter().find(|s| s.def.name == "obs").unwrap();
    assert_eq!(goal.graph_rows, Some(N as u64));
    assert!(!goal.auto_uses_graph, "{N} rows is below {}", N + 1);
    assert_eq!(obs.graph_rows, None);
    assert!(!obs.auto_uses_graph);
    let db = reopen(&dir, db, N as u64);
    let s = db.stats();
    let goal = s.spaces.iter().find(|s| s.def.name == "goal").unwrap();
    assert!(goal.auto_uses_graph);
    assert_eq!(
        Options::default().exact_below_rows,
        trajdb::DEFAULT_EXACT_BELOW_ROWS
    );
    assert_eq!(trajdb::DEFAULT_EXACT_BELOW_ROWS, 20_000);
    // Names and sentences of the paths are stable.
    assert_eq!(SearchPath::Graph.name(), "graph");
    assert_eq!(SearchPath::BelowThreshold.name(), "exact_below_threshold");
    assert!(SearchPath::NoGraph.to_string().contains("no graph index"));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}
