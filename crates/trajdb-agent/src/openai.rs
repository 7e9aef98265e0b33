//! An OpenAI-compatible client (chat completions and embeddings) on `ureq` with rustls.
//!
//! It speaks to `http://` and `https://` base URLs: the hosted OpenAI API, hosted
//! OpenAI-compatible services (Together, Groq, OpenRouter, Azure) and local servers (vLLM,
//! llama.cpp's server, Ollama). TLS trusts the webpki roots (Mozilla's list, compiled in) plus
//! every certificate in the PEM file named by `SSL_CERT_FILE`, when that variable is set.
//!
//! Each request has one time limit (connect, send and the whole response; 120 s by default)
//! and a bound on the response body (16 MiB). A request that fails with HTTP 408, 429 or 5xx,
//! a connection error, a timeout or a broken response is retried up to a bounded number of
//! times (5 by default) after an exponential backoff with jitter (0.5 s, 1 s, 2 s, ... capped
//! at 30 s, each scaled by a random factor in [0.5, 1]); a `Retry-After` header given in
//! seconds replaces the backoff (capped at 60 s). The API key is sent only in the
//! `Authorization` header: no error message or `Debug` output contains it.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Base URL used by [`OpenAiClient::from_env`] when `OPENAI_BASE_URL` is unset or empty.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8000/v1";
/// Default time limit of one request (connect, send, the whole response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default number of retries after a failed attempt.
pub const DEFAULT_RETRIES: u32 = 5;
/// Default bound on a response body, in bytes (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Default first backoff delay; it doubles on each retry.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// Longest backoff delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest wait a `Retry-After` header can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How many characters of an error body are kept in [`LlmError::Http`].
const ERROR_BODY_CHARS: usize = 200;
/// What replaces the API key wherever a server echoes it back.
const REDACTED: &str = "[redacted]";

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Who wrote a chat message. Serialised in lowercase (`"system"`, `"user"`, `"assistant"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

/// One chat message, serialised as `{"role": ..., "content": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a request failed. Its `Display` is one line saying what went wrong and where; it never
/// contains the API key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LlmError {
    /// The base URL could not be understood.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The extra certificate file (`SSL_CERT_FILE`) could not be read or holds no certificate.
    CertFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection could not be made (refused, unreachable, name not resolved, TLS
    /// handshake failed...).
    Connect {
        /// The URL requested.
        url: String,
        /// The system's message.
        message: String,
    },
    /// The request took longer than its time limit.
    Timeout {
        /// The URL requested.
        url: String,
        /// The time limit that was exceeded.
        after: Duration,
    },
    /// Reading or writing the connection failed.
    Io {
        /// The URL requested.
        url: String,
        /// The system's message.
        message: String,
    },
    /// The server answered with a non-2xx status.
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The first 200 characters of the response body, on one line.
        body: String,
    },
    /// The response is not valid HTTP/1.x or its body ended early.
    MalformedHttp {
        /// The URL requested.
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// The response body is larger than the configured bound.
    ResponseTooLarge {
        /// The URL requested.
        url: String,
        /// The bound in bytes.
        limit: usize,
    },
    /// The response body is not valid JSON.
    MalformedJson {
        /// The URL requested.
        url: String,
        /// The parser's message.
        message: String,
    },
    /// The response JSON lacks a field the client needs (or it has the wrong type).
    MissingField {
        /// The URL requested.
        url: String,
        /// The field's path, e.g. `choices[0].message.content`.
        field: String,
    },
    /// Every attempt failed with a retryable error; `last` is the last one.
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<LlmError>,
    },
}

impl LlmError {
    /// Whether another attempt may succeed: HTTP 408, 429 and 5xx, connection errors,
    /// timeouts and broken responses.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => matches!(status, 408 | 429 | 500..=599),
            LlmError::Connect { .. }
            | LlmError::Timeout { .. }
            | LlmError::Io { .. }
            | LlmError::MalformedHttp { .. } => true,
            _ => false,
        }
    }

    /// The error itself, or the last attempt's error after retries.
    pub fn root(&self) -> &LlmError {
        match self {
            LlmError::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmError::InvalidUrl { url, reason } => {
                write!(f, "invalid base URL {url:?}: {reason}")
            }
            LlmError::CertFile { path, reason } => write!(
                f,
                "certificate file {} (SSL_CERT_FILE): {reason}",
                path.display()
            ),
            LlmError::Connect { url, message } => {
                write!(f, "cannot connect to {url}: {message}")
            }
            LlmError::Timeout { url, after } => write!(
                f,
                "request to {url} timed out after {:.1} s",
                after.as_secs_f64()
            ),
            LlmError::Io { url, message } => write!(f, "I/O error talking to {url}: {message}"),
            LlmError::Http { url, status, body } => {
                write!(f, "HTTP {status} from {url}: {body}")
            }
            LlmError::MalformedHttp { url, detail } => {
                write!(f, "malformed HTTP response from {url}: {detail}")
            }
            LlmError::ResponseTooLarge { url, limit } => write!(
                f,
                "response from {url} is larger than the {limit}-byte limit"
            ),
            LlmError::MalformedJson { url, message } => {
                write!(f, "malformed JSON response from {url}: {message}")
            }
            LlmError::MissingField { url, field } => {
                write!(f, "response from {url} is missing field `{field}`")
            }
            LlmError::GaveUp { attempts, last } => {
                write!(f, "{last} (gave up after {attempts} attempts)")
            }
        }
    }
}

impl std::error::Error for LlmError {}

// ---------------------------------------------------------------------------------------------
// URL and TLS
// ---------------------------------------------------------------------------------------------

/// Checks an `http(s)://host[:port][/path]` base URL and returns it without a trailing slash.
fn check_base_url(url: &str) -> Result<String, LlmError> {
    let invalid = |reason: &str| LlmError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let rest = ["http://", "https://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
        .and_then(|scheme| trimmed.get(scheme.len()..))
        .ok_or_else(|| invalid("expected a URL starting with http:// or https://"))?;
    if rest.contains(['?', '#', '@']) || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "query strings, fragments, credentials and spaces are not supported",
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
            let port = match after {
                "" => None,
                a => Some(
                    a.strip_prefix(':')
                        .ok_or_else(|| invalid("unexpected text after the IPv6 address"))?,
                ),
            };
            (host, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(invalid("the port must be 1..=65535")),
        }
    }
    Ok(trimmed.to_string())
}

/// The TLS configuration: webpki roots plus the certificates of `extra` (a PEM file).
fn tls_config(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, LlmError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let bad = |reason: String| LlmError::CertFile {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        // System bundles may hold a certificate webpki cannot parse: skip those, as
        // OpenSSL does, but refuse a file with none that is usable.
        let (added, _skipped) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("holds no usable PEM certificate".to_string()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LlmError::Connect {
            url: String::new(),
            message: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The first `n` characters of `text`, on one line.
fn one_line_prefix(text: &str, n: usize) -> String {
    text.chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A random factor in [0.5, 1] for backoff jitter (std's per-process random hash keys).
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    0.5 + 0.5 * unit
}

/// Seconds in a `Retry-After` header (the HTTP-date form is ignored).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

/// A client for an OpenAI-compatible server over HTTP or HTTPS.
///
/// Cheap to clone (the connection agent is shared). `Debug` shows whether a key is set, never
/// the key.
#[derive(Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: Option<String>,
    model: String,
    temperature: f64,
    seed: Option<u64>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_response_bytes: usize,
    agent: ureq::Agent,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("model", &self.model)
            .field("temperature", &self.temperature)
            .field("seed", &self.seed)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl OpenAiClient {
    /// A client for `base_url` (e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:8000/v1`) using chat model `model`. `api_key`, if given and
    /// non-empty, is sent as `Authorization: Bearer KEY`. TLS trusts the webpki roots and the
    /// certificates in the file named by `SSL_CERT_FILE`, if set.
    ///
    /// Fails on a URL that is not `http(s)://host[:port][/path]` ([`LlmError::InvalidUrl`])
    /// or an unreadable `SSL_CERT_FILE` ([`LlmError::CertFile`]).
    pub fn new(base_url: &str, api_key: Option<&str>, model: &str) -> Result<Self, LlmError> {
        let cert_file = std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self::with_cert_file(base_url, api_key, model, cert_file.as_deref())
    }

    /// Like [`OpenAiClient::new`], trusting the certificates of `cert_file` (a PEM file) in
    /// addition to the webpki roots instead of reading `SSL_CERT_FILE`.
    pub fn with_cert_file(
        base_url: &str,
        api_key: Option<&str>,
        model: &str,
        cert_file: Option<&Path>,
    ) -> Result<Self, LlmError> {
        let base_url = check_base_url(base_url)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls_config(cert_file)?)
            // One connection per request: a server that closes idle connections cannot
            // break a request sent on a stale one, and retries always start afresh.
            .max_idle_connections(0)
            .user_agent(concat!("trajdb/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(OpenAiClient {
            base_url,
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_string),
            model: model.to_string(),
            temperature: 0.0,
            seed: None,
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            backoff: DEFAULT_BACKOFF,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            agent,
        })
    }

    /// A client configured from the environment: `OPENAI_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]), `OPENAI_API_KEY` (optional) and `SSL_CERT_FILE` (optional).
    /// Empty values count as unset.
    pub fn from_env(model: &str) -> Result<Self, LlmError> {
        let lookup = |name: &str| std::env::var(name).ok();
        let base = lookup("OPENAI_BASE_URL")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        Self::new(&base, lookup("OPENAI_API_KEY").as_deref(), model)
    }

    /// Sets the time limit of one attempt: connect, send and the whole response (default
    /// 120 s). A zero duration is raised to 1 ms.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets how many times a failed attempt is retried (default 5; 0 = one attempt only).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the first backoff delay (default 0.5 s); it doubles on each retry, capped at 30 s.
    pub fn with_backoff(mut self, first: Duration) -> Self {
        self.backoff = first;
        self
    }

    /// Sets the bound on a response body in bytes (default 16 MiB).
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Sets the sampling temperature sent with chat requests (default 0).
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets the sampling seed sent with chat requests (`seed`; default none, not sent), so
    /// clients with different seeds sample differently on servers that honour it (vLLM,
    /// llama.cpp, OpenAI on a best-effort basis).
    pub fn with_seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    /// The chat model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends the conversation to `{base}/chat/completions` and returns
    /// `choices[0].message.content`.
    pub fn chat(&self, messages: &[ChatMessage]) -> Result<String, LlmError> {
        self.chat_limited(messages, &[], None)
    }

    /// [`OpenAiClient::chat`] with stop sequences (`stop`, none sent when empty) and a bound
    /// on the reply's tokens (`max_tokens`, not sent when None).
    pub fn chat_limited(
        &self,
        messages: &[ChatMessage],
        stop: &[String],
        max_tokens: Option<u32>,
    ) -> Result<String, LlmError> {
        let request = ChatRequest {
            model: &self.model,
            messages,
            temperature: self.temperature,
            seed: self.seed,
            stop,
            max_tokens,
        };
        let (url, json) = self.post_json("/chat/completions", &request)?;
        json.get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("message"))
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| LlmError::MissingField {
                url,
                field: "choices[0].message.content".to_string(),
            })
    }

    /// Embeds `inputs` with embedding model `model` through `{base}/embeddings`, returning one
    /// vector per input in input order (the response's `index` fields are honoured).
    pub fn embed(&self, model: &str, inputs: &[&str]) -> Result<Vec<Vec<f32>>, LlmError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let request = EmbeddingRequest {
            model,
            input: inputs,
        };
        let (url, json) = self.post_json("/embeddings", &request)?;
        let missing = |field: String| LlmError::MissingField {
            url: url.clone(),
            field,
        };
        let data = json
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| missing("data".to_string()))?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; inputs.len()];
        for (position, item) in data.iter().enumerate() {
            let index = match item.get("index") {
                None => position,
                Some(v) => v
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| missing(format!("data[{position}].index")))?,
            };
            let values = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| missing(format!("data[{position}].embedding")))?;
            let mut vector = Vec::with_capacity(values.len());
            for (k, v) in values.iter().enumerate() {
                let x = v
                    .as_f64()
                    .ok_or_else(|| missing(format!("data[{position}].embedding[{k}]")))?;
                vector.push(x as f32);
            }
            if let Some(slot) = out.get_mut(index) {
                *slot = Some(vector);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, v)| v.ok_or_else(|| missing(format!("data[{i}].embedding"))))
            .collect()
    }

    /// POSTs `body` as JSON to `{base}{endpoint}` with retries and parses a 2xx JSON answer.
    fn post_json<T: Serialize>(
        &self,
        endpoint: &str,
        body: &T,
    ) -> Result<(String, Value), LlmError> {
        let url = format!("{}{endpoint}", self.base_url);
        let payload = serde_json::to_vec(body).map_err(|e| LlmError::Io {
            url: url.clone(),
            message: format!("cannot encode request: {e}"),
        })?;
        let mut attempt = 0u32;
        loop {
            let (result, wait_hint) = self.attempt(&url, &payload);
            let error = match result {
                Ok(text) => {
                    let json: Value =
                        serde_json::from_str(&text).map_err(|e| LlmError::MalformedJson {
                            url: url.clone(),
                            message: one_line_prefix(&e.to_string(), ERROR_BODY_CHARS),
                        })?;
                    return Ok((url, json));
                }
                Err(e) => e,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            if attempt >= self.retries {
                return Err(if attempt == 0 {
                    error
                } else {
                    LlmError::GaveUp {
                        attempts: attempt + 1,
                        last: Box::new(error),
                    }
                });
            }
            let backoff = self
                .backoff
                .saturating_mul(1u32 << attempt.min(20))
                .min(MAX_BACKOFF)
                .mul_f64(jitter());
            std::thread::sleep(wait_hint.unwrap_or(backoff));
            attempt += 1;
        }
    }

    /// One attempt: the body text of a 2xx answer, or the error and the server's
    /// `Retry-After`.
    fn attempt(&self, url: &str, payload: &[u8]) -> (Result<String, LlmError>, Option<Duration>) {
        let mut request = self
            .agent
            .post(url)
            .timeout(self.timeout)
            .set("Content-Type", "application/json")
            .set("Accept", "application/json");
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        match request.send_bytes(payload) {
            Ok(response) => (self.read_body(url, response), None),
            Err(ureq::Error::Status(status, response)) => {
                let wait = retry_after(response.header("retry-after"));
                let text = match self.read_body(url, response) {
                    Ok(text) => text,
                    Err(e) => format!("(body unreadable: {e})"),
                };
                let body = self.redact(&one_line_prefix(&text, ERROR_BODY_CHARS));
                (
                    Err(LlmError::Http {
                        url: url.to_string(),
                        status,
                        body,
                    }),
                    wait,
                )
            }
            Err(ureq::Error::Transport(t)) => (Err(self.transport_error(url, &t)), None),
        }
    }

    /// Reads a response body under the size bound and the time limit.
    fn read_body(&self, url: &str, response: ureq::Response) -> Result<String, LlmError> {
        let limit = self.max_response_bytes;
        let mut body = Vec::new();
        response
            .into_reader()
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| self.io_error(url, &e))?;
        if body.len() > limit {
            return Err(LlmError::ResponseTooLarge {
                url: url.to_string(),
                limit,
            });
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn io_error(&self, url: &str, e: &std::io::Error) -> LlmError {
        let url = url.to_string();
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => LlmError::Timeout {
                url,
                after: self.timeout,
            },
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => {
                LlmError::MalformedHttp {
                    url,
                    detail: self.redact(&e.to_string()),
                }
            }
            _ => LlmError::Io {
                url,
                message: self.redact(&e.to_string()),
            },
        }
    }

    fn transport_error(&self, url: &str, t: &ureq::Transport) -> LlmError {
        use ureq::ErrorKind as K;
        // The innermost I/O error says whether it was a timeout.
        let mut source = std::error::Error::source(t);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    return LlmError::Timeout {
                        url: url.to_string(),
                        after: self.timeout,
                    };
                }
            }
            source = s.source();
        }
        let message = self.redact(&one_line_prefix(&t.to_string(), 400));
        let url = url.to_string();
        match t.kind() {
            K::InvalidUrl | K::UnknownScheme => LlmError::InvalidUrl {
                url,
                reason: message,
            },
            K::Dns | K::ConnectionFailed | K::ProxyConnect => LlmError::Connect { url, message },
            K::BadStatus | K::BadHeader => LlmError::MalformedHttp {
                url,
                detail: message,
            },
            _ => LlmError::Io { url, message },
        }
    }

    /// `text` with every occurrence of the API key replaced.
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), REDACTED),
            _ => text.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Embedder
// ---------------------------------------------------------------------------------------------

/// An [`trajdb::Embedder`] over an OpenAI-compatible `/v1/embeddings` endpoint.
///
/// It records itself in key spaces as `openai:MODEL`, version `1`, with the dimensions the
/// server returned for a probe sentence when it was made (so an unreachable server or an
/// unknown model is reported before anything is written).
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    client: OpenAiClient,
    model: String,
    dims: u32,
}

/// Name prefix an [`OpenAiEmbedder`] records (`openai:MODEL`).
pub const OPENAI_EMBEDDER_PREFIX: &str = "openai:";

impl OpenAiEmbedder {
    /// Connects to `client`'s server and learns `model`'s dimensions from one probe request.
    pub fn connect(client: OpenAiClient, model: &str) -> Result<Self, LlmError> {
        let probe = client.embed(model, &["trajdb dimension probe"])?;
        let url = format!("{}/embeddings", client.base_url());
        let dims = probe
            .first()
            .map(Vec::len)
            .filter(|&n| n > 0)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(LlmError::MissingField {
                url,
                field: "data[0].embedding (empty)".to_string(),
            })?;
        Ok(OpenAiEmbedder {
            client,
            model: model.to_string(),
            dims,
        })
    }

    fn embed_texts(&self, texts: &[&str]) -> trajdb::Result<Vec<Vec<f32>>> {
        let at = format!("embedder {OPENAI_EMBEDDER_PREFIX}{}", self.model);
        let vectors = self
            .client
            .embed(&self.model, texts)
            .map_err(|e| trajdb::Error::invalid(at.clone(), e.to_string()))?;
        for v in &vectors {
            if u32::try_from(v.len()).ok() != Some(self.dims) {
                return Err(trajdb::Error::invalid(
                    at,
                    format!(
                        "the server returned {} dimensions, expected {}",
                        v.len(),
                        self.dims
                    ),
                ));
            }
        }
        Ok(vectors)
    }
}

impl trajdb::Embedder for OpenAiEmbedder {
    fn id(&self) -> trajdb::EmbedderId {
        trajdb::EmbedderId {
            name: format!("{OPENAI_EMBEDDER_PREFIX}{}", self.model),
            version: "1".to_string(),
            dims: self.dims,
        }
    }

    fn embed(&self, text: &str) -> trajdb::Result<Vec<f32>> {
        let mut v = self.embed_texts(&[text])?;
        Ok(v.pop().unwrap_or_default())
    }

    fn embed_batch(&self, texts: &[&str]) -> trajdb::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            out.extend(self.embed_texts(chunk)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    /// A request as the test server saw it.
    #[derive(Debug)]
    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or(Value::Null)
        }
    }

    /// Reads one request (head + Content-Length body) from a test connection.
    fn read_request(stream: &mut TcpStream) -> Option<Seen> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut data = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Some(Seen {
            request_line,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Starts a server on 127.0.0.1:0 that answers one connection per canned response (raw
    /// bytes, sent after an optional delay) and then exits. It gives up after 10 s without a
    /// connection. Returns the base URL and a receiver of the requests seen.
    fn serve(responses: Vec<(Duration, Vec<u8>)>) -> (String, mpsc::Receiver<Seen>) {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let _ = listener.set_nonblocking(true);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (delay, response) in responses {
                let give_up = Instant::now() + Duration::from_secs(10);
                let mut stream = loop {
                    match listener.accept() {
                        Ok((s, _)) => break s,
                        Err(_) if Instant::now() < give_up => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => return,
                    }
                };
                let _ = stream.set_nonblocking(false);
                if let Some(seen) = read_request(&mut stream) {
                    let _ = tx.send(seen);
                }
                thread::sleep(delay);
                let _ = stream.write_all(&response);
                let _ = stream.flush();
            }
        });
        (format!("http://127.0.0.1:{port}/v1"), rx)
    }

    fn with_length(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn chunked(status: &str, body: &str, pieces: usize) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let bytes = body.as_bytes();
        let size = bytes.len().div_ceil(pieces.max(1)).max(1);
        for piece in bytes.chunks(size) {
            out.push_str(&format!("{:x}\r\n", piece.len()));
            out.push_str(&String::from_utf8_lossy(piece));
            out.push_str("\r\n");
        }
        out.push_str("0\r\n\r\n");
        out.into_bytes()
    }

    /// A client with short timeouts and no retries unless a test asks for them.
    fn client(base: &str, key: Option<&str>) -> OpenAiClient {
        match OpenAiClient::with_cert_file(base, key, "test-model", None) {
            Ok(c) => c
                .with_timeout(Duration::from_secs(5))
                .with_retries(0)
                .with_backoff(Duration::from_millis(10)),
            Err(e) => panic!("client: {e}"),
        }
    }

    fn seen(rx: &mpsc::Receiver<Seen>) -> Seen {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => panic!("server saw no request: {e}"),
        }
    }

    #[test]
    fn truncated_body_is_retried_then_reported_as_malformed() {
        let truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec();
        let (base, rx) = serve(vec![
            (Duration::ZERO, truncated.clone()),
            (Duration::ZERO, truncated),
        ]);
        let err = client(&base, None)
            .with_retries(1)
            .chat(&[ChatMessage::user("hi")])
            .err();
        match &err {
            Some(LlmError::GaveUp { attempts: 2, last }) => {
                assert!(matches!(**last, LlmError::MalformedHttp { .. }), "{last:?}")
            }
            other => panic!("expected two failed attempts, got {other:?}"),
        }
        assert_eq!(rx.try_iter().count(), 2, "both attempts reached the server");
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let big = with_length("200 OK", &format!("\"{}\"", "y".repeat(1000)));
        let big_chunked = chunked("200 OK", &format!("\"{}\"", "y".repeat(1000)), 4);
        let (base, _rx) = serve(vec![(Duration::ZERO, big), (Duration::ZERO, big_chunked)]);
        let c = client(&base, None).with_max_response_bytes(256);
        let msg = [ChatMessage::user("hi")];
        for _ in 0..2 {
            assert!(matches!(
                c.chat(&msg),
                Err(LlmError::ResponseTooLarge { limit: 256, .. })
            ));
        }
    }

    #[test]
    fn rate_limit_429_twice_then_200_succeeds_honouring_retry_after() {
        let ok = with_length(
            "200 OK",
            r#"{"choices":[{"message":{"content":"third time"}}]}"#,
        );
        let limited =
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0.2\r\nContent-Length: 4\r\n\r\nslow"
                .to_vec();
        let (base, rx) = serve(vec![
            (Duration::ZERO, limited.clone()),
            (Duration::ZERO, limited),
            (Duration::ZERO, ok),
        ]);
        let started = Instant::now();
        let answer = client(&base, None)
            .with_retries(5)
            .chat(&[ChatMessage::user("hi")]);
        assert_eq!(answer, Ok("third time".to_string()));
        // Two waits of Retry-After (0.2 s) instead of the 10 ms backoff.
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(rx.try_iter().count(), 3);
    }

    #[test]
    fn server_error_500_then_200_succeeds() {
        let ok = with_length(
            "200 OK",
            r#"{"choices":[{"message":{"content":"recovered"}}]}"#,
        );
        let (base, rx) = serve(vec![
            (
                Duration::ZERO,
                with_length("500 Internal Server Error", "oops"),
            ),
            (Duration::ZERO, ok),
        ]);
        let answer = client(&base, None)
            .with_retries(5)
            .chat(&[ChatMessage::user("hi")]);
        assert_eq!(answer, Ok("recovered".to_string()));
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn retries_are_bounded_and_client_errors_are_not_retried() {
        let fail = || {
            (
                Duration::ZERO,
                with_length("503 Service Unavailable", "busy"),
            )
        };
        let (base, rx) = serve(vec![fail(), fail(), fail(), fail()]);
        let err = client(&base, None)
            .with_retries(2)
            .chat(&[ChatMessage::user("hi")])
            .err();
        assert!(
            matches!(&err, Some(LlmError::GaveUp { attempts: 3, last }) if matches!(**last, LlmError::Http { status: 503, .. })),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.ends_with("(gave up after 3 attempts)"), "{text}");
        assert_eq!(rx.try_iter().count(), 3, "exactly 1 + 2 retries");

        let (base, rx) = serve(vec![
            (Duration::ZERO, with_length("400 Bad Request", "no")),
            fail(),
        ]);
        let err = client(&base, None)
            .with_retries(5)
            .chat(&[ChatMessage::user("hi")])
            .err();
        assert!(
            matches!(err, Some(LlmError::Http { status: 400, .. })),
            "{err:?}"
        );
        assert_eq!(rx.try_iter().count(), 1, "a 400 is final");
    }

    #[test]
    fn slow_reply_past_the_timeout_is_a_timeout() {
        let answer = with_length("200 OK", r#"{"choices":[]}"#);
        let (base, _rx) = serve(vec![(Duration::from_millis(1500), answer)]);
        let c = client(&base, None).with_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let err = c.chat(&[ChatMessage::user("hi")]).err();
        assert!(matches!(err, Some(LlmError::Timeout { .. })), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(1400));
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("timed out after 0.2 s"), "{text}");
    }

    #[test]
    fn api_key_never_appears_in_errors_or_debug() {
        let key = "sk-very-secret-0123456789";
        let echo = format!("invalid api key {key}, Authorization: Bearer {key}");
        let (base, rx) = serve(vec![(
            Duration::ZERO,
            with_length("401 Unauthorized", &echo),
        )]);
        let c = client(&base, Some(key));
        let err = c.chat(&[ChatMessage::user("hi")]).err();
        let text = err
            .as_ref()
            .map(|e| format!("{e} {e:?}"))
            .unwrap_or_default();
        assert!(
            matches!(err, Some(LlmError::Http { status: 401, .. })),
            "{err:?}"
        );
        assert!(!text.contains(key), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        assert!(!format!("{c:?}").contains(key));
        // The key did reach the server, in the header only.
        assert_eq!(
            seen(&rx).header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
        // A refused connection's message does not carry it either.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let err = client(&format!("http://127.0.0.1:{port}/v1"), Some(key))
            .chat(&[ChatMessage::user("hi")])
            .err();
        let text = err.map(|e| format!("{e} {e:?}")).unwrap_or_default();
        assert!(!text.contains(key), "{text}");
    }

    #[test]
    fn unreadable_cert_file_is_one_clear_error() {
        let missing = Path::new("/nonexistent/trajdb-ca.pem");
        let err =
            OpenAiClient::with_cert_file("https://example.com/v1", None, "m", Some(missing)).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("certificate file /nonexistent/trajdb-ca.pem (SSL_CERT_FILE): "),
            "{text}"
        );
        let dir = std::env::temp_dir().join(format!("trajdb-certfile-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let not_pem = dir.join("empty.pem");
        let _ = std::fs::write(&not_pem, "not a certificate\n");
        let err =
            OpenAiClient::with_cert_file("https://example.com/v1", None, "m", Some(&not_pem)).err();
        assert!(matches!(err, Some(LlmError::CertFile { .. })), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn base_urls_are_checked() {
        for good in [
            "http://localhost:11434/v1/",
            "https://api.openai.com/v1",
            "http://[::1]:8080",
            "HTTPS://example.com",
        ] {
            assert!(check_base_url(good).is_ok(), "{good} should be accepted");
        }
        assert_eq!(
            check_base_url("http://localhost:11434/v1/").ok().as_deref(),
            Some("http://localhost:11434/v1")
        );
        for bad in [
            "ftp://x",
            "localhost:8000",
            "http://",
            "http://host:99999",
            "http://host:0/v1",
            "http://user@host/v1",
            "http://host/v1?x=1",
            "http://[::1/v1",
        ] {
            assert!(
                matches!(check_base_url(bad), Err(LlmError::InvalidUrl { .. })),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn non_ascii_host_is_refused_as_an_invalid_url() {
        // The IDNA back end is the ASCII-only adapter (see Cargo.toml).
        let err = client("http://bücher.example/v1", None)
            .chat(&[ChatMessage::user("hi")])
            .err();
        assert!(matches!(err, Some(LlmError::InvalidUrl { .. })), "{err:?}");
    }

    #[test]
    fn openai_embedder_learns_dims_and_embeds_in_batches() {
        use trajdb::Embedder;
        let probe = r#"{"data":[{"index":0,"embedding":[1.0,0.0,0.0]}]}"#;
        let two = r#"{"data":[{"index":0,"embedding":[0.0,1.0,0.0]},{"index":1,"embedding":[0.0,0.0,1.0]}]}"#;
        let (base, rx) = serve(vec![
            (Duration::ZERO, with_length("200 OK", probe)),
            (Duration::ZERO, with_length("200 OK", two)),
        ]);
        let e = match OpenAiEmbedder::connect(client(&base, None), "mini") {
            Ok(e) => e,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(e.id().to_string(), "openai:mini@1 (3 dims)");
        let v = e.embed_batch(&["a", "b"]);
        assert_eq!(v.ok(), Some(vec![vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]]));
        assert_eq!(seen(&rx).json()["model"], "mini");
    }

    #[test]
    fn chat_sends_stop_max_tokens_temperature_and_seed_only_when_set() {
        let answer = r#"{"choices":[{"message":{"role":"assistant","content":"fish, axe"}}]}"#;
        let (base, rx) = serve(vec![
            (Duration::ZERO, with_length("200 OK", answer)),
            (Duration::ZERO, with_length("200 OK", answer)),
        ]);
        let c = client(&base, None)
            .with_temperature(0.1)
            .with_seed(Some(42));
        let m = [ChatMessage::user("Action:")];
        let stop = vec!["\n".to_owned()];
        assert_eq!(c.chat_limited(&m, &stop, Some(32)), Ok("fish, axe".into()));
        let body = seen(&rx).json();
        assert_eq!(body["temperature"].as_f64(), Some(0.1));
        assert_eq!(body["seed"].as_u64(), Some(42));
        assert_eq!(body["stop"], serde_json::json!(["\n"]));
        assert_eq!(body["max_tokens"].as_u64(), Some(32));
        // Plain chat from a client without a seed sends none of them.
        let plain = client(&base, None);
        assert!(plain.chat(&m).is_ok());
        let body = seen(&rx).json();
        for field in ["seed", "stop", "max_tokens"] {
            assert!(body.get(field).is_none(), "{field} sent: {body}");
        }
    }

    #[test]
    fn chat_posts_openai_request_and_returns_first_choice() {
        let answer = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"select metal"}}]}"#;
        let (base, rx) = serve(vec![(Duration::ZERO, with_length("200 OK", answer))]);
        let c = client(&base, Some("sk-test"));
        let messages = [
            ChatMessage::system("You play Wordcraft."),
            ChatMessage::user("Goal: create cyborg"),
            ChatMessage::assistant("ok"),
        ];
        assert_eq!(c.chat(&messages), Ok("select metal".to_string()));
        let req = seen(&rx);
        assert_eq!(req.request_line, "POST /v1/chat/completions HTTP/1.1");
        assert_eq!(req.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        let host = req.header("host").unwrap_or("");
        assert!(host.starts_with("127.0.0.1:"), "{host}");
        let body = req.json();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["temperature"].as_f64(), Some(0.0));
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["role"], "user");
        assert_eq!(body["messages"][2]["role"], "assistant");
        assert_eq!(body["messages"][1]["content"], "Goal: create cyborg");
    }

    #[test]
    fn chat_reads_chunked_response_without_api_key() {
        let answer = r#"{"choices":[{"message":{"role":"assistant","content":"héllo\nworld"}}]}"#;
        let (base, rx) = serve(vec![(Duration::ZERO, chunked("200 OK", answer, 5))]);
        let c = client(&format!("{base}/"), None);
        assert_eq!(
            c.chat(&[ChatMessage::user("hi")]),
            Ok("héllo\nworld".to_string())
        );
        let req = seen(&rx);
        assert_eq!(req.header("authorization"), None);
        assert_eq!(req.request_line, "POST /v1/chat/completions HTTP/1.1");
    }

    #[test]
    fn embed_returns_vectors_in_input_order_from_chunked_body() {
        // Out of order on purpose: the client must sort by "index".
        let answer = r#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[0.5,-1.0,2]},
            {"object":"embedding","index":0,"embedding":[1.0,0.0,0.25]}],
            "model":"mini"}"#;
        let (base, rx) = serve(vec![(Duration::ZERO, chunked("200 OK", answer, 3))]);
        let c = client(&base, None);
        let vectors = c.embed("mini", &["first", "second"]);
        assert_eq!(
            vectors,
            Ok(vec![vec![1.0, 0.0, 0.25], vec![0.5, -1.0, 2.0]])
        );
        let req = seen(&rx);
        assert_eq!(req.request_line, "POST /v1/embeddings HTTP/1.1");
        let body = req.json();
        assert_eq!(body["model"], "mini");
        assert_eq!(body["input"], serde_json::json!(["first", "second"]));
    }

    #[test]
    fn embed_with_too_few_vectors_is_a_missing_field() {
        let answer = r#"{"data":[{"index":0,"embedding":[1.0]}]}"#;
        let (base, _rx) = serve(vec![(Duration::ZERO, with_length("200 OK", answer))]);
        let err = client(&base, None).embed("m", &["a", "b"]).err();
        assert!(
            matches!(&err, Some(LlmError::MissingField { field, .. }) if field == "data[1].embedding"),
            "{err:?}"
        );
        assert_eq!(client(&base, None).embed("m", &[]), Ok(Vec::new()));
    }

    #[test]
    fn http_500_reports_status_and_first_200_chars_of_body() {
        let long_body = format!("internal error:\n{}", "x".repeat(500));
        let (base, _rx) = serve(vec![(
            Duration::ZERO,
            with_length("500 Internal Server Error", &long_body),
        )]);
        let err = client(&base, None).chat(&[ChatMessage::user("hi")]).err();
        match &err {
            Some(LlmError::Http { status, body, url }) => {
                assert_eq!(*status, 500);
                assert_eq!(body.chars().count(), 200);
                assert!(body.starts_with("internal error: x"));
                assert!(url.ends_with("/v1/chat/completions"));
            }
            other => panic!("expected an HTTP error, got {other:?}"),
        }
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.starts_with("HTTP 500 from http://127.0.0.1:"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn malformed_json_body_is_reported() {
        let (base, _rx) = serve(vec![(Duration::ZERO, with_length("200 OK", "{not json"))]);
        let err = client(&base, None).chat(&[ChatMessage::user("hi")]).err();
        assert!(
            matches!(err, Some(LlmError::MalformedJson { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn missing_content_is_reported_with_its_path() {
        let answer = r#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#;
        let (base, _rx) = serve(vec![(Duration::ZERO, with_length("200 OK", answer))]);
        let err = client(&base, None).chat(&[ChatMessage::user("hi")]).err();
        assert!(
            matches!(&err, Some(LlmError::MissingField { field, .. }) if field == "choices[0].message.content"),
            "{err:?}"
        );
    }

    #[test]
    fn connection_refused_names_the_url() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(9);
        let c = client(&format!("http://127.0.0.1:{port}/v1"), None);
        let err = c.chat(&[ChatMessage::user("hi")]).err();
        match &err {
            Some(LlmError::Connect { url, .. }) => {
                assert_eq!(url, &format!("http://127.0.0.1:{port}/v1/chat/completions"))
            }
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    #[test]
    fn chat_message_serialises_role_in_lowercase() {
        let json = serde_json::to_string(&ChatMessage::system("be brief")).unwrap_or_default();
        assert_eq!(json, r#"{"role":"system","content":"be brief"}"#);
        let back: Result<ChatMessage, _> =
            serde_json::from_str(r#"{"role":"assistant","content":"ok"}"#);
        assert_eq!(back.ok(), Some(ChatMessage::assistant("ok")));
    }
}
