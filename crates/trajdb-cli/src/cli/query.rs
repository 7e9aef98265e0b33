//! `trajdb search` and `trajdb stats`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use std::sync::Arc;
use trajdb::export::utility_lines;
use trajdb::jsonl::MAX_LINE_BYTES;
use trajdb::{Embedder, EmbedderId, Error, Filter, HashEmbedder, RetrieveQuery, SpaceDef};

use trajdb_agent::embedders::EmbedderSpec;
use trajdb_agent::minilm::MINILM_EMBEDDER_NAME;
use trajdb_agent::openai::{OpenAiClient, OpenAiEmbedder, OPENAI_EMBEDDER_PREFIX};

use super::progress::note;
use super::{
    json_line, open_read, open_read_auto, out_err, write_line, CliResult, CurateArgs, ModeArgs,
    RetrieveArgs, SearchArgs, StatsArgs,
};
use trajdb::SearchPath;

/// `--ef` as a beam width.
fn ef_of(m: &ModeArgs) -> CliResult<usize> {
    usize::try_from(m.ef).map_err(|_| format!("--ef {} is too large", m.ef).into())
}

/// The stderr line saying which path answered `what` (`path=NAME: sentence`). `k`: a
/// search's `-k`, which raises the beam to itself when larger than `--ef`.
fn path_line(what: &str, path: SearchPath, m: &ModeArgs, k: Option<u64>) -> String {
    let how = match path {
        SearchPath::Graph => match k {
            Some(k) if k > m.ef => format!("graph index, ef {k} (--ef {} raised to -k)", m.ef),
            _ => format!("graph index, ef {}", m.ef),
        },
        SearchPath::BelowThreshold => format!(
            "exact scan (fewer rows than --exact-below-rows {})",
            m.exact_below_rows
        ),
        p => p.to_string(),
    };
    format!("trajdb: {what}: path={}: {how}", path.name())
}

/// `"the graph covers N of M rows, ..."` when a graph covers less than fifteen sixteenths of
/// its space's rows (after a rebuild began, or rows appended since `build-graph`):
/// searches then scan the rows past it exactly, which the path name alone does not say.
fn graph_behind(g: &trajdb::GraphStatus) -> Option<String> {
    let behind = g.rows.saturating_sub(g.nodes);
    // Covers less than 15/16 of the rows: 16 * behind > rows, in whole numbers.
    (behind.saturating_mul(16) > g.rows).then(|| {
        format!(
            "the graph covers {} of {} rows; the other {behind} are scanned exactly until `trajdb build-graph` catches it up",
            g.nodes, g.rows
        )
    })
}

/// Why the graph files of `spaces` could not be used, per space (graph restarted empty).
fn discarded_graphs(db: &trajdb::Database, spaces: &[&str]) -> Vec<(String, String)> {
    db.stats()
        .spaces
        .into_iter()
        .filter(|sp| spaces.contains(&sp.def.name.as_str()))
        .filter_map(|sp| Some((sp.def.name.clone(), sp.graph_discarded?)))
        .collect()
}

/// Warns on stderr (also under `--quiet`) for each space of `before` (found at open) and
/// `after` (found by the search's first use) whose graph file could not be used: the graph
/// restarts empty, and this command's read-only handle answers by the exact scan (it
/// rebuilds in memory only a small graph, which it could not keep), so answers stay right
/// but without the graph's speed until `build-graph`.
fn warn_discarded_graphs(db: &Path, before: Vec<(String, String)>, after: Vec<(String, String)>) {
    let mut said: Vec<String> = Vec::new();
    for (space, why) in before.into_iter().chain(after) {
        if said.contains(&space) {
            continue;
        }
        eprintln!(
            "trajdb: warning: the graph index of `{space}` was not used: {why}; searches scan its rows exactly (right answers, without the graph's speed) until `trajdb build-graph {} --space {space}` rebuilds it",
            db.display()
        );
        said.push(space);
    }
}

/// Parses a JSON array of numbers into an f32 vector; `what` names it in errors.
fn parse_vector(text: &str, what: &str) -> CliResult<Vec<f32>> {
    let v: Vec<f32> = serde_json::from_str(text).map_err(|e| {
        Error::invalid(
            what,
            format!("is not a JSON array of numbers ({e}); write it like [0.1, -0.2, 0.3]"),
        )
    })?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            format!("{what}[{i}]"),
            "value is not a finite 32-bit float (it overflows f32)",
        )
        .into());
    }
    Ok(v)
}

/// The query vector and, for `--text`, the embedder that made it.
fn query_vector(a: &SearchArgs, space: &SpaceDef) -> CliResult<(Vec<f32>, Option<EmbedderId>)> {
    if let Some(v) = &a.query.vector {
        return Ok((parse_vector(v, "--vector")?, None));
    }
    if let Some(path) = &a.query.vector_file {
        return Ok((read_vector_file(path)?, None));
    }
    let text = a.query.text.as_deref().unwrap_or_default();
    let e = QueryEmbedders::new(a.embedder.as_deref())?.get(space, "--text")?;
    Ok((e.embed(text)?, Some(e.id())))
}

/// The embedders of query texts: the one `--embedder` gives, else the one each key space
/// records, each made (or loaded) once.
struct QueryEmbedders {
    /// `--embedder`, as given and parsed.
    given: Option<(String, EmbedderSpec)>,
    made: Vec<Arc<dyn Embedder>>,
}

impl QueryEmbedders {
    fn new(given: Option<&str>) -> CliResult<Self> {
        let given = match given {
            Some(text) => Some((
                text.trim().to_string(),
                EmbedderSpec::parse(text, "--embedder").map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        Ok(QueryEmbedders {
            given,
            made: Vec::new(),
        })
    }

    /// The embedder for text of `space` (`flag` names the option of the text).
    fn get(&mut self, space: &SpaceDef, flag: &str) -> CliResult<Arc<dyn Embedder>> {
        if let Some(e) = self
            .made
            .iter()
            .find(|e| Some(&e.id()) == space.embedder.as_ref())
        {
            return Ok(Arc::clone(e));
        }
        let e: Arc<dyn Embedder> = Arc::from(self.make(space, flag)?);
        self.made.push(Arc::clone(&e));
        Ok(e)
    }

    fn make(&self, space: &SpaceDef, flag: &str) -> CliResult<Box<dyn Embedder>> {
        let Some(recorded) = &space.embedder else {
            return Err(format!(
                "key space `{}` records no embedder, so the text of {flag} cannot be embedded for it; give a vector (search: --vector or --vector-file; retrieve: SPACE=@FILE)",
                space.name
            )
            .into());
        };
        if let Some((text, spec)) = &self.given {
            let e = spec
                .build(space.dims, None, None)
                .map_err(|e| format!("--embedder {text}: {e}"))?;
            if e.id() != *recorded {
                return Err(format!(
                    "--embedder {text}: key space `{}` holds keys from embedder {recorded}, not {}; the text of {flag} must be embedded by the embedder that made the keys",
                    space.name,
                    e.id()
                )
                .into());
            }
            return Ok(e);
        }
        text_embedder(space, recorded, flag)
    }
}

/// The embedder that made `space`'s keys (`recorded`), to embed query text (`flag` names the
/// option): the built-in hash embedder, or `openai:MODEL` through `OPENAI_BASE_URL`. A
/// MiniLM space needs its model folder, given by `--embedder minilm:PATH`.
fn text_embedder(
    space: &SpaceDef,
    recorded: &EmbedderId,
    flag: &str,
) -> CliResult<Box<dyn Embedder>> {
    if recorded.name == MINILM_EMBEDDER_NAME {
        return Err(format!(
            "{flag}: key space `{}` holds keys from embedder {recorded}; give its model folder with --embedder minilm:PATH to embed the text",
            space.name
        )
        .into());
    }
    if let Some(model) = recorded.name.strip_prefix(OPENAI_EMBEDDER_PREFIX) {
        let client = OpenAiClient::from_env(model).map_err(|e| {
            format!(
                "{flag}: embedder {recorded} of key space `{}`: {e}",
                space.name
            )
        })?;
        let e = OpenAiEmbedder::connect(client, model).map_err(|e| {
            format!(
                "{flag}: embedder {recorded} of key space `{}`: {e}",
                space.name
            )
        })?;
        if e.id() != *recorded {
            return Err(format!(
                "{flag}: key space `{}` holds keys from {recorded}, but the server's {model} now makes {}",
                space.name,
                e.id()
            )
            .into());
        }
        return Ok(Box::new(e));
    }
    let e = HashEmbedder::new(space.dims)?;
    if e.id() != *recorded {
        return Err(format!(
            "key space `{}` holds keys from embedder {recorded}, but the text of {flag} can only be embedded with the built-in {}, minilm:PATH or openai:MODEL; give a vector made by {} instead",
            space.name,
            e.id(),
            recorded.name
        )
        .into());
    }
    Ok(Box::new(e))
}

/// Reads a query vector file (a JSON array of numbers).
fn read_vector_file(path: &Path) -> CliResult<Vec<f32>> {
    let what = path.display().to_string();
    let f = File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
    let mut text = String::new();
    f.take(MAX_LINE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {what} as UTF-8 text: {e}"))?;
    if text.len() > MAX_LINE_BYTES {
        return Err(format!(
            "{what} is longer than the limit of {MAX_LINE_BYTES} bytes for a query vector"
        )
        .into());
    }
    // A byte-order mark at the start is skipped, as in JSONL input.
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    parse_vector(text, &what)
}

/// One `SPACE=TEXT` or `SPACE=@FILE` key of `retrieve` as (space, vector).
fn retrieve_key(
    db: &trajdb::Database,
    spec: &str,
    flag: &str,
    embedders: &mut QueryEmbedders,
) -> CliResult<(String, Vec<f32>)> {
    let Some((name, value)) = spec.split_once('=') else {
        return Err(format!(
            "{flag} {spec:?}: expected SPACE=TEXT or SPACE=@FILE, e.g. goal=\"make tea\""
        )
        .into());
    };
    let space = db
        .spaces()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            let names: Vec<String> = db.spaces().into_iter().map(|s| s.name).collect();
            format!(
                "{flag} {name}=...: no key space `{name}` (the database has: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
    let v = match value.strip_prefix('@') {
        Some(path) => read_vector_file(Path::new(path))?,
        None => embedders
            .get(&space, &format!("{flag} {name}="))?
            .embed(value)?,
    };
    Ok((name.to_string(), v))
}

/// `trajdb retrieve`.
pub fn retrieve(a: &RetrieveArgs) -> CliResult {
    let db = open_read_auto(&a.db, a.mode.exact_below_rows)?;
    let mut embedders = QueryEmbedders::new(a.embedder.as_deref())?;
    let mut keys = Vec::with_capacity(a.keys.len());
    for spec in &a.keys {
        let key = retrieve_key(&db, spec, "--keys", &mut embedders)?;
        // A space given twice would count twice in the trajectory score's mean: a typo, not
        // a weighting this command offers.
        if keys.iter().any(|(name, _)| *name == key.0) {
            return Err(format!(
                "--keys names key space `{}` twice; give each trajectory-level space once",
                key.0
            )
            .into());
        }
        keys.push(key);
    }
    let step_key = match &a.step_key {
        Some(spec) => Some(retrieve_key(&db, spec, "--step-key", &mut embedders)?),
        None => None,
    };
    let q = RetrieveQuery {
        keys,
        step_key,
        k: usize::try_from(a.k).map_err(|_| format!("-k {} is too large", a.k))?,
        window: usize::try_from(a.window)
            .map_err(|_| format!("--window {} is too large", a.window))?,
        filter: Filter {
            success_only: a.success_only,
            env: a.env.clone(),
            task: a.task.clone(),
            ..Filter::default()
        },
        embedder: None,
    };
    let used: Vec<&str> = q
        .keys
        .iter()
        .chain(&q.step_key)
        .map(|(name, _)| name.as_str())
        .collect();
    let before = discarded_graphs(&db, &used);
    let (examples, p) = db.retrieve_mode(&q, a.mode.mode(), ef_of(&a.mode)?)?;
    warn_discarded_graphs(&a.db, before, discarded_graphs(&db, &used));
    let mut line = path_line("retrieve", p.path, &a.mode, None);
    if let Some(space) = &p.decided_by {
        line.push_str(&format!(" (key space `{space}`)"));
    }
    if !p.spaces.is_empty() {
        let each: Vec<String> = p
            .spaces
            .iter()
            .map(|(name, path)| format!("{name}={}", path.name()))
            .collect();
        line.push_str(&format!("; per key space: {}", each.join(", ")));
        for (name, path) in &p.spaces {
            if let (SearchPath::Graph, Ok(Some(g))) = (path, db.graph_status(name)) {
                if let Some(behind) = graph_behind(&g) {
                    line.push_str(&format!("; `{name}`: {behind}"));
                }
            }
        }
    }
    note(&line);
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.json {
        write_line(&mut out, &json_line(&examples)?)?;
        return out.flush().map_err(out_err);
    }
    if examples.is_empty() {
        write_line(&mut out, "(no matches)")?;
    }
    for (i, ex) in examples.iter().enumerate() {
        let t = &ex.trajectory;
        let outcome = match t.outcome.success {
            Some(true) => "success",
            Some(false) => "failure",
            None => "unknown",
        };
        let step = match (ex.matched_step, ex.step_score) {
            // Step numbers count from 0, as in `--json`, `search` and the API.
            (Some(s), Some(sc)) => format!(", best step {s} ({sc:.4})"),
            _ => String::new(),
        };
        write_line(
            &mut out,
            &format!(
                "#{} id {}  score {:.4} (trajectory {:.4}{step})  {outcome}",
                i + 1,
                ex.id,
                ex.score,
                ex.traj_score
            ),
        )?;
        write_line(&mut out, &format!("   goal: {}", clip(&t.goal, 100)))?;
        let (start, end) = ex.window;
        if start < end {
            write_line(
                &mut out,
                &format!("   steps {start}..{end} (from 0, end excluded):"),
            )?;
        }
        for (j, s) in t.steps.iter().enumerate() {
            let n = u32::try_from(j).map_or(u32::MAX, |j| start.saturating_add(j));
            let mark = if ex.matched_step == Some(n) { '*' } else { ' ' };
            write_line(
                &mut out,
                &format!(
                    "  {mark}{:>3}. {} -> {}",
                    n,
                    clip(&s.observation, 60),
                    clip(&s.action, 40)
                ),
            )?;
        }
    }
    out.flush().map_err(out_err)
}

/// Rows under a header, each column as wide as its widest cell (`right`: right-aligned),
/// two spaces between columns, no trailing spaces.
fn table(head: &[&str], rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .zip(right)
            .map(|((c, &w), &r)| {
                if r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(head.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

fn clip(s: &str, n: usize) -> String {
    let one_line =
        trajdb::export::readable(&s.split_whitespace().collect::<Vec<_>>().join(" "), None);
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut c: String = one_line.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

/// `trajdb search`.
pub fn search(a: &SearchArgs) -> CliResult {
    let db = open_read_auto(&a.db, a.mode.exact_below_rows)?;
    let space = db
        .spaces()
        .into_iter()
        .find(|s| s.name == a.space)
        .ok_or_else(|| Error::UnknownSpace {
            name: a.space.clone(),
        })?;
    let (v, embedder) = query_vector(a, &space)?;
    let filter = Filter {
        success_only: a.success_only,
        env: a.env.clone(),
        task: a.task.clone(),
        ..Filter::default()
    };
    let k = usize::try_from(a.k).map_err(|_| format!("-k {} is too large", a.k))?;
    let what = format!("search of `{}`", a.space);
    let hits = if a.per_trajectory {
        note(&format!(
            "trajdb: {what}: path=exact_per_trajectory: exact scan (--per-trajectory has no graph path)"
        ));
        db.search_per_trajectory(&a.space, &v, k, &filter, embedder.as_ref())?
    } else {
        if let Some(e) = &embedder {
            // The exact search checks the query's embedder against the space's; so does
            // every path here.
            db.check_embedder(&a.space, e)?;
        }
        let before = discarded_graphs(&db, &[a.space.as_str()]);
        let (hits, path) =
            db.search_mode(&a.space, &v, k, &filter, a.mode.mode(), ef_of(&a.mode)?)?;
        let mut line = path_line(&what, path, &a.mode, Some(a.k));
        if let (SearchPath::Graph, Ok(Some(g))) = (path, db.graph_status(&a.space)) {
            if let Some(behind) = graph_behind(&g) {
                line.push_str("; ");
                line.push_str(&behind);
            }
        }
        note(&line);
        warn_discarded_graphs(&a.db, before, discarded_graphs(&db, &[a.space.as_str()]));
        hits
    };
    let mut out = io::stdout().lock();
    if a.json {
        write_line(&mut out, &json_line(&hits)?)?;
    } else {
        write_line(
            &mut out,
            &format!(
                "{:>4}  {:>8}  {:>5}  {:>9}  {:<7}  goal",
                "rank", "id", "step", "score", "outcome"
            ),
        )?;
        for (i, h) in hits.iter().enumerate() {
            let t = db.get(h.id)?;
            let outcome = match t.outcome.success {
                Some(true) => "success",
                Some(false) => "failure",
                None => "unknown",
            };
            let step = h.step.map_or_else(|| "-".to_owned(), |s| s.to_string());
            write_line(
                &mut out,
                &format!(
                    "{:>4}  {:>8}  {:>5}  {:>9.4}  {:<7}  {}",
                    i + 1,
                    h.id,
                    step,
                    h.score,
                    outcome,
                    clip(&t.goal, 60)
                ),
            )?;
        }
        if hits.is_empty() {
            write_line(&mut out, "(no matches)")?;
        }
    }
    out.flush().map_err(out_err)
}

/// `trajdb stats`.
pub fn stats(a: &StatsArgs) -> CliResult {
    let db = open_read_auto(&a.db, a.exact_below_rows)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.utility {
        let lines = utility_lines(&db);
        if !a.json {
            write_line(
                &mut out,
                &format!(
                    "{:>8}  {:>10}  {:>8}  {:>6}",
                    "id", "retrievals", "episodes", "q"
                ),
            )?;
        }
        for l in &lines {
            if a.json {
                write_line(&mut out, &json_line(l)?)?;
            } else {
                let q = l.q.map_or_else(|| "-".to_owned(), |q| format!("{q:.3}"));
                write_line(
                    &mut out,
                    &format!(
                        "{:>8}  {:>10}  {:>8}  {:>6}",
                        l.id, l.retrievals, l.episodes, q
                    ),
                )?;
            }
        }
        return out.flush().map_err(out_err);
    }
    // A graph damaged past its header is found here, not only at the first search.
    db.check_graphs();
    let mut s = db.stats();
    // A read-only handle keeps keys on the heap: take key-file sizes from the directory.
    for (i, sp) in s.spaces.iter_mut().enumerate() {
        if sp.file_bytes == 0 {
            let name = u32::try_from(i).map(trajdb::index::keyfile::key_file_name);
            if let Ok(m) = name.map(|n| std::fs::metadata(a.db.join(n))) {
                sp.file_bytes = m.map_or(0, |m| m.len());
            }
        }
    }
    if a.json {
        write_line(&mut out, &json_line(&s)?)?;
        return out.flush().map_err(out_err);
    }
    let counts = [
        ("trajectories", s.trajectories),
        ("steps", s.steps),
        ("successes", s.successes),
        ("deleted", s.deleted),
        ("episodes", s.episodes),
        ("commit seq", s.commit_seq),
        ("log bytes", s.log_bytes),
        ("key spaces", s.spaces.len() as u64),
        ("exact below rows", s.exact_below_rows),
    ];
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|(k, v)| vec![(*k).to_string(), v.to_string()])
        .collect();
    for l in table(&["", ""], &rows, &[false, true]).iter().skip(1) {
        write_line(&mut out, l)?;
    }
    if !s.spaces.is_empty() {
        write_line(&mut out, "")?;
        let rows: Vec<Vec<String>> = s
            .spaces
            .iter()
            .map(|sp| {
                let d = &sp.def;
                vec![
                    d.name.clone(),
                    match d.level {
                        trajdb::Level::Trajectory => "trajectory",
                        trajdb::Level::Step => "step",
                    }
                    .to_string(),
                    d.dims.to_string(),
                    format!("{:?}", d.metric).to_lowercase(),
                    d.embedder
                        .as_ref()
                        .map_or_else(|| "-".to_string(), |e| format!("{}@{}", e.name, e.version)),
                    sp.rows.to_string(),
                    sp.live_rows.to_string(),
                    sp.file_bytes.to_string(),
                    sp.graph_rows
                        .map_or_else(|| "-".to_string(), |n| n.to_string()),
                    if sp.auto_uses_graph { "graph" } else { "exact" }.to_string(),
                ]
            })
            .collect();
        let head = [
            "space",
            "level",
            "dims",
            "metric",
            "embedder",
            "rows",
            "live rows",
            "key file bytes",
            "graph rows",
            "auto",
        ];
        let right = [
            false, false, true, false, false, true, true, true, true, true,
        ];
        for l in table(&head, &rows, &right) {
            write_line(&mut out, &l)?;
        }
        for sp in &s.spaces {
            if sp.graph_discarded.is_none() {
                if let Ok(Some(g)) = db.graph_status(&sp.def.name) {
                    if let Some(behind) = graph_behind(&g) {
                        write_line(
                            &mut out,
                            &format!("graph index of `{}`: {behind}", sp.def.name),
                        )?;
                    }
                }
            }
            if let Some(why) = &sp.graph_discarded {
                write_line(
                    &mut out,
                    &format!(
                        "graph index of `{}` not used: {why}; it covers {} of {} rows in memory, searches scan the rest exactly; `trajdb build-graph` rebuilds it",
                        sp.def.name,
                        sp.graph_rows.unwrap_or(0),
                        sp.rows
                    ),
                )?;
            }
        }
    }
    out.flush().map_err(out_err)
}

/// `trajdb curate DB`: the choice of exemplar curation over this one database
/// (`trajdb_agent::methods::select_exemplars`), one line per task in task order.
pub fn curate(a: &CurateArgs) -> CliResult {
    let db = open_read(&a.db)?;
    let mut order = Vec::new();
    let best = trajdb_agent::methods::select_exemplars(std::slice::from_ref(&db), &mut order)
        .map_err(|e| super::Failure::from(e.to_string()))?;
    let mut tasks: Vec<(&String, &(f64, usize, u64))> = best.iter().collect();
    tasks.sort_by(|x, y| x.0.cmp(y.0));
    let mut out = io::BufWriter::new(io::stdout().lock());
    for (task, &(q, _, id)) in tasks {
        let o = db.trajectory_origin(id).unwrap_or_default();
        let q = (q >= 0.0).then_some(q);
        if a.json {
            let line = serde_json::json!({
                "task": task, "id": id, "origin": o.db, "origin_id": o.id, "q": q,
            });
            write_line(&mut out, &line.to_string())?;
        } else {
            let q = q.map_or_else(|| "-".to_owned(), |q| format!("{q:.4}"));
            write_line(&mut out, &format!("{task}\t{id}\t{o}\t{q}"))?;
        }
    }
    out.flush().map_err(out_err)
}
