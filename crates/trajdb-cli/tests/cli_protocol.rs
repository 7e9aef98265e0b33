//! `trajdb bootstrap --env-cmd`: a protocol environment runs end to end from the command
//! line, and a failing one ends the run with exit code 1 and one error line naming the
//! request.
#![allow(clippy::unwrap_used)]

mod cli_util;

use cli_util::*;

fn scripted(args: &str) -> String {
    format!(
        "exec python3 {}/../trajdb-agent/tests/scripted_env.py {args}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn bootstrap_runs_a_protocol_environment_and_reports_its_name() {
    let cmd = scripted("");
    let r = trajdb(
        &[
            "bootstrap",
            "--env-cmd",
            &cmd,
            "--method",
            "traj-bootstrap",
            "--train",
            "6",
            "--test",
            "3",
            "--max-steps",
            "4",
            "--json",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["env"], "vault");
    assert_eq!(v["env_cmd"], cmd.as_str());
    assert_eq!(v["stand_in"], "imitation stand-in");
    assert_eq!(v["per_seed"][0]["trajectories"], 6);
}

#[test]
fn a_crashing_protocol_environment_gives_exit_1_and_one_line_naming_the_request() {
    let cmd = scripted("--fault crash --at step:3");
    let r = trajdb(
        &[
            "bootstrap",
            "--env-cmd",
            &cmd,
            "--method",
            "traj-bootstrap",
            "--train",
            "6",
            "--test",
            "3",
        ],
        None,
    );
    assert_refused(
        &r,
        &[
            "environment: request step \"",
            "the environment exited without replying (exit status: 3)",
        ],
    );
}
