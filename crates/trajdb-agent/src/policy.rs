//! Policies: what turns the goal, the observation and the retrieved examples into a plan, a
//! thought and an action. [`LlmPolicy`] asks a language model through prompts built by
//! [`prompt`]; [`OfflinePolicy`] is a non-LLM stand-in.

use crate::openai::ChatMessage;
use crate::{AgentResult, Llm};
use trajdb::rng::SplitMix64;
use trajdb::Example;

/// Everything a policy may see at one stage.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The goal text.
    pub goal: &'a str,
    /// The task category, if any.
    pub category: Option<&'a str>,
    /// The plan (empty while planning).
    pub plan: &'a str,
    /// The current observation (empty while planning).
    pub observation: &'a str,
    /// The thought just produced (empty except when acting).
    pub thought: &'a str,
    /// The admissible actions, when the environment knows them (None while planning).
    pub actions: Option<&'a [String]>,
    /// The retrieved examples for this stage, best first.
    pub examples: &'a [Example],
}

/// The three decisions of the ReAct agent.
pub trait Policy {
    /// A plan for the goal.
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String>;
    /// A thought about the next action.
    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String>;
    /// The next action.
    fn act(&mut self, c: &Context<'_>) -> AgentResult<String>;
}

/// Which stage a prompt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptStage {
    /// Write a plan.
    Plan,
    /// Write a thought.
    Reason,
    /// Write an action.
    Act,
}

const SYSTEM: &str = "You are an agent acting in a text environment. Successful \
trajectories of earlier tasks are shown as examples; use them. Answer with exactly what is \
asked and nothing else.";

/// Renders one retrieved example as an in-context demonstration.
pub fn render_example(i: usize, e: &Example) -> String {
    let t = &e.trajectory;
    let mut s = format!("## Example {}\nGoal: {}\n", i + 1, t.goal);
    if let Some(c) = &t.category {
        s.push_str(&format!("Category: {c}\n"));
    }
    if !t.plan.is_empty() {
        s.push_str(&format!("Plan: {}\n", t.plan));
    }
    if e.window.0 > 0 {
        s.push_str(&format!("(steps from {} on)\n", e.window.0));
    }
    for st in &t.steps {
        s.push_str(&format!(
            "Observation: {}\nThought: {}\nAction: {}\n",
            st.observation, st.reasoning, st.action
        ));
    }
    s
}

/// The chat messages for one stage: a system message, then the examples as demonstrations,
/// then the current goal, plan, observation and thought, and the request.
pub fn prompt(stage: PromptStage, c: &Context<'_>) -> Vec<ChatMessage> {
    let mut user = String::new();
    if !c.examples.is_empty() {
        user.push_str("# Examples\n");
        for (i, e) in c.examples.iter().enumerate() {
            user.push_str(&render_example(i, e));
        }
        user.push('\n');
    }
    user.push_str(&format!("# Your task\nGoal: {}\n", c.goal));
    if let Some(cat) = c.category {
        user.push_str(&format!("Category: {cat}\n"));
    }
    if !c.plan.is_empty() {
        user.push_str(&format!("Plan: {}\n", c.plan));
    }
    if !c.observation.is_empty() {
        user.push_str(&format!("Observation: {}\n", c.observation));
    }
    if !c.thought.is_empty() {
        user.push_str(&format!("Thought: {}\n", c.thought));
    }
    if let Some(actions) = c.actions.filter(|a| !a.is_empty()) {
        user.push_str(&format!("Admissible actions: {}\n", actions.join(" | ")));
    }
    user.push_str(match stage {
        PromptStage::Plan => "\nWrite a short plan (one or two sentences).",
        PromptStage::Reason => {
            "\nThink about the next action in one or two sentences. Write only the thought."
        }
        PromptStage::Act => "\nWrite the next action only, in the form the examples use.",
    });
    vec![ChatMessage::system(SYSTEM), ChatMessage::user(user)]
}

/// Strips a leading `Action:` / `Thought:` / `Plan:` label and keeps the first line for
/// actions.
fn clean(stage: PromptStage, reply: &str) -> String {
    let mut s = reply.trim();
    for label in ["Action:", "Thought:", "Plan:"] {
        if let Some(r) = s.strip_prefix(label) {
            s = r.trim();
        }
    }
    if stage == PromptStage::Act {
        s = s.lines().next().unwrap_or("").trim();
        s = s.trim_matches('`').trim();
    }
    s.to_owned()
}

/// A policy that asks a language model at every stage.
pub struct LlmPolicy<L: Llm> {
    /// The model.
    pub llm: L,
}

impl<L: Llm> LlmPolicy<L> {
    fn ask(&mut self, stage: PromptStage, c: &Context<'_>) -> AgentResult<String> {
        let reply = self.llm.complete(&prompt(stage, c))?;
        Ok(clean(stage, &reply))
    }
}

impl<L: Llm> Policy for LlmPolicy<L> {
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.ask(PromptStage::Plan, c)
    }
    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.ask(PromptStage::Reason, c)
    }
    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        self.ask(PromptStage::Act, c)
    }
}

/// Which parts of [`OfflinePolicy`] are on (for measuring what each contributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineConfig {
    /// Remember the episode: never combine a pair twice, prefer pairs with entities made in
    /// this episode. Off: every choice is independent of earlier steps (pairs may repeat).
    pub episode_memory: bool,
    /// Imitate recipes: combine a pair an example combined productively, preferring the goal's
    /// own recipe and pairs that lead to it. Off: copy the first selection of the
    /// best-matching example step whose entity is on the table (the earlier stand-in).
    pub recipe_aware: bool,
    /// Also copy productive pairs of examples for other goals when nothing leads to the goal
    /// (they make something new, which may be an ingredient).
    pub imitate_other_goals: bool,
}

impl Default for OfflineConfig {
    /// Everything on.
    fn default() -> Self {
        OfflineConfig {
            episode_memory: true,
            recipe_aware: true,
            imitate_other_goals: true,
        }
    }
}

/// A non-LLM stand-in policy for runs without a model. It is **not** a language model and
/// has no commonsense: it can only imitate what retrieved examples did, and explore.
///
/// It sees only what an LLM would see: the goal, the current observation text, the
/// retrieved examples' text, and its own earlier steps in the episode (what it selected and
/// what appeared on the table after). It never looks at the environment's internals: it gets
/// a [`Context`] and nothing else. The table is parsed from an observation line of the form
/// `table: 0:NAME 1:NAME ...` (names may contain spaces), the selection from `selected: NAME`.
///
/// - Plan: reads the plan-stage examples (whole trajectories of the most similar goals) for
///   recipes, and names the goal's recipe when an example for the same goal shows it.
/// - Reason: reads the examples' steps as recipes: `select A` on `selected: none` followed
///   by `select B` is the pair (A, B); what was appended to the table after it is its
///   product (for the last pair of a successful example: the example's goal). Then, among
///   pairs of table entities not yet combined in this episode, it chooses, in order:
///   1. a pair an example combined into the goal;
///   2. a pair whose product is an ingredient (directly or through further recipes) of a
///      known recipe for the goal and is not on the table yet;
///   3. a productive pair of an example for the same goal;
///   4. (if [`OfflineConfig::imitate_other_goals`]) a productive pair of any example whose
///      product is not on the table yet, best-scoring example first;
///   5. otherwise it explores (seeded): an untried pair that no example showed to be
///      unproductive, preferring pairs with the entity made most recently in this episode.
///
///   The thought names the pair and why: `select A, then B; example 2 (create G) made G
///   from them`. Storing the pair's names in the thought makes acting-stage retrieval (keyed
///   on the thought) find steps that combined the same entities.
/// - Act: selects the entity the thought names when it is on the table; else the action of
///   the best acting example when that entity is on the table; else explores.
#[derive(Debug, Clone)]
pub struct OfflinePolicy {
    rng: SplitMix64,
    config: OfflineConfig,
    ep: EpisodeMemory,
}

/// A recipe read from an example: `a` and `b` combined, yielding `product` (None: nothing
/// new appeared; the product is unknown when the example does not show what followed).
#[derive(Debug, Clone)]
struct Seen {
    a: String,
    b: String,
    product: Product,
    /// The example's goal is the current goal.
    same_goal: bool,
    /// The example's retrieval score.
    score: f32,
    /// Which example (1-based, in its retrieval call) and its goal text, for the thought.
    from: (usize, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Product {
    Made(String),
    Nothing,
    Unknown,
}

/// What the policy remembers of its own episode. Reset by [`Policy::plan`], which starts
/// every episode.
#[derive(Debug, Clone, Default)]
struct EpisodeMemory {
    /// The goal entity's name.
    goal: String,
    /// The table at the previous decision.
    last_table: Vec<String>,
    /// Entities that appeared on the table during the episode, oldest first.
    made: Vec<String>,
    /// Pairs combined this episode (sorted names).
    tried: Vec<(String, String)>,
    /// The pair combined last (first, second), until its result is seen.
    last_pair: Option<(String, String)>,
    /// Entities made this episode with the pair that made them.
    made_from: Vec<(String, String, String)>,
    /// Recipes read from the plan-stage examples.
    plan_recipes: Vec<Seen>,
    /// The pair chosen at the first selection: (first, second).
    intent: Option<(String, String)>,
}

/// Entity names on the table line (`table: 0:a 1:b c 2:d`) of an observation, by slot.
/// Names may contain spaces: a token `N:rest` starts a slot, other tokens continue it.
pub fn parse_table(observation: &str) -> Vec<String> {
    let Some(rest) = observation
        .lines()
        .find_map(|l| l.trim().strip_prefix("table:"))
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for tok in rest.split_whitespace() {
        match tok.split_once(':') {
            Some((n, name)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                out.push(name.to_owned());
            }
            _ => {
                if let Some(last) = out.last_mut() {
                    last.push(' ');
                    last.push_str(tok);
                }
            }
        }
    }
    out
}

/// The name on the `selected:` line of an observation (None for `none` or no such line).
pub fn parse_selected(observation: &str) -> Option<String> {
    observation
        .lines()
        .find_map(|l| l.trim().strip_prefix("selected:"))
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(str::to_owned)
}

/// The NAME of a `select NAME` action.
pub(crate) fn selected_name(action: &str) -> Option<&str> {
    action
        .trim()
        .strip_prefix("select ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The entity of a goal text `create NAME` (or the whole text).
pub(crate) fn goal_entity(goal: &str) -> &str {
    let g = goal.trim();
    let g = g.strip_prefix("Goal:").map_or(g, str::trim);
    g.strip_prefix("create ").map_or(g, str::trim)
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// The recipes an example's steps show (see [`OfflinePolicy`]).
fn read_recipes(n: usize, e: &Example, goal: &str) -> Vec<Seen> {
    let t = &e.trajectory;
    let steps = &t.steps;
    let ex_goal = goal_entity(&t.goal).to_owned();
    let success = t.outcome.success == Some(true);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < steps.len() {
        let (s0, s1) = (&steps[i], &steps[i + 1]);
        let first = selected_name(&s0.action);
        let second = selected_name(&s1.action);
        let (Some(a), Some(b)) = (first, second) else {
            i += 1;
            continue;
        };
        if parse_selected(&s0.observation).is_some()
            || parse_selected(&s1.observation).as_deref() != Some(a)
        {
            i += 1;
            continue;
        }
        let before = parse_table(&s0.observation);
        let after_text = match steps.get(i + 2) {
            Some(s2) => Some(s2.observation.as_str()),
            // The window's last pair: the final observation follows it when the window
            // reaches the end of the trajectory, which it does when the example's goal
            // appeared (a success ends at its goal).
            None => Some(t.final_observation.as_str()),
        };
        let product = match after_text {
            Some(text) => {
                let after = parse_table(text);
                let new: Vec<&String> = after.iter().filter(|x| !before.contains(x)).collect();
                match (new.as_slice(), steps.get(i + 2)) {
                    ([], Some(_)) => Product::Nothing,
                    ([x], Some(_)) => Product::Made((*x).clone()),
                    ([x], None) if success && **x == ex_goal => Product::Made(ex_goal.clone()),
                    _ => Product::Unknown,
                }
            }
            None => Product::Unknown,
        };
        out.push(Seen {
            a: a.to_owned(),
            b: b.to_owned(),
            product,
            same_goal: ex_goal == goal,
            score: e.score,
            from: (n + 1, t.goal.clone()),
        });
        i += 2;
    }
    out
}

impl OfflinePolicy {
    /// A policy whose random exploration is seeded by `seed`, everything on.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, OfflineConfig::default())
    }

    /// A policy with some parts switched off (see [`OfflineConfig`]).
    pub fn with_config(seed: u64, config: OfflineConfig) -> Self {
        OfflinePolicy {
            rng: SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_4E5B),
            config,
            ep: EpisodeMemory::default(),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        usize::try_from(self.rng.below(n64)).unwrap_or(0)
    }

    fn tried(&self, a: &str, b: &str) -> bool {
        self.config.episode_memory && self.ep.tried.contains(&pair(a, b))
    }

    /// Updates the episode memory from the observation (what appeared since last time).
    fn observe(&mut self, table: &[String]) {
        let last = self.ep.last_pair.take();
        for x in table {
            if !self.ep.last_table.is_empty()
                && !self.ep.last_table.contains(x)
                && !self.ep.made.contains(x)
            {
                self.ep.made.push(x.clone());
                if let Some((a, b)) = &last {
                    self.ep.made_from.push((x.clone(), a.clone(), b.clone()));
                }
            }
        }
        self.ep.last_table = table.to_vec();
    }

    /// The best pair to imitate, with the reason, among untried pairs on `table`
    /// (restricted to pairs containing `with` when given).
    fn imitate(
        &self,
        table: &[String],
        known: &[Seen],
        with: Option<&str>,
    ) -> Option<(String, String, String)> {
        let goal = self.ep.goal.as_str();
        let on = |x: &str| table.iter().any(|t| t == x);
        // Entities that lead to the goal through known recipes.
        let mut needed: Vec<&str> = vec![goal];
        loop {
            let before = needed.len();
            for s in known {
                if let Product::Made(p) = &s.product {
                    if needed.contains(&p.as_str()) {
                        for x in [s.a.as_str(), s.b.as_str()] {
                            if !needed.contains(&x) {
                                needed.push(x);
                            }
                        }
                    }
                }
            }
            if needed.len() == before {
                break;
            }
        }
        let mut best: Option<(u8, f32, &Seen)> = None;
        for s in known {
            if !on(&s.a) || !on(&s.b) || self.tried(&s.a, &s.b) {
                continue;
            }
            if let Some(w) = with {
                if s.a != w && s.b != w {
                    continue;
                }
            }
            let class = match &s.product {
                Product::Made(p) if p == goal => 0,
                Product::Made(p) if !on(p) && needed.contains(&p.as_str()) => 1,
                Product::Made(p) if !on(p) && s.same_goal => 2,
                Product::Made(p) if !on(p) && self.config.imitate_other_goals => 3,
                _ => continue,
            };
            if best.is_none_or(|(c, sc, _)| class < c || (class == c && s.score > sc)) {
                best = Some((class, s.score, s));
            }
        }
        let (class, _, s) = best?;
        let (n, g) = &s.from;
        let made = match &s.product {
            Product::Made(p) => p.as_str(),
            _ => "?",
        };
        let why = match class {
            0 => format!("example {n} ({g}) made the goal {made} from them"),
            1 => format!("example {n} ({g}) made {made} from them, which leads to {goal}"),
            2 => format!("example {n} ({g}) made {made} from them on the way"),
            _ => format!("example {n} ({g}) made {made} from them; something new"),
        };
        let (a, b) = match with {
            Some(w) if s.b == w && s.a != w => (s.b.clone(), s.a.clone()),
            _ => (s.a.clone(), s.b.clone()),
        };
        Some((a, b, why))
    }

    /// An untried pair to explore (containing `with` when given), avoiding pairs examples
    /// showed to be unproductive, preferring the most recently made entity.
    fn explore(
        &mut self,
        table: &[String],
        known: &[Seen],
        with: Option<&str>,
    ) -> Option<(String, String, String)> {
        let useless = |a: &str, b: &str| {
            known
                .iter()
                .any(|s| s.product == Product::Nothing && pair(&s.a, &s.b) == pair(a, b))
        };
        let mut all: Vec<(String, String)> = Vec::new();
        for (i, a) in table.iter().enumerate() {
            if with.is_some_and(|w| w != a) {
                continue;
            }
            let partners: Vec<&String> = if with.is_some() {
                table.iter().collect()
            } else {
                table[i..].iter().collect()
            };
            for b in partners {
                if !self.tried(a, b) {
                    all.push((a.clone(), b.clone()));
                }
            }
        }
        if all.is_empty() {
            return None;
        }
        // Combining an entity with itself only when an example shows such a pair working;
        // a new entity is not combined with the ingredients it was just made from.
        let self_pairs_work = known
            .iter()
            .any(|s| s.a == s.b && matches!(s.product, Product::Made(_)));
        let made_from = &self.ep.made_from;
        let plausible = |a: &str, b: &str| {
            (a != b || self_pairs_work)
                && !made_from.iter().any(|(m, x, y)| {
                    (m == a && (x == b || y == b)) || (m == b && (x == a || y == a))
                })
        };
        let mut pool: Vec<(String, String)> = all
            .iter()
            .filter(|(a, b)| !useless(a, b) && plausible(a, b))
            .cloned()
            .collect();
        if pool.is_empty() {
            pool = all
                .iter()
                .filter(|(a, b)| !useless(a, b))
                .cloned()
                .collect();
        }
        if pool.is_empty() {
            pool = all;
        }
        if self.config.episode_memory {
            let made = self.ep.made.clone();
            for m in made.iter().rev() {
                let fresh: Vec<&(String, String)> =
                    pool.iter().filter(|(a, b)| a == m || b == m).collect();
                if !fresh.is_empty() {
                    let (a, b) = fresh[self.below(fresh.len())].clone();
                    let (a, b) = if b == *m { (b, a) } else { (a, b) };
                    let why = format!("untried, and {m} is new");
                    return Some((a, b, why));
                }
            }
        }
        let (a, b) = pool[self.below(pool.len())].clone();
        Some((a, b, "untried; no example applies, so I explore".into()))
    }

    /// The earlier stand-in's choice: the first `select NAME` of the best-matching example
    /// step (then later, then earlier steps) whose NAME is on the table.
    fn copy_step(table: &[String], examples: &[Example]) -> Option<(String, String)> {
        for (n, e) in examples.iter().enumerate() {
            let steps = &e.trajectory.steps;
            let matched = e
                .matched_step
                .and_then(|m| m.checked_sub(e.window.0))
                .map_or(0, |m| m as usize);
            let order = (matched..steps.len()).chain(0..matched.min(steps.len()));
            for i in order {
                if let Some(name) = selected_name(&steps[i].action) {
                    if table.iter().any(|t| t == name) {
                        let why = format!("example {} ({}) did", n + 1, e.trajectory.goal);
                        return Some((name.to_owned(), why));
                    }
                }
            }
        }
        None
    }
}

/// The entity a thought `select NAME, ...` or `select NAME; ...` names.
fn thought_entity(thought: &str) -> Option<&str> {
    let rest = first_line(thought).strip_prefix("select ")?;
    let end = rest.find([',', ';']).unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|s| !s.is_empty())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Policy for OfflinePolicy {
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String> {
        // A plan starts an episode.
        let goal = goal_entity(c.goal).to_owned();
        self.ep = EpisodeMemory {
            goal: goal.clone(),
            ..Default::default()
        };
        let mut recipes = Vec::new();
        for (n, e) in c.examples.iter().enumerate() {
            recipes.extend(read_recipes(n, e, &goal));
        }
        let direct = recipes
            .iter()
            .find(|s| s.product == Product::Made(goal.clone()));
        let plan = match direct {
            Some(s) => format!(
                "make {goal}: combine {} and {}, as example {} did; make them first if missing.",
                s.a, s.b, s.from.0
            ),
            None if c.examples.is_empty() => {
                format!("make {goal}: no similar task seen; try untried pairs of table entities.")
            }
            None => format!(
                "make {goal}: no example made it; use recipes the examples show, else explore."
            ),
        };
        self.ep.plan_recipes = if self.config.recipe_aware {
            recipes
        } else {
            Vec::new()
        };
        Ok(plan)
    }

    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let table = parse_table(c.observation);
        if table.is_empty() {
            return Ok("select 0; I see no table, so I try the first slot.".into());
        }
        self.observe(&table);
        let selected = parse_selected(c.observation);
        if !self.config.recipe_aware {
            if let Some((name, why)) = Self::copy_step(&table, c.examples) {
                return Ok(format!("select {name}; {why}"));
            }
            let pick = table[self.below(table.len())].clone();
            return Ok(format!("select {pick}; no example applies, so I explore"));
        }
        let mut known = self.ep.plan_recipes.clone();
        for (n, e) in c.examples.iter().enumerate() {
            known.extend(read_recipes(n, e, &self.ep.goal));
        }
        match selected {
            None => {
                let choice = match self.imitate(&table, &known, None) {
                    Some(x) => Some(x),
                    None => self.explore(&table, &known, None),
                };
                let Some((a, b, why)) = choice else {
                    let pick = table[self.below(table.len())].clone();
                    return Ok(format!("select {pick}; every pair is tried"));
                };
                let t = format!("select {a}, then {b}; {why}");
                self.ep.intent = Some((a, b));
                Ok(t)
            }
            Some(first) => {
                if let Some((a, b)) = self.ep.intent.take() {
                    if a == first && table.contains(&b) && !self.tried(&a, &b) {
                        return Ok(format!("select {b}, to combine with {a}; as planned"));
                    }
                }
                let choice = match self.imitate(&table, &known, Some(&first)) {
                    Some(x) => Some(x),
                    None => self.explore(&table, &known, Some(&first)),
                };
                match choice {
                    Some((_, b, why)) => Ok(format!("select {b}, to combine with {first}; {why}")),
                    None => Ok(format!(
                        "select {first}, to combine with itself; nothing else left"
                    )),
                }
            }
        }
    }

    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let table = parse_table(c.observation);
        let on_table = |n: &str| table.iter().any(|t| t == n);
        let mut choice = thought_entity(c.thought)
            .filter(|n| on_table(n))
            .map(str::to_owned);
        if choice.is_none() {
            for e in c.examples {
                let Some(m) = e.matched_step else { continue };
                let i = m.saturating_sub(e.window.0) as usize;
                if let Some(n) = e
                    .trajectory
                    .steps
                    .get(i)
                    .and_then(|s| selected_name(&s.action))
                {
                    if on_table(n) {
                        choice = Some(n.to_owned());
                        break;
                    }
                }
            }
        }
        let Some(name) =
            choice.or_else(|| (!table.is_empty()).then(|| table[self.below(table.len())].clone()))
        else {
            return Ok("select 0".into());
        };
        if let Some(first) = parse_selected(c.observation) {
            let p = pair(&first, &name);
            if !self.ep.tried.contains(&p) {
                self.ep.tried.push(p);
            }
            self.ep.last_pair = Some((first, name.clone()));
        }
        Ok(format!("select {name}"))
    }
}
