//! Export shapes built on the database: trajectories as chat fine-tuning examples, the
//! retrieval log of each episode, and per-trajectory usage counters. Each type serialises
//! with serde to the one-line JSON object `trajdb export` and `trajdb stats` print.
//!
//! ```
//! use trajdb::{Step, Trajectory};
//! use trajdb::export::{chat_example, Role};
//! let t = Trajectory {
//!     env: "kitchen".into(),
//!     task: "tea-1".into(),
//!     goal: "make tea".into(),
//!     steps: vec![Step {
//!         observation: "a kettle".into(),
//!         reasoning: "boil water first".into(),
//!         action: "boil".into(),
//!         reward: None,
//!     }],
//!     ..Default::default()
//! };
//! let ex = chat_example(&t).expect("it has a step");
//! let roles: Vec<Role> = ex.messages.iter().map(|m| m.role).collect();
//! assert_eq!(roles, [Role::System, Role::User, Role::Assistant]);
//! ```

use serde::Serialize;

use crate::db::Database;
use crate::format::record::Trajectory;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions: the environment and task.
    System,
    /// The environment's side: goal, plan and observations.
    User,
    /// The agent's side: reasoning and action.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// The speaker.
    pub role: Role,
    /// The text.
    pub content: String,
}

/// One trajectory as a chat conversation: `{"messages":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatExample {
    /// System, then alternating user and assistant messages, one pair per step.
    pub messages: Vec<ChatMessage>,
}

/// Converts a trajectory to a chat example, or `None` when it has no steps (there is no
/// assistant turn to learn from).
///
/// The system message states the environment, task and category; the first user message
/// gives the goal, the plan (when not empty) and the first observation; each later user
/// message gives the next observation. Each assistant message holds the step's reasoning
/// (`Thought: ...`, omitted when empty) and its action (`Action: ...`). User and assistant
/// turns alternate, as chat fine-tuning formats expect.
pub fn chat_example(t: &Trajectory) -> Option<ChatExample> {
    if t.steps.is_empty() {
        return None;
    }
    let mut system = String::from("You are an agent acting in an environment.");
    if !t.env.is_empty() {
        system.push_str(&format!(" Environment: {}.", t.env));
    }
    if !t.task.is_empty() {
        system.push_str(&format!(" Task: {}.", t.task));
    }
    if let Some(c) = t.category.as_deref().filter(|c| !c.is_empty()) {
        system.push_str(&format!(" Category: {c}."));
    }
    system.push_str(" Reply to each observation with your thought and one action.");
    let mut messages = vec![ChatMessage {
        role: Role::System,
        content: system,
    }];
    for (i, s) in t.steps.iter().enumerate() {
        let mut user = String::new();
        if i == 0 {
            user.push_str(&format!("Goal: {}\n", t.goal));
            if !t.plan.is_empty() {
                user.push_str(&format!("Plan: {}\n", t.plan));
            }
            user.push('\n');
        }
        user.push_str(&format!("Observation: {}", s.observation));
        messages.push(ChatMessage {
            role: Role::User,
            content: user,
        });
        let mut reply = String::new();
        if !s.reasoning.is_empty() {
            reply.push_str(&format!("Thought: {}\n", s.reasoning));
        }
        reply.push_str(&format!("Action: {}", s.action));
        messages.push(ChatMessage {
            role: Role::Assistant,
            content: reply,
        });
    }
    Some(ChatExample { messages })
}

/// How often one trajectory was retrieved in an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetrievedCount {
    /// Trajectory id.
    pub id: u64,
    /// Retrievals in the episode: f_i(t).
    pub count: u64,
}

/// One episode's retrievals: `{"episode":E,"outcome":true|false|null,"retrieved":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLine {
    /// Episode id.
    pub episode: u64,
    /// Episode outcome, `None` while unknown.
    pub outcome: Option<bool>,
    /// Trajectories retrieved, by id ascending.
    pub retrieved: Vec<RetrievedCount>,
}

/// Every episode of `db` with its retrieval counts, by episode id.
pub fn usage_lines(db: &Database) -> Vec<UsageLine> {
    db.episodes()
        .into_iter()
        .map(|ep| UsageLine {
            episode: ep.id,
            outcome: ep.outcome,
            retrieved: ep
                .counts()
                .into_iter()
                .map(|(id, count)| RetrievedCount { id, count })
                .collect(),
        })
        .collect()
}

/// Usage counters of one retrieved trajectory: `{"id":N,"retrievals":R,"episodes":E,"q":Q}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UtilityLine {
    /// Trajectory id.
    pub id: u64,
    /// Times retrieved over all episodes.
    pub retrievals: u64,
    /// Episodes that retrieved it.
    pub episodes: u64,
    /// Exemplar utility Q, `None` while no retrieving episode has an outcome.
    pub q: Option<f64>,
}

/// Usage counters of every trajectory that has been retrieved, by id.
pub fn utility_lines(db: &Database) -> Vec<UtilityLine> {
    db.utilities()
        .into_iter()
        .map(|(id, u)| UtilityLine {
            id,
            retrievals: u.retrievals,
            episodes: u.episodes,
            q: u.q(),
        })
        .collect()
}

/// Characters of one field the readable view (`trajdb get`) shows before cutting it.
pub const READABLE_FIELD_CHARS: usize = 400;

/// `text` for a one-line readable view: control characters (newline, tab, escape, ...) and
/// the bidirectional-override characters that can disguise text on a terminal are written
/// as escapes (`\n`, `\t`, `\u{1b}`); with `max_chars`, text longer than that is cut
/// with a marker saying how much was left out.
pub fn readable(text: &str, max_chars: Option<usize>) -> String {
    let mut out = String::new();
    let total = text.chars().count();
    for (shown, c) in text.chars().enumerate() {
        if max_chars.is_some_and(|m| shown >= m) {
            out.push_str(&format!(
                "… [{} more characters; --full shows all]",
                total - shown
            ));
            break;
        }
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::readable;

    /// Issue 9 item 14: `get` printed newlines and control characters raw and long fields
    /// whole.
    #[test]
    fn readable_escapes_control_characters_and_cuts_long_text() {
        assert_eq!(readable("a\nb\tc\u{1b}[31m", None), "a\\nb\\tc\\u{1b}[31m");
        assert_eq!(readable("x\u{202E}y", None), "x\\u{202e}y");
        assert_eq!(readable("tea ☕ é", Some(10)), "tea ☕ é");
        assert_eq!(
            readable("abcdefgh", Some(3)),
            "abc… [5 more characters; --full shows all]"
        );
    }
}
