//! The generic imitation stand-in decides from its context alone: it copies the admissible
//! action an example took at its matched step, skips example steps that changed nothing,
//! and explores without repeating an action in a state.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::HashSet;

use trajdb::{Example, Outcome, Step, Trajectory};
use trajdb_agent::imitation::ImitationPolicy;
use trajdb_agent::policy::{Context, Policy};

fn step(obs: &str, action: &str) -> Step {
    Step {
        observation: obs.into(),
        reasoning: String::new(),
        action: action.into(),
        reward: None,
    }
}

fn example(id: u64, score: f32, matched: u32, steps: Vec<Step>) -> Example {
    let n = u32::try_from(steps.len()).unwrap();
    Example {
        id,
        score,
        traj_score: score,
        step_score: Some(1.0),
        matched_step: Some(matched),
        window: (0, n),
        trajectory: Trajectory {
            task: format!("t{id}"),
            env: "test".into(),
            goal: "fetch the gem".into(),
            steps,
            outcome: Outcome {
                success: Some(true),
                reward: Some(1.0),
            },
            ..Default::default()
        },
    }
}

fn ctx<'a>(obs: &'a str, actions: &'a [String], examples: &'a [Example]) -> Context<'a> {
    Context {
        goal: "fetch the gem",
        category: None,
        plan: "",
        observation: obs,
        thought: "",
        actions: Some(actions),
        action_space: None,
        history: &[],
        examples,
    }
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| (*s).to_owned()).collect()
}

/// One decision: reason, then act on the thought.
fn decide(p: &mut ImitationPolicy, c: &Context<'_>) -> String {
    let thought = p.reason(c).unwrap();
    let acted = Context {
        thought: &thought,
        ..*c
    };
    p.act(&acted).unwrap()
}

#[test]
fn imitation_takes_the_admissible_action_an_example_took_after_the_matching_observation() {
    let actions = strings(&["look", "open blue chest", "open red chest", "take red key"]);
    // The example tried a wrong chest first (nothing changed), then the right one.
    let ex = vec![example(
        1,
        0.9,
        1,
        vec![
            step("in the vault", "take red key"),
            step("holding the red key", "open blue chest"),
            step("holding the red key", "open red chest"),
        ],
    )];
    let mut p = ImitationPolicy::new(7);
    p.plan(&ctx("", &[], &ex)).unwrap();
    let c = ctx("holding the red key", &actions, &ex);
    let thought = p.reason(&c).unwrap();
    assert!(
        thought.starts_with("open red chest; example 1"),
        "{thought}"
    );
    assert_eq!(decide(&mut p, &c), "open red chest");
}

#[test]
fn imitation_explores_without_repeating_an_action_in_a_state() {
    let actions = strings(&["a", "b", "c", "d", "e"]);
    let mut p = ImitationPolicy::new(3);
    p.plan(&ctx("", &[], &[])).unwrap();
    let mut seen = HashSet::new();
    for i in 0..5 {
        // The same state every time: each action once, then any again.
        let a = decide(&mut p, &ctx(&format!("nothing happens {i}"), &actions, &[]));
        assert!(actions.contains(&a));
        assert!(seen.insert(a.clone()), "{a} repeated in the same state");
    }
    assert_eq!(seen.len(), 5);
    let again = decide(&mut p, &ctx("nothing happens", &actions, &[]));
    assert!(actions.contains(&again));
}

#[test]
fn imitation_drops_an_example_whose_copied_action_changed_nothing() {
    let actions = strings(&["take blue key", "take red key", "wait"]);
    // Two examples, the better one for another colour.
    let ex = vec![
        example(1, 0.9, 0, vec![step("in the vault", "take blue key")]),
        example(2, 0.8, 0, vec![step("in the vault", "take red key")]),
    ];
    let mut p = ImitationPolicy::new(1);
    p.plan(&ctx("", &[], &ex)).unwrap();
    assert_eq!(
        decide(&mut p, &ctx("in the vault", &actions, &ex)),
        "take blue key"
    );
    // Nothing changed: the next choice follows the other example.
    let thought = p.reason(&ctx("in the vault", &actions, &ex)).unwrap();
    assert!(thought.starts_with("take red key; example 2"), "{thought}");
}

#[test]
fn imitation_without_admissible_actions_copies_the_example_text() {
    let ex = vec![example(1, 0.9, 0, vec![step("a room", "go north")])];
    let mut p = ImitationPolicy::new(0);
    p.plan(&ctx("", &[], &ex)).unwrap();
    let c = Context {
        actions: None,
        ..ctx("a room", &[], &ex)
    };
    assert_eq!(decide(&mut p, &c), "go north");
}
