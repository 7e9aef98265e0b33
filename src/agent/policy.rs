//! Policies: what turns the goal, the observation and the retrieved examples into a plan, a
//! thought and an action. [`LlmPolicy`] asks a language model through prompts built by
//! [`prompt`]; [`OfflinePolicy`] is a non-LLM stand-in.

use crate::agent::openai::ChatMessage;
use crate::agent::{AgentResult, Llm};
use crate::Example;

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

/// A non-LLM stand-in policy for runs without a model. It is **not** a language model and
/// has no commonsense: it can only repeat what retrieved examples did.
///
/// It sees only what an LLM would see: the goal, the current observation text and the
/// retrieved examples' text. It never looks at the environment's internals. The table is
/// parsed from an observation line of the form `table: 0:NAME 1:NAME ...`.
///
/// - Plan: names the goals of the retrieved examples.
/// - Reason: goes through the examples best first; for each it looks at the actions from the
///   matched step to the end of the window, then before it, and takes the first
///   `select NAME` whose NAME is on the current table. The thought says which example and
///   step it copies ("I should select X because example N did when it saw ...").
///   With no usable example it picks a random table entry (seeded) and says so.
/// - Act: takes the action of the best acting example (retrieved on the thought) when that
///   entity is on the table, else the action named in the thought.
#[derive(Debug, Clone)]
pub struct OfflinePolicy {
    state: u64,
}

impl OfflinePolicy {
    /// A policy whose random exploration is seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        OfflinePolicy {
            state: seed ^ 0x5DEE_CE66_D1CE_4E5B,
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// Entity names on the table line (`table: 0:a 1:b`) of an observation.
pub fn parse_table(observation: &str) -> Vec<String> {
    observation
        .lines()
        .find_map(|l| l.trim().strip_prefix("table:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|tok| tok.split_once(':').map(|(_, n)| n.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The NAME of a `select NAME` action.
fn selected_name(action: &str) -> Option<&str> {
    action
        .trim()
        .strip_prefix("select ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

impl Policy for OfflinePolicy {
    fn plan(&mut self, c: &Context<'_>) -> AgentResult<String> {
        if c.examples.is_empty() {
            return Ok(format!(
                "{}: no similar task seen; try combinations of table entities.",
                c.goal
            ));
        }
        let goals: Vec<&str> = c
            .examples
            .iter()
            .take(3)
            .map(|e| e.trajectory.goal.as_str())
            .collect();
        Ok(format!(
            "{}: follow the examples for {}.",
            c.goal,
            goals.join(", ")
        ))
    }

    fn reason(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let table = parse_table(c.observation);
        for (n, e) in c.examples.iter().enumerate() {
            let steps = &e.trajectory.steps;
            let start = e.window.0;
            let matched = e
                .matched_step
                .and_then(|m| m.checked_sub(start))
                .map_or(0, |m| m as usize);
            let order = (matched..steps.len()).chain(0..matched.min(steps.len()));
            for i in order {
                let st = &steps[i];
                if let Some(name) = selected_name(&st.action) {
                    if table.iter().any(|t| t == name) {
                        return Ok(format!(
                            "I should select {name} because example {} ({}) did at step {} when it saw: {}",
                            n + 1,
                            e.trajectory.goal,
                            start as usize + i,
                            st.observation.replace('\n', " | ")
                        ));
                    }
                }
            }
        }
        if table.is_empty() {
            return Ok("I see no table; I will try the first slot.".into());
        }
        let pick = &table[self.below(table.len())];
        Ok(format!(
            "I should select {pick}: no example applies to this table, so I explore."
        ))
    }

    fn act(&mut self, c: &Context<'_>) -> AgentResult<String> {
        let table = parse_table(c.observation);
        let on_table = |a: &str| selected_name(a).is_some_and(|n| table.iter().any(|t| t == n));
        // The thought names an entity; the acting examples were retrieved on it.
        let from_thought = first_line(c.thought)
            .strip_prefix("I should select ")
            .map(|r| {
                r.split([' ', ':'])
                    .next()
                    .unwrap_or("")
                    .trim_end_matches(['.', ','])
            })
            .map(|n| format!("select {n}"));
        if let Some(a) = &from_thought {
            if on_table(a) {
                // Agree with the example whose thought matched best when it names the same
                // entity; otherwise the thought decides.
                return Ok(a.clone());
            }
        }
        for e in c.examples {
            let Some(m) = e.matched_step else { continue };
            let i = m.saturating_sub(e.window.0) as usize;
            if let Some(st) = e.trajectory.steps.get(i) {
                if on_table(&st.action) {
                    return Ok(st.action.clone());
                }
            }
        }
        if table.is_empty() {
            return Ok("select 0".into());
        }
        Ok(format!("select {}", table[self.below(table.len())]))
    }
}
