//! The environment protocol, version 1: an environment is a child process that speaks JSON
//! lines on its standard input and output (see the README, "Environment protocol").
//!
//! [`ProtocolSession`] starts the child through `sh -c COMMAND`, sends one request per line
//! and reads one reply per line; the child's stderr is passed through to ours. Each reply
//! must arrive within the session's timeout (a reader thread hands lines over a channel, so
//! a hung child is detected without blocking); a child that hangs is killed. Replies are
//! bounded to [`MAX_LINE`] bytes, so a misbehaving child cannot make trajdb allocate without
//! limit. Every failure is a [`ProtocolError`] whose `Display` is one line naming the
//! request.
//!
//! [`ProtocolTasks`] serves the methods ([`crate::methods::Tasks`]): it asks the child for
//! its name and task lists once, and each [`ProtocolTasks::open`] resets the child to one
//! task and returns a [`ProtocolEpisode`], an [`Environment`].

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::methods::{Part, Tasks};
use crate::{Achieved, AgentResult, Environment};

/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// The longest reply line accepted, in bytes (16 MiB). A longer line ends the run.
pub const MAX_LINE: usize = 16 << 20;

/// Default time a reply may take (seconds).
pub const DEFAULT_TIMEOUT_SECS: f64 = 60.0;

/// Why talking to a protocol environment failed. `Display` is one line that names the
/// request (`reset "task-3"`, `step "go north"`, ...).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The command could not be started.
    Spawn {
        /// The command.
        command: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The request could not be written (the child closed its input or exited).
    Write {
        /// The request.
        request: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// No reply within the timeout; the child was killed.
    Timeout {
        /// The request.
        request: String,
        /// The timeout in seconds.
        secs: f64,
    },
    /// The child closed its output (usually: it exited) instead of replying.
    Exited {
        /// The request.
        request: String,
        /// The child's exit status, when known.
        status: String,
    },
    /// Reading the child's output failed.
    Read {
        /// The request.
        request: String,
        /// What failed.
        what: String,
    },
    /// The reply line is longer than [`MAX_LINE`].
    LineTooLong {
        /// The request.
        request: String,
    },
    /// The reply is not one JSON object, or a field is missing or has the wrong type.
    Malformed {
        /// The request.
        request: String,
        /// What is wrong.
        what: String,
    },
    /// The child replied `{"error": MESSAGE}`.
    Refused {
        /// The request.
        request: String,
        /// The child's message.
        message: String,
    },
    /// The child asked for too few tasks, or a protocol version we do not speak.
    Unusable {
        /// The request.
        request: String,
        /// What is wrong.
        what: String,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Spawn { command, source } => {
                write!(f, "cannot start `sh -c {command:?}`: {source}")
            }
            ProtocolError::Write { request, source } => {
                write!(f, "request {request}: cannot write to the environment: {source}")
            }
            ProtocolError::Timeout { request, secs } => write!(
                f,
                "request {request}: no reply within {secs} s (--env-timeout); the environment was killed"
            ),
            ProtocolError::Exited { request, status } => write!(
                f,
                "request {request}: the environment exited without replying ({status})"
            ),
            ProtocolError::Read { request, what } => {
                write!(f, "request {request}: cannot read the reply: {what}")
            }
            ProtocolError::LineTooLong { request } => write!(
                f,
                "request {request}: the reply line is longer than {MAX_LINE} bytes"
            ),
            ProtocolError::Malformed { request, what } => {
                write!(f, "request {request}: malformed reply: {what}")
            }
            ProtocolError::Refused { request, message } => {
                write!(f, "request {request}: the environment replied error: {message}")
            }
            ProtocolError::Unusable { request, what } => write!(f, "request {request}: {what}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What the reader thread hands over.
enum Line {
    Text(Vec<u8>),
    TooLong,
    Eof,
    Failed(String),
}

/// A running protocol environment.
pub struct ProtocolSession {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    timeout: Duration,
    /// Set after any failure: the session is not used again.
    broken: bool,
}

fn read_lines(out: impl Read, tx: mpsc::Sender<Line>) {
    let mut r = BufReader::new(out);
    loop {
        let mut buf = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
        let msg = match (&mut r).take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => Line::Eof,
            Ok(_) if buf.last() == Some(&b'\n') => {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                Line::Text(buf)
            }
            Ok(_) if buf.len() > MAX_LINE => Line::TooLong,
            // The last line without a newline, then end of output.
            Ok(_) => Line::Text(buf),
            Err(e) => Line::Failed(e.to_string()),
        };
        let stop = !matches!(msg, Line::Text(_));
        if tx.send(msg).is_err() || stop {
            return;
        }
    }
}

/// Shortens `s` for an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 120;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}...")
}

impl ProtocolSession {
    /// Starts `sh -c command` with piped stdin and stdout (stderr inherited). Nothing is sent
    /// yet. A timeout kills the child process; start the program with `exec` (`exec python3
    /// env.py`) so that the child is the program itself and not a shell around it.
    pub fn spawn(command: &str, timeout: Duration) -> Result<Self, ProtocolError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|source| ProtocolError::Spawn {
            command: command.to_owned(),
            source,
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        if let Some(out) = stdout {
            std::thread::spawn(move || read_lines(out, tx));
        }
        Ok(ProtocolSession {
            command: command.to_owned(),
            child,
            stdin,
            lines: rx,
            timeout,
            broken: false,
        })
    }

    /// The command the session runs.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Kills the child (the shell, or the program when the command starts with `exec`).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exit_status(&mut self) -> String {
        // The child closed its output; give it a moment to exit.
        for _ in 0..50 {
            match self.child.try_wait() {
                Ok(Some(s)) => return s.to_string(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return e.to_string(),
            }
        }
        "still running with its output closed".to_owned()
    }

    /// Sends `msg` (described as `request` in errors) and returns the reply object. A reply
    /// `{"error": ...}` is [`ProtocolError::Refused`]. After any error the session is broken
    /// and every later request fails.
    pub fn request(
        &mut self,
        request: &str,
        msg: &Value,
    ) -> Result<Map<String, Value>, ProtocolError> {
        let r = self.request_inner(request, msg);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn request_inner(
        &mut self,
        request: &str,
        msg: &Value,
    ) -> Result<Map<String, Value>, ProtocolError> {
        if self.broken {
            return Err(ProtocolError::Unusable {
                request: request.to_owned(),
                what: "the environment failed earlier in this run".into(),
            });
        }
        let mut line = msg.to_string();
        line.push('\n');
        let write = match self.stdin.as_mut() {
            Some(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
            None => Err(std::io::Error::other("stdin is closed")),
        };
        if let Err(source) = write {
            if source.kind() == std::io::ErrorKind::BrokenPipe {
                let status = self.exit_status();
                return Err(ProtocolError::Exited {
                    request: request.to_owned(),
                    status,
                });
            }
            return Err(ProtocolError::Write {
                request: request.to_owned(),
                source,
            });
        }
        let got = match self.lines.recv_timeout(self.timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                return Err(ProtocolError::Timeout {
                    request: request.to_owned(),
                    secs: self.timeout.as_secs_f64(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => Line::Eof,
        };
        let bytes = match got {
            Line::Text(b) => b,
            Line::TooLong => {
                self.kill();
                return Err(ProtocolError::LineTooLong {
                    request: request.to_owned(),
                });
            }
            Line::Eof => {
                let status = self.exit_status();
                return Err(ProtocolError::Exited {
                    request: request.to_owned(),
                    status,
                });
            }
            Line::Failed(what) => {
                return Err(ProtocolError::Read {
                    request: request.to_owned(),
                    what,
                })
            }
        };
        let malformed = |what: String| ProtocolError::Malformed {
            request: request.to_owned(),
            what,
        };
        let text = String::from_utf8_lossy(&bytes);
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| malformed(format!("not JSON ({e}): {}", excerpt(&text))))?;
        let Value::Object(map) = v else {
            return Err(malformed(format!("not a JSON object: {}", excerpt(&text))));
        };
        if let Some(e) = map.get("error") {
            let message = match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Err(ProtocolError::Refused {
                request: request.to_owned(),
                message: excerpt(&message),
            });
        }
        Ok(map)
    }

    /// Sends `close` (no reply expected) and waits up to two seconds for the child to exit,
    /// then kills it.
    pub fn close(&mut self) {
        if !self.broken {
            if let Some(w) = self.stdin.as_mut() {
                let _ = w.write_all(b"{\"op\":\"close\"}\n");
                let _ = w.flush();
            }
        }
        self.stdin = None;
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for ProtocolSession {
    fn drop(&mut self) {
        self.close();
    }
}

/// Field readers for replies; errors name the field.
struct Reply<'a> {
    request: &'a str,
    map: &'a Map<String, Value>,
}

impl Reply<'_> {
    fn bad(&self, what: String) -> ProtocolError {
        ProtocolError::Malformed {
            request: self.request.to_owned(),
            what,
        }
    }

    fn string(&self, field: &str) -> Result<String, ProtocolError> {
        match self.map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.bad(format!("`{field}` must be a string, got {other}"))),
            None => Err(self.bad(format!("missing field `{field}`"))),
        }
    }

    fn opt_string(&self, field: &str) -> Result<Option<String>, ProtocolError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(self.bad(format!("`{field}` must be a string or null, got {other}")))
            }
        }
    }

    fn boolean(&self, field: &str) -> Result<bool, ProtocolError> {
        match self.map.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.bad(format!("`{field}` must be true or false, got {other}"))),
            None => Err(self.bad(format!("missing field `{field}`"))),
        }
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>, ProtocolError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.bad(format!(
                "`{field}` must be true, false or null, got {other}"
            ))),
        }
    }

    fn opt_number(&self, field: &str) -> Result<Option<f64>, ProtocolError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => {
                Err(self.bad(format!("`{field}` must be a number or null, got {other}")))
            }
        }
    }

    fn strings(&self, field: &str) -> Result<Vec<String>, ProtocolError> {
        match self.map.get(field) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.bad(format!("`{field}` must hold strings, got {other}"))),
                })
                .collect(),
            Some(other) => {
                Err(self.bad(format!("`{field}` must be a list of strings, got {other}")))
            }
            None => Err(self.bad(format!("missing field `{field}`"))),
        }
    }

    fn opt_strings(&self, field: &str) -> Result<Option<Vec<String>>, ProtocolError> {
        match self.map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.strings(field).map(Some),
        }
    }
}

/// The reply to `reset`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetReply {
    /// The goal text.
    pub goal: String,
    /// The category, if the environment has categories.
    pub category: Option<String>,
    /// The first observation.
    pub observation: String,
    /// The admissible actions, when known.
    pub actions: Option<Vec<String>>,
}

/// The reply to `step`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReply {
    /// The observation after the action.
    pub observation: String,
    /// The step's reward, if any.
    pub reward: Option<f64>,
    /// Whether the episode has ended.
    pub done: bool,
    /// Whether the goal was reached (final when `done`).
    pub success: Option<bool>,
    /// The admissible actions, when known.
    pub actions: Option<Vec<String>>,
}

/// The typed requests of protocol version 1.
impl ProtocolSession {
    /// `hello`: the environment's name.
    pub fn hello(&mut self) -> Result<String, ProtocolError> {
        let request = "hello";
        let map = self.request(
            request,
            &json!({"op": "hello", "protocol": PROTOCOL_VERSION}),
        )?;
        let r = Reply { request, map: &map };
        let name = r.string("name")?;
        match map.get("protocol") {
            Some(Value::Number(n)) if n.as_u64() == Some(PROTOCOL_VERSION) => {}
            other => {
                self.broken = true;
                return Err(ProtocolError::Unusable {
                    request: request.to_owned(),
                    what: format!(
                        "the environment speaks protocol {}, trajdb speaks {PROTOCOL_VERSION}",
                        other.map_or_else(|| "(missing)".to_owned(), Value::to_string)
                    ),
                });
            }
        }
        if name.trim().is_empty() {
            self.broken = true;
            return Err(r.bad("`name` is empty".into()));
        }
        Ok(name)
    }

    /// `tasks`: the task ids of a split (`train` or `test`).
    pub fn tasks(&mut self, split: &str, seed: u64) -> Result<Vec<String>, ProtocolError> {
        let request = format!("tasks {split:?}");
        let map = self.request(
            &request,
            &json!({"op": "tasks", "split": split, "seed": seed}),
        )?;
        let r = Reply {
            request: &request,
            map: &map,
        };
        let t = r.strings("tasks");
        if t.is_err() {
            self.broken = true;
        }
        t
    }

    /// `reset`: starts an episode of `task`.
    pub fn reset(&mut self, task: &str, seed: u64) -> Result<ResetReply, ProtocolError> {
        let request = format!("reset {:?}", excerpt(task));
        let map = self.request(
            &request,
            &json!({"op": "reset", "task": task, "seed": seed}),
        )?;
        let r = Reply {
            request: &request,
            map: &map,
        };
        let out = (|| {
            Ok(ResetReply {
                goal: r.string("goal")?,
                category: r.opt_string("category")?,
                observation: r.string("observation")?,
                actions: r.opt_strings("actions")?,
            })
        })();
        if out.is_err() {
            self.broken = true;
        }
        out
    }

    /// `step`: takes `action`.
    pub fn step(&mut self, action: &str) -> Result<StepReply, ProtocolError> {
        let request = format!("step {:?}", excerpt(action));
        let map = self.request(&request, &json!({"op": "step", "action": action}))?;
        let r = Reply {
            request: &request,
            map: &map,
        };
        let out = (|| {
            Ok(StepReply {
                observation: r.string("observation")?,
                reward: r.opt_number("reward")?,
                done: r.boolean("done")?,
                success: r.opt_bool("success")?,
                actions: r.opt_strings("actions")?,
            })
        })();
        if out.is_err() {
            self.broken = true;
        }
        out
    }

    /// `achieved`: sub-goals reached in the episode just ended, with their step ranges.
    pub fn achieved(&mut self) -> Result<Vec<Achieved>, ProtocolError> {
        let request = "achieved";
        let map = self.request(request, &json!({"op": "achieved"}))?;
        let bad = |what: String| ProtocolError::Malformed {
            request: request.to_owned(),
            what,
        };
        let out = (|| {
            let Some(Value::Array(items)) = map.get("achieved") else {
                return Err(bad("missing list `achieved`".into()));
            };
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                let Value::Object(m) = it else {
                    return Err(bad(format!("`achieved` items must be objects, got {it}")));
                };
                let r = Reply { request, map: m };
                let goal = r.string("goal")?;
                let steps = match m.get("steps") {
                    Some(Value::Array(a)) if a.len() == 2 => {
                        let n = |v: &Value| v.as_u64().and_then(|x| usize::try_from(x).ok());
                        match (n(&a[0]), n(&a[1])) {
                            (Some(s), Some(e)) if s <= e => (s, e),
                            _ => {
                                return Err(bad(format!(
                                    "`steps` must be [a, b] with 0 <= a <= b, got {}",
                                    Value::Array(a.clone())
                                )))
                            }
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "`steps` must be [a, b], got {}",
                            other.map_or_else(|| "(missing)".to_owned(), Value::to_string)
                        )))
                    }
                };
                let name: String = goal
                    .chars()
                    .map(|c| if c.is_alphanumeric() { c } else { '-' })
                    .take(64)
                    .collect();
                out.push(Achieved { goal, name, steps });
            }
            Ok(out)
        })();
        if out.is_err() {
            self.broken = true;
        }
        out
    }
}

/// Train and test tasks served by a protocol environment, for the methods.
pub struct ProtocolTasks {
    session: ProtocolSession,
    name: String,
    train: Vec<String>,
    test: Vec<String>,
    hindsight: bool,
}

impl ProtocolTasks {
    /// Starts `command`, says hello, and takes the first `n_train` / `n_test` task ids of
    /// the `train` / `test` splits (both asked with seed 0, so every run seed sees the same
    /// tasks). With `dev`, the test tasks are the `n_test` training ids after the first
    /// `n_train` (tuning without touching test tasks). `hindsight`: ask `achieved` after
    /// each training episode.
    pub fn start(
        command: &str,
        timeout: Duration,
        n_train: usize,
        n_test: usize,
        dev: bool,
        hindsight: bool,
    ) -> Result<Self, ProtocolError> {
        let mut session = ProtocolSession::spawn(command, timeout)?;
        let name = session.hello()?;
        let all_train = session.tasks("train", 0)?;
        let test_pool = if dev {
            all_train.get(n_train..).unwrap_or(&[]).to_vec()
        } else {
            session.tasks("test", 0)?
        };
        let too_few = |split: &str, flag: &str, want: usize, have: usize| ProtocolError::Unusable {
            request: format!("tasks {split:?}"),
            what: format!("{flag} {want} asked for, the environment lists {have}"),
        };
        if all_train.len() < n_train {
            return Err(too_few("train", "--train", n_train, all_train.len()));
        }
        if test_pool.len() < n_test {
            let split = if dev { "train" } else { "test" };
            return Err(too_few(split, "--test", n_test, test_pool.len()));
        }
        Ok(ProtocolTasks {
            session,
            name,
            train: all_train.into_iter().take(n_train).collect(),
            test: test_pool.into_iter().take(n_test).collect(),
            hindsight,
        })
    }

    /// The environment's name (from `hello`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ends the session (`close`).
    pub fn close(mut self) {
        self.session.close();
    }
}

impl Tasks for ProtocolTasks {
    fn ids(&self, part: Part) -> Vec<String> {
        match part {
            Part::Train => self.train.clone(),
            Part::Test => self.test.clone(),
        }
    }

    fn open(
        &mut self,
        part: Part,
        index: usize,
        seed: u64,
    ) -> AgentResult<Box<dyn Environment + '_>> {
        let list = match part {
            Part::Train => &self.train,
            Part::Test => &self.test,
        };
        let Some(task) = list.get(index).cloned() else {
            return Err(crate::AgentError::invalid(
                "task",
                format!("no {part:?} task {index}"),
            ));
        };
        let r = self.session.reset(&task, seed)?;
        Ok(Box::new(ProtocolEpisode {
            session: &mut self.session,
            name: &self.name,
            task,
            goal: r.goal,
            category: r.category,
            observation: r.observation,
            actions: r.actions,
            done: false,
            success: false,
            reward: None,
            steps: 0,
            hindsight: self.hindsight && part == Part::Train,
            achieved: Vec::new(),
        }))
    }
}

/// One episode of a protocol environment.
pub struct ProtocolEpisode<'a> {
    session: &'a mut ProtocolSession,
    name: &'a str,
    task: String,
    goal: String,
    category: Option<String>,
    observation: String,
    actions: Option<Vec<String>>,
    done: bool,
    success: bool,
    reward: Option<f64>,
    steps: usize,
    hindsight: bool,
    achieved: Vec<Achieved>,
}

impl Environment for ProtocolEpisode<'_> {
    fn name(&self) -> &str {
        self.name
    }
    fn task_id(&self) -> String {
        self.task.clone()
    }
    fn goal(&self) -> String {
        self.goal.clone()
    }
    fn category(&self) -> Option<String> {
        self.category.clone()
    }
    fn observation(&self) -> String {
        self.observation.clone()
    }
    fn actions(&self) -> Option<Vec<String>> {
        self.actions.clone()
    }
    fn reward(&self) -> Option<f64> {
        self.reward
    }
    fn step(&mut self, action: &str) -> AgentResult<()> {
        let r = self.session.step(action)?;
        self.steps += 1;
        self.observation = r.observation;
        self.reward = r.reward;
        self.done = r.done;
        self.success = r.success.unwrap_or(false);
        self.actions = r.actions;
        Ok(())
    }
    fn done(&self) -> bool {
        self.done
    }
    fn success(&self) -> bool {
        self.success
    }
    fn finish(&mut self) -> AgentResult<()> {
        if self.hindsight {
            self.achieved = self.session.achieved()?;
        }
        Ok(())
    }
    fn achievements(&self) -> Vec<Achieved> {
        self.achieved.clone()
    }
}
