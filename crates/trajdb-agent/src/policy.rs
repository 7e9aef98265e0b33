//! Policies: what turns the goal, the observation and the retrieved examples into a plan, a
//! thought and an action. [`LlmPolicy`] asks a language model through prompts built by
//! [`prompt`]; [`OfflinePolicy`] is a non-LLM stand-in.

use crate::openai::{ChatMessage, LlmError};
use crate::wordcraft::parse_pair;
use crate::{AgentError, AgentResult, Llm};
use trajdb::rng::SplitMix64;
use trajdb::{Example, Step, Trajectory};

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
    /// What an action looks like, when the environment describes it (see
    /// [`crate::Environment::action_space`]).
    pub action_space: Option<&'a str>,
    /// The steps of this episode so far (observation, thought, action), oldest first.
    pub history: &'a [Step],
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
    /// Notes about the episode just played, stored in its trajectory's `meta` (for example
    /// how many examples a context budget dropped); drained at the end of each episode.
    fn take_notes(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
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

/// Sampling limits of one LLM call: stop sequences and a token bound.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallLimits {
    /// The reply ends before any of these (sent as `stop`).
    pub stop: Vec<String>,
    /// At most this many tokens in the reply (sent as `max_tokens`).
    pub max_tokens: Option<u32>,
}

impl PromptStage {
    /// The limits of this stage: a plan is a few sentences (stop at a blank line, 160
    /// tokens); a thought and an action are one line (stop at a newline; 96 and 32 tokens),
    /// as the reference agent stops reasoning and acting at a newline.
    pub fn limits(self) -> CallLimits {
        let (stop, max) = match self {
            PromptStage::Plan => ("\n\n", 160),
            PromptStage::Reason => ("\n", 96),
            PromptStage::Act => ("\n", 32),
        };
        CallLimits {
            stop: vec![stop.to_owned()],
            max_tokens: Some(max),
        }
    }
}

const SYSTEM_PLAN: &str = "You plan how an agent will reach a goal in a text environment. \
Plans of earlier successful tasks are shown as examples.";
const SYSTEM_REASON: &str = "You are an agent in a text environment. Think about which action \
brings you closer to the goal. Successful episodes of earlier tasks are shown as examples; \
follow them closely where they apply.";
const SYSTEM_ACT: &str = "You are an agent in a text environment. Choose the next action \
towards the goal. Successful episodes of earlier tasks are shown as examples; follow them \
closely where they apply. Answer with the action only, on one line.";

/// Renders one retrieved example as an in-context demonstration.
///
/// A planning example shows the goal and plan only (as the reference agent's planning
/// prompt); a reasoning or acting example shows the goal, the plan, the steps of its window
/// and, when the window reaches the end of the trajectory, the final observation (the agent
/// stores the step count in the trajectory's `meta["steps"]`; without it the final
/// observation is shown when the window starts at step 0).
pub fn render_example(stage: PromptStage, i: usize, e: &Example) -> String {
    let t = &e.trajectory;
    let mut s = format!("## Example {}\nGoal: {}\n", i + 1, t.goal);
    if let Some(c) = &t.category {
        s.push_str(&format!("Category: {c}\n"));
    }
    if !t.plan.is_empty() {
        s.push_str(&format!("Plan: {}\n", t.plan));
    }
    if stage == PromptStage::Plan {
        return s;
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
    let total = t.meta.get("steps").and_then(|n| n.parse::<u32>().ok());
    let reaches_end = match total {
        Some(n) => e.window.1 >= n,
        None => e.window.0 == 0,
    };
    if reaches_end && !t.final_observation.is_empty() {
        s.push_str(&format!("Final observation: {}\n", t.final_observation));
    }
    s
}

/// The chat messages for one stage: a system message (the stage's instruction and, for
/// reasoning and acting, the action space), then a user message with the examples, the
/// current goal and plan, the episode so far (every earlier observation, thought and
/// action), the current observation (and thought, when acting) and the request, which ends
/// with the label the reply continues (`Plan:`, `Thought:`, `Action:`).
pub fn prompt(stage: PromptStage, c: &Context<'_>) -> Vec<ChatMessage> {
    let mut system = match stage {
        PromptStage::Plan => SYSTEM_PLAN,
        PromptStage::Reason => SYSTEM_REASON,
        PromptStage::Act => SYSTEM_ACT,
    }
    .to_owned();
    if stage != PromptStage::Plan {
        if let Some(space) = c.action_space {
            system.push_str(&format!("\nActions: {space}"));
        }
    }
    let mut user = String::new();
    if !c.examples.is_empty() {
        user.push_str("# Examples\n");
        for (i, e) in c.examples.iter().enumerate() {
            user.push_str(&render_example(stage, i, e));
        }
        user.push('\n');
    }
    user.push_str(&format!("# Your task\nGoal: {}\n", c.goal));
    if let Some(cat) = c.category {
        user.push_str(&format!("Category: {cat}\n"));
    }
    if stage == PromptStage::Plan {
        user.push_str("Write a short plan (one or two sentences).\nPlan:");
        return vec![ChatMessage::system(system), ChatMessage::user(user)];
    }
    if !c.plan.is_empty() {
        user.push_str(&format!("Plan: {}\n", c.plan));
    }
    for st in c.history {
        user.push_str(&format!(
            "Observation: {}\nThought: {}\nAction: {}\n",
            st.observation, st.reasoning, st.action
        ));
    }
    user.push_str(&format!("Observation: {}\n", c.observation));
    if let Some(actions) = c.actions.filter(|a| !a.is_empty()) {
        user.push_str(&format!("Admissible actions: {}\n", actions.join(" | ")));
    }
    match stage {
        PromptStage::Reason => user.push_str("Thought:"),
        _ => user.push_str(&format!("Thought: {}\nAction:", c.thought)),
    }
    vec![ChatMessage::system(system), ChatMessage::user(user)]
}

/// Estimated tokens of `messages`: a quarter of their characters, rounded up, plus 4 per
/// message (used when the server gives no tokenizer; English text averages about four
/// characters a token with the BPE tokenizers of current chat models).
pub fn estimate_tokens(messages: &[ChatMessage]) -> usize {
    messages
        .iter()
        .map(|m| m.content.chars().count().div_ceil(4) + 4)
        .sum()
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

/// Whether an error is the server refusing a prompt longer than the model's context
/// (OpenAI's `context_length_exceeded`, HTTP 400; other servers say `context length` or
/// `maximum context`).
pub fn is_context_overflow(e: &AgentError) -> bool {
    let AgentError::Llm(l) = e else { return false };
    match l.root() {
        LlmError::Http { status, body, .. } => {
            let b = body.to_ascii_lowercase();
            *status == 400
                && (b.contains("context_length_exceeded")
                    || b.contains("context length")
                    || b.contains("maximum context"))
        }
        _ => false,
    }
}

/// A policy that asks a language model at every stage.
///
/// With a context budget ([`LlmPolicy::max_prompt_tokens`]) the lowest-ranked examples are
/// dropped until the estimated prompt ([`estimate_tokens`]) fits; a server answer that the
/// prompt exceeds the model's context ([`is_context_overflow`]) is retried with half the
/// examples, down to none. Both are counted and reported through [`Policy::take_notes`]
/// (`prompt_examples_dropped`, `context_retries`).
pub struct LlmPolicy<L: Llm> {
    /// The model.
    pub llm: L,
    /// Context budget in estimated tokens (None: no budget).
    pub max_prompt_tokens: Option<usize>,
    dropped: usize,
    retries: usize,
}

impl<L: Llm> LlmPolicy<L> {
    /// A policy asking `llm`, without a context budget.
    pub fn new(llm: L) -> Self {
        LlmPolicy {
            llm,
            max_prompt_tokens: None,
            dropped: 0,
            retries: 0,
        }
    }

    /// Sets the context budget in estimated tokens.
    pub fn with_max_prompt_tokens(mut self, budget: Option<usize>) -> Self {
        self.max_prompt_tokens = budget;
        self
    }

    fn ask(&mut self, stage: PromptStage, c: &Context<'_>) -> AgentResult<String> {
        let mut n = c.examples.len();
        if let Some(budget) = self.max_prompt_tokens {
            while n > 0 {
                let cut = Context {
                    examples: &c.examples[..n],
                    ..*c
                };
                if estimate_tokens(&prompt(stage, &cut)) <= budget {
                    break;
                }
                n -= 1;
            }
        }
        self.dropped += c.examples.len() - n;
        let limits = stage.limits();
        loop {
            let cut = Context {
                examples: &c.examples[..n],
                ..*c
            };
            match self.llm.complete(&prompt(stage, &cut), &limits) {
                Ok(reply) => return Ok(clean(stage, &reply)),
                Err(e) if n > 0 && is_context_overflow(&e) => {
                    let keep = n / 2;
                    self.dropped += n - keep;
                    self.retries += 1;
                    n = keep;
                }
                Err(e) => return Err(e),
            }
        }
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
    fn take_notes(&mut self) -> Vec<(String, String)> {
        let mut notes = Vec::new();
        if self.dropped > 0 {
            notes.push(("prompt_examples_dropped".into(), self.dropped.to_string()));
        }
        if self.retries > 0 {
            notes.push(("context_retries".into(), self.retries.to_string()));
        }
        self.dropped = 0;
        self.retries = 0;
        notes
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

/// The observation prefix of Wordcraft's combine interface
/// ([`crate::wordcraft::Interface::Combine`]).
pub const INGREDIENTS_PREFIX: &str = "Ingredients on the table:";

/// Entity names on the table line of an observation, by slot: `table: 0:a 1:b c 2:d`
/// (the select interface; names may contain spaces: a token `N:rest` starts a slot, other
/// tokens continue it) or `Ingredients on the table: 1:a, 2:b c` (the combine interface;
/// items separated by `, `, each `N:name`).
pub fn parse_table(observation: &str) -> Vec<String> {
    if let Some(rest) = observation
        .lines()
        .find_map(|l| l.trim().strip_prefix(INGREDIENTS_PREFIX))
    {
        return rest
            .split(", ")
            .filter_map(|item| {
                let (n, name) = item.trim().split_once(':')?;
                (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty())
                    .then(|| name.to_owned())
            })
            .collect();
    }
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

/// Whether an observation is of the combine interface (one action names a pair).
pub fn is_combine_observation(observation: &str) -> bool {
    observation.trim_start().starts_with(INGREDIENTS_PREFIX)
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

/// The entity of a goal text `create NAME` or `Make NAME from the ingredients. ...` (or the
/// whole text).
pub(crate) fn goal_entity(goal: &str) -> &str {
    let g = goal.trim();
    let g = g.strip_prefix("Goal:").map_or(g, str::trim);
    if let Some(rest) = g.strip_prefix("Make ") {
        if let Some((name, _)) = rest.split_once(" from the ingredients.") {
            return name.trim();
        }
    }
    g.strip_prefix("create ").map_or(g, str::trim)
}

/// The goal entity of a Wordcraft goal text in either interface (`create X`, `Make X from
/// the ingredients. ...`).
pub fn goal_entity_of(goal: &str) -> &str {
    goal_entity(goal)
}

/// One combination an episode's steps show: the two entities (in action order), the table
/// before it, and the observation after it (the next step's, or the final observation after
/// the last step, `has_next` false).
#[derive(Debug, Clone)]
pub struct ShownPair<'a> {
    /// First entity.
    pub a: String,
    /// Second entity.
    pub b: String,
    /// The table before the combination.
    pub before: Vec<String>,
    /// The observation after it.
    pub after: &'a str,
    /// Whether a step follows (false: `after` is the final observation).
    pub has_next: bool,
}

/// The combinations a trajectory's steps show, in either Wordcraft interface: a combine
/// action naming two entities of its observation's table ([`parse_pair`]), or `select A`
/// on an observation with `selected: none` followed by `select B` on one with
/// `selected: A`.
pub fn shown_pairs(t: &Trajectory) -> Vec<ShownPair<'_>> {
    let steps = &t.steps;
    let after = |j: usize| {
        steps
            .get(j)
            .map_or((t.final_observation.as_str(), false), |s| {
                (s.observation.as_str(), true)
            })
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let s0 = &steps[i];
        if is_combine_observation(&s0.observation) {
            let table = parse_table(&s0.observation);
            if let Ok((x, y)) = parse_pair(&s0.action, &table) {
                let (text, has_next) = after(i + 1);
                out.push(ShownPair {
                    a: table[x].clone(),
                    b: table[y].clone(),
                    before: table,
                    after: text,
                    has_next,
                });
            }
            i += 1;
            continue;
        }
        let Some(s1) = steps.get(i + 1) else { break };
        let (Some(a), Some(b)) = (selected_name(&s0.action), selected_name(&s1.action)) else {
            i += 1;
            continue;
        };
        if parse_selected(&s0.observation).is_some()
            || parse_selected(&s1.observation).as_deref() != Some(a)
        {
            i += 1;
            continue;
        }
        let (text, has_next) = after(i + 2);
        out.push(ShownPair {
            a: a.to_owned(),
            b: b.to_owned(),
            before: parse_table(&s0.observation),
            after: text,
            has_next,
        });
        i += 2;
    }
    out
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
    let ex_goal = goal_entity(&t.goal).to_owned();
    let success = t.outcome.success == Some(true);
    shown_pairs(t)
        .into_iter()
        .map(|p| {
            let after = parse_table(p.after);
            let new: Vec<&String> = after.iter().filter(|x| !p.before.contains(x)).collect();
            // The window's last pair: the final observation follows it when the window
            // reaches the end of the trajectory, which it does when the example's goal
            // appeared (a success ends at its goal).
            let product = match (new.as_slice(), p.has_next) {
                ([], true) => Product::Nothing,
                ([x], true) => Product::Made((*x).clone()),
                ([x], false) if success && **x == ex_goal => Product::Made(ex_goal.clone()),
                _ => Product::Unknown,
            };
            Seen {
                a: p.a,
                b: p.b,
                product,
                same_goal: ex_goal == goal,
                score: e.score,
                from: (n + 1, format!("create {}", goal_entity(&t.goal))),
            }
        })
        .collect()
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
        let needed = needed_for(goal, known);
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
        // A pair that examples show making something no known recipe leads from to the
        // goal is tried after pairs whose product is unknown.
        let needed = needed_for(self.ep.goal.as_str(), known);
        let elsewhere = |a: &str, b: &str| {
            known.iter().any(|s| {
                pair(&s.a, &s.b) == pair(a, b)
                    && matches!(&s.product, Product::Made(p) if !needed.contains(&p.as_str()))
            })
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
        // Combining an entity with itself only when an example shows that entity's self
        // pair working; a new entity is not combined with the ingredients it was just made
        // from.
        let self_pair_works = |a: &str| {
            known
                .iter()
                .any(|s| s.a == a && s.b == a && matches!(s.product, Product::Made(_)))
        };
        let made_from = &self.ep.made_from;
        let plausible = |a: &str, b: &str| {
            (a != b || self_pair_works(a))
                && !made_from.iter().any(|(m, x, y)| {
                    (m == a && (x == b || y == b)) || (m == b && (x == a || y == a))
                })
        };
        let mut pool: Vec<(String, String)> = all
            .iter()
            .filter(|(a, b)| !useless(a, b) && plausible(a, b) && !elsewhere(a, b))
            .cloned()
            .collect();
        if pool.is_empty() {
            pool = all
                .iter()
                .filter(|(a, b)| !useless(a, b) && plausible(a, b))
                .cloned()
                .collect();
        }
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

impl OfflinePolicy {
    /// The combine interface's action: the pair the thought names (`combine A and B; ...`)
    /// when both are on the table, else the pair of the best acting example's matched step,
    /// else an untried pair; written `A, B`.
    fn act_pair(&mut self, table: &[String], c: &Context<'_>) -> String {
        let named = first_line(c.thought)
            .strip_prefix("combine ")
            .map(|r| r.split(';').next().unwrap_or(""))
            .and_then(|r| parse_pair(r, table).ok());
        let mut choice = named.map(|(x, y)| (table[x].clone(), table[y].clone()));
        if choice.is_none() {
            choice = Self::copy_pair(table, c.examples).map(|(a, b, _)| (a, b));
        }
        if choice.is_none() {
            choice = self.explore(table, &[], None).map(|(a, b, _)| (a, b));
        }
        let Some((a, b)) = choice else {
            return "nothing to combine".into();
        };
        let p = pair(&a, &b);
        if !self.ep.tried.contains(&p) {
            self.ep.tried.push(p);
        }
        self.ep.last_pair = Some((a.clone(), b.clone()));
        format!("{a}, {b}")
    }

    /// The pair of the best-matching example step (then later, then earlier steps) whose
    /// combine action names two entities of `table`.
    fn copy_pair(table: &[String], examples: &[Example]) -> Option<(String, String, String)> {
        for (n, e) in examples.iter().enumerate() {
            let steps = &e.trajectory.steps;
            let matched = e
                .matched_step
                .and_then(|m| m.checked_sub(e.window.0))
                .map_or(0, |m| m as usize);
            let order = (matched..steps.len()).chain(0..matched.min(steps.len()));
            for i in order {
                let st = &steps[i];
                let theirs = parse_table(&st.observation);
                if let Ok((x, y)) = parse_pair(&st.action, &theirs) {
                    let (a, b) = (&theirs[x], &theirs[y]);
                    if table.contains(a) && table.contains(b) {
                        let g = goal_entity(&e.trajectory.goal);
                        let why = format!("example {} (create {g}) did", n + 1);
                        return Some((a.clone(), b.clone(), why));
                    }
                }
            }
        }
        None
    }
}

/// The goal and every entity that leads to it through `known` recipes (an ingredient of a
/// recipe whose product is needed is needed).
fn needed_for<'a>(goal: &'a str, known: &'a [Seen]) -> Vec<&'a str> {
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
            return needed;
        }
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
        let combine = is_combine_observation(c.observation);
        if combine && !self.config.recipe_aware {
            if let Some((a, b, why)) = Self::copy_pair(&table, c.examples) {
                return Ok(format!("combine {a} and {b}; {why}"));
            }
            let a = table[self.below(table.len())].clone();
            let b = table[self.below(table.len())].clone();
            return Ok(format!(
                "combine {a} and {b}; no example applies, so I explore"
            ));
        }
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
                    if combine {
                        return Ok(format!("combine {pick} and {pick}; every pair is tried"));
                    }
                    return Ok(format!("select {pick}; every pair is tried"));
                };
                if combine {
                    return Ok(format!("combine {a} and {b}; {why}"));
                }
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
        if is_combine_observation(c.observation) {
            return Ok(self.act_pair(&table, c));
        }
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

#[cfg(test)]
mod prompt_tests {
    use super::*;
    use trajdb::{Outcome, Trajectory};

    fn step(o: &str, r: &str, a: &str) -> Step {
        Step {
            observation: o.into(),
            reasoning: r.into(),
            action: a.into(),
            reward: None,
        }
    }

    fn example(window: (u32, u32), total: Option<u32>) -> Example {
        let mut t = Trajectory {
            goal: "Make mud from the ingredients.".into(),
            plan: "combine earth and water".into(),
            steps: vec![step(
                "Ingredients on the table: 1:earth, 2:water",
                "earth and water make mud",
                "earth, water",
            )],
            final_observation: "Ingredients on the table: 1:earth, 2:water, 3:mud".into(),
            outcome: Outcome {
                success: Some(true),
                reward: Some(1.0),
            },
            ..Default::default()
        };
        if let Some(n) = total {
            t.meta.insert("steps".into(), n.to_string());
        }
        Example {
            id: 1,
            score: 1.0,
            traj_score: 1.0,
            step_score: None,
            matched_step: Some(window.0),
            window,
            trajectory: t,
        }
    }

    fn ctx<'a>(history: &'a [Step], examples: &'a [Example]) -> Context<'a> {
        Context {
            goal: "Make steam from the ingredients.",
            category: None,
            plan: "combine fire and water",
            observation: "Ingredients on the table: 1:fire, 2:water, 3:air",
            thought: "fire and water should make steam",
            actions: None,
            action_space: Some("Name the two entities to combine, e.g. `fish, axe`."),
            history,
            examples,
        }
    }

    #[test]
    fn act_prompt_states_the_action_space_and_carries_the_episode_so_far() {
        let history = [step(
            "Ingredients on the table: 1:fire, 2:water, 3:air",
            "try fire and air",
            "fire, air",
        )];
        let m = prompt(PromptStage::Act, &ctx(&history, &[]));
        assert!(m[0]
            .content
            .contains("Actions: Name the two entities to combine"));
        let user = &m[1].content;
        let earlier = user.find("Action: fire, air").unwrap_or(usize::MAX);
        let now = user
            .rfind("Thought: fire and water should make steam")
            .unwrap_or(0);
        assert!(earlier < now, "{user}");
        assert!(user.ends_with("Action:"));
        // The next step's prompt differs from this one: the history grew.
        let longer = [history[0].clone(), step("x", "y", "fire, water")];
        assert_ne!(prompt(PromptStage::Act, &ctx(&longer, &[])), m);
        // Planning has no action space and no history.
        let p = prompt(PromptStage::Plan, &ctx(&history, &[]));
        assert!(!p[0].content.contains("Actions:") && !p[1].content.contains("fire, air"));
    }

    #[test]
    fn plan_examples_show_goal_and_plan_only_step_examples_end_with_the_final_observation() {
        let whole = example((0, 1), Some(1));
        let plan = render_example(PromptStage::Plan, 0, &whole);
        assert!(plan.contains("Plan: combine earth and water"));
        assert!(!plan.contains("Observation:") && !plan.contains("Final observation"));
        let act = render_example(PromptStage::Act, 0, &whole);
        assert!(
            act.ends_with("Final observation: Ingredients on the table: 1:earth, 2:water, 3:mud\n")
        );
        // A window that stops before the end does not show the final observation.
        let cut = example((0, 1), Some(4));
        assert!(!render_example(PromptStage::Reason, 0, &cut).contains("Final observation"));
    }

    /// Answers "too long" while the prompt holds more than `fits` examples.
    struct Overflowing {
        fits: usize,
        seen: Vec<usize>,
        limits: Vec<CallLimits>,
    }

    impl Llm for Overflowing {
        fn complete(&mut self, m: &[ChatMessage], limits: &CallLimits) -> AgentResult<String> {
            let n = m[1].content.matches("## Example").count();
            self.seen.push(n);
            self.limits.push(limits.clone());
            if n > self.fits {
                return Err(AgentError::Llm(LlmError::Http {
                    url: "http://x/v1/chat/completions".into(),
                    status: 400,
                    body: r#"{"error":{"code":"context_length_exceeded"}}"#.into(),
                }));
            }
            Ok("fire, water\nmore text".into())
        }
    }

    #[test]
    fn context_budget_drops_lowest_ranked_examples_and_overflow_retries_with_fewer() {
        let examples: Vec<Example> = (0..8).map(|_| example((0, 1), Some(1))).collect();
        let llm = Overflowing {
            fits: 2,
            seen: Vec::new(),
            limits: Vec::new(),
        };
        let mut p = LlmPolicy::new(llm);
        let a = p
            .act(&ctx(&[], &examples))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, "fire, water");
        // 8 refused, 4 refused, 2 accepted.
        assert_eq!(p.llm.seen, vec![8, 4, 2]);
        assert_eq!(p.llm.limits[0], PromptStage::Act.limits());
        let notes = p.take_notes();
        assert!(notes.contains(&("prompt_examples_dropped".into(), "6".into())));
        assert!(notes.contains(&("context_retries".into(), "2".into())));
        assert!(p.take_notes().is_empty());
        // A budget keeps only what fits (estimated) and never sends the rest.
        let one = estimate_tokens(&prompt(PromptStage::Act, &ctx(&[], &examples[..1])));
        let mut q = LlmPolicy::new(Overflowing {
            fits: 8,
            seen: Vec::new(),
            limits: Vec::new(),
        })
        .with_max_prompt_tokens(Some(one));
        q.act(&ctx(&[], &examples))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.llm.seen, vec![1]);
        assert_eq!(
            q.take_notes(),
            vec![("prompt_examples_dropped".to_owned(), "7".to_owned())]
        );
    }
}

#[cfg(test)]
mod offline_tests {
    use super::*;
    use trajdb::{Outcome, Trajectory};

    /// An example for goal `other` whose first step combined a and b into d.
    fn shows_a_b_make_d() -> Example {
        let obs = |items: &str| format!("{INGREDIENTS_PREFIX} {items}");
        let t = Trajectory {
            goal: "Make other from the ingredients. Each step combines exactly two entities; \
                   other takes 2 steps and you have at most 4."
                .into(),
            steps: vec![
                Step {
                    observation: obs("1:a, 2:b, 3:c"),
                    reasoning: String::new(),
                    action: "a, b".into(),
                    reward: None,
                },
                Step {
                    observation: obs("1:a, 2:b, 3:c, 4:d"),
                    reasoning: String::new(),
                    action: "d, c".into(),
                    reward: None,
                },
            ],
            final_observation: obs("1:a, 2:b, 3:c, 4:d, 5:other"),
            outcome: Outcome {
                success: Some(true),
                reward: Some(1.0),
            },
            ..Default::default()
        };
        Example {
            id: 1,
            score: 1.0,
            traj_score: 1.0,
            step_score: None,
            matched_step: Some(0),
            window: (0, 2),
            trajectory: t,
        }
    }

    #[test]
    fn exploration_tries_pairs_of_unknown_product_before_pairs_known_to_lead_elsewhere() {
        let examples = [shows_a_b_make_d()];
        let observation = format!("{INGREDIENTS_PREFIX} 1:a, 2:b, 3:c");
        for seed in 0..20 {
            let mut p = OfflinePolicy::with_config(
                seed,
                OfflineConfig {
                    imitate_other_goals: false,
                    ..OfflineConfig::default()
                },
            );
            let c = Context {
                goal: "Make g from the ingredients. Each step combines exactly two entities; \
                       g takes 2 steps and you have at most 4.",
                category: None,
                plan: "",
                observation: &observation,
                thought: "",
                actions: None,
                action_space: None,
                history: &[],
                examples: &examples,
            };
            p.plan(&c).unwrap_or_default();
            let thought = p.reason(&c).unwrap_or_default();
            let acted = p
                .act(&Context {
                    thought: &thought,
                    ..c
                })
                .unwrap_or_default();
            let table = parse_table(&observation);
            let (x, y) = parse_pair(&acted, &table).unwrap_or((0, 1));
            let chosen = pair(&table[x], &table[y]);
            assert!(
                chosen == pair("a", "c") || chosen == pair("b", "c"),
                "seed {seed}: {thought} / {acted}"
            );
        }
    }
}
