//! A small OpenAI-compatible client (chat completions and embeddings) using only `std`.
//!
//! It speaks plain HTTP/1.1 over [`std::net::TcpStream`] to `http://host:port/path` base URLs,
//! as served locally by vLLM, the llama.cpp server and Ollama. TLS is not supported: an
//! `https://` base URL is refused with [`LlmError::TlsUnsupported`]; put a local http endpoint
//! or a TLS-terminating proxy in front of remote services.
//!
//! Each request opens one connection (`Connection: close`). Responses may use
//! `Content-Length`, `Transfer-Encoding: chunked` or close-delimited bodies; their size is
//! bounded (16 MiB by default) and the exchange has a connect timeout and a response deadline
//! (120 s each by default).

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Base URL used by [`OpenAiClient::from_env`] when `OPENAI_BASE_URL` is unset or empty.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8000/v1";
/// Default connect timeout and response deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default bound on a response body, in bytes (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Bound on the status line plus headers of a response, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How many characters of an error body are kept in [`LlmError::Http`].
const ERROR_BODY_CHARS: usize = 200;

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

/// Why a request failed. Its `Display` is one line saying what went wrong and where.
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
    /// The base URL uses `https`, which the built-in client cannot speak.
    TlsUnsupported {
        /// The URL as given.
        url: String,
    },
    /// The connection could not be made (refused, unreachable, name not resolved...).
    Connect {
        /// The URL requested.
        url: String,
        /// The system's message.
        message: String,
    },
    /// Connecting or waiting for the response took longer than allowed.
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
    /// The response is not valid HTTP/1.x.
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
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmError::InvalidUrl { url, reason } => {
                write!(f, "invalid base URL {url:?}: {reason}")
            }
            LlmError::TlsUnsupported { url } => write!(
                f,
                "cannot use {url:?}: TLS (https) is not supported by the built-in client; \
                 use a local http:// endpoint (vLLM, llama.cpp server, Ollama) or an http-to-https proxy"
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
        }
    }
}

impl std::error::Error for LlmError {}

// ---------------------------------------------------------------------------------------------
// URL
// ---------------------------------------------------------------------------------------------

/// A parsed `http://host[:port][/path]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseUrl {
    /// Host as written, with brackets for IPv6 (used in the `Host` header and messages).
    host: String,
    port: u16,
    /// Path prefix without a trailing slash ("" or "/v1").
    path: String,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<BaseUrl, LlmError> {
        let invalid = |reason: &str| LlmError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim();
        let lower = trimmed.to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            return Err(LlmError::TlsUnsupported {
                url: url.to_string(),
            });
        } else if lower.starts_with("http://") {
            trimmed.get("http://".len()..).unwrap_or("")
        } else {
            return Err(invalid("expected a URL starting with http://"));
        };
        if rest.contains(['?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(invalid(
                "query strings, fragments, credentials and spaces are not supported",
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(invalid("missing host"));
        }
        let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
            let close = after_bracket
                .find(']')
                .ok_or_else(|| invalid("unclosed '[' in IPv6 host"))?;
            let host = authority.get(..close + 2).unwrap_or(authority);
            let tail = after_bracket.get(close + 1..).unwrap_or("");
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => return Err(invalid("unexpected text after IPv6 host")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("missing host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| invalid("port must be a number from 1 to 65535"))?,
        };
        Ok(BaseUrl {
            host: host.to_string(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// Host for name resolution (IPv6 brackets removed).
    fn connect_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn url_for(&self, path: &str) -> String {
        format!("http://{}{}", self.authority(), path)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP response.
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Reads one response from a stream under a deadline and a size bound.
struct ResponseReader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
    timeout: Duration,
    url: &'a str,
    eof: bool,
}

impl ResponseReader<'_> {
    fn timeout_error(&self) -> LlmError {
        LlmError::Timeout {
            url: self.url.to_string(),
            after: self.timeout,
        }
    }

    /// Reads more bytes into the buffer; returns false at end of stream.
    fn fill(&mut self) -> Result<bool, LlmError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout_error());
        }
        self.stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| io_error(self.url, &e))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(self.timeout_error()),
                Err(e) => return Err(io_error(self.url, &e)),
            }
        }
    }

    fn available(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    fn malformed(&self, detail: impl Into<String>) -> LlmError {
        LlmError::MalformedHttp {
            url: self.url.to_string(),
            detail: detail.into(),
        }
    }

    /// Reads one CRLF- (or LF-) terminated line of at most `max` bytes, without the ending.
    fn read_line(&mut self, max: usize) -> Result<String, LlmError> {
        loop {
            if let Some(i) = self.available().iter().position(|&b| b == b'\n') {
                let line = self.available().get(..i).unwrap_or(&[]);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let text = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(text);
            }
            if self.available().len() > max {
                return Err(self.malformed(format!("line longer than {max} bytes")));
            }
            if !self.fill()? {
                return Err(self.malformed("connection closed in the middle of a line"));
            }
        }
    }

    /// Appends exactly `n` bytes to `out`.
    fn read_exact_into(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), LlmError> {
        let mut left = n;
        while left > 0 {
            if self.available().is_empty() && !self.fill()? {
                return Err(self.malformed(format!(
                    "connection closed with {left} of {n} body bytes missing"
                )));
            }
            let take = left.min(self.available().len());
            out.extend_from_slice(self.available().get(..take).unwrap_or(&[]));
            self.pos += take;
            left -= take;
        }
        Ok(())
    }

    /// Appends everything until end of stream, failing past `limit` bytes.
    fn read_to_end_into(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<(), LlmError> {
        loop {
            out.extend_from_slice(self.available());
            self.pos = self.buf.len();
            if out.len() > limit {
                return Err(LlmError::ResponseTooLarge {
                    url: self.url.to_string(),
                    limit,
                });
            }
            if !self.fill()? {
                return Ok(());
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

fn io_error(url: &str, e: &std::io::Error) -> LlmError {
    LlmError::Io {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// The first `n` characters of `text`, on one line.
fn one_line_prefix(text: &str, n: usize) -> String {
    text.chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn read_response(reader: &mut ResponseReader<'_>, limit: usize) -> Result<Response, LlmError> {
    // Skip interim 1xx responses.
    let (status, headers) = loop {
        let status_line = reader.read_line(MAX_HEAD_BYTES)?;
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(reader.malformed(format!(
                "bad status line {:?}",
                one_line_prefix(&status_line, 80)
            )));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| {
                reader.malformed(format!(
                    "bad status line {:?}",
                    one_line_prefix(&status_line, 80)
                ))
            })?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut head_bytes = status_line.len();
        loop {
            let line = reader.read_line(MAX_HEAD_BYTES)?;
            if line.is_empty() {
                break;
            }
            head_bytes += line.len() + 2;
            if head_bytes > MAX_HEAD_BYTES {
                return Err(reader.malformed(format!("headers longer than {MAX_HEAD_BYTES} bytes")));
            }
            let (name, value) = line.split_once(':').ok_or_else(|| {
                reader.malformed(format!("bad header line {:?}", one_line_prefix(&line, 80)))
            })?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        break (status, headers);
    };
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .next_back()
    };
    let chunked = header("transfer-encoding")
        .map(|v| {
            v.rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
        .unwrap_or(false);
    let url = reader.url;
    let too_large = || LlmError::ResponseTooLarge {
        url: url.to_string(),
        limit,
    };
    let mut body = Vec::new();
    if status == 204 || status == 304 {
        // No body by definition.
    } else if chunked {
        loop {
            let size_line = reader.read_line(1024)?;
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| {
                reader.malformed(format!(
                    "bad chunk size {:?}",
                    one_line_prefix(&size_line, 40)
                ))
            })?;
            if size == 0 {
                // Trailers, up to the empty line (tolerate a missing one at end of stream).
                loop {
                    match reader.read_line(MAX_HEAD_BYTES) {
                        Ok(line) if line.is_empty() => break,
                        Ok(_) => continue,
                        Err(_) if reader.eof => break,
                        Err(e) => return Err(e),
                    }
                }
                break;
            }
            if body.len().saturating_add(size) > limit {
                return Err(too_large());
            }
            reader.read_exact_into(size, &mut body)?;
            let end = reader.read_line(16)?;
            if !end.is_empty() {
                return Err(reader.malformed("chunk not followed by CRLF"));
            }
        }
    } else if let Some(length) = header("content-length") {
        let length = length
            .parse::<usize>()
            .map_err(|_| reader.malformed(format!("bad Content-Length {length:?}")))?;
        if length > limit {
            return Err(too_large());
        }
        reader.read_exact_into(length, &mut body)?;
    } else {
        reader.read_to_end_into(limit, &mut body)?;
    }
    Ok(Response { status, body })
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f64,
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

/// A client for an OpenAI-compatible server reached over plain HTTP.
///
/// Cheap to clone; holds no connection (each request opens its own).
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    base_url: String,
    base: BaseUrl,
    api_key: Option<String>,
    model: String,
    temperature: f64,
    connect_timeout: Duration,
    read_timeout: Duration,
    max_response_bytes: usize,
}

impl OpenAiClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8000/v1`) using chat model `model`.
    /// `api_key`, if given and non-empty, is sent as `Authorization: Bearer KEY`.
    ///
    /// Fails on an `https://` URL ([`LlmError::TlsUnsupported`]) or a URL that is not
    /// `http://host[:port][/path]` ([`LlmError::InvalidUrl`]).
    pub fn new(base_url: &str, api_key: Option<&str>, model: &str) -> Result<Self, LlmError> {
        let base = BaseUrl::parse(base_url)?;
        Ok(OpenAiClient {
            base_url: base_url.trim().trim_end_matches('/').to_string(),
            base,
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_string),
            model: model.to_string(),
            temperature: 0.0,
            connect_timeout: DEFAULT_TIMEOUT,
            read_timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// A client configured from the environment: `OPENAI_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]) and `OPENAI_API_KEY` (optional). Empty values count as unset.
    pub fn from_env(model: &str) -> Result<Self, LlmError> {
        Self::from_lookup(model, |name| std::env::var(name).ok())
    }

    /// Like [`OpenAiClient::from_env`], reading variables through `lookup`.
    fn from_lookup(model: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, LlmError> {
        let base = lookup("OPENAI_BASE_URL")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let key = lookup("OPENAI_API_KEY");
        Self::new(&base, key.as_deref(), model)
    }

    /// Sets the connect timeout and the response deadline (time allowed from sending the
    /// request to the end of the response). Zero durations are raised to 1 ms.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        let floor = Duration::from_millis(1);
        self.connect_timeout = connect.max(floor);
        self.read_timeout = read.max(floor);
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
        let request = ChatRequest {
            model: &self.model,
            messages,
            temperature: self.temperature,
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

    /// POSTs `body` as JSON to `{base}{endpoint}` and parses a 2xx JSON answer.
    fn post_json<T: Serialize>(
        &self,
        endpoint: &str,
        body: &T,
    ) -> Result<(String, Value), LlmError> {
        let path = format!("{}{}", self.base.path, endpoint);
        let url = self.base.url_for(&path);
        let payload = serde_json::to_vec(body).map_err(|e| LlmError::Io {
            url: url.clone(),
            message: format!("cannot encode request: {e}"),
        })?;
        let response = self.send("POST", &path, &url, &payload)?;
        let text = String::from_utf8_lossy(&response.body);
        if !(200..300).contains(&response.status) {
            return Err(LlmError::Http {
                url,
                status: response.status,
                body: one_line_prefix(&text, ERROR_BODY_CHARS),
            });
        }
        let json: Value = serde_json::from_str(&text).map_err(|e| LlmError::MalformedJson {
            url: url.clone(),
            message: one_line_prefix(&e.to_string(), ERROR_BODY_CHARS),
        })?;
        Ok((url, json))
    }

    fn connect(&self, url: &str) -> Result<TcpStream, LlmError> {
        let connect_error = |message: String| LlmError::Connect {
            url: url.to_string(),
            message,
        };
        let addrs: Vec<_> = (self.base.connect_host(), self.base.port)
            .to_socket_addrs()
            .map_err(|e| connect_error(format!("cannot resolve {}: {e}", self.base.host)))?
            .collect();
        let mut last = connect_error(format!("{} resolved to no address", self.base.host));
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => return Ok(stream),
                Err(e) if is_timeout(&e) => {
                    last = LlmError::Timeout {
                        url: url.to_string(),
                        after: self.connect_timeout,
                    }
                }
                Err(e) => last = connect_error(e.to_string()),
            }
        }
        Err(last)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        url: &str,
        payload: &[u8],
    ) -> Result<Response, LlmError> {
        let mut stream = self.connect(url)?;
        let deadline = Instant::now() + self.read_timeout;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: trajdb\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.base.authority(),
            payload.len()
        );
        if let Some(key) = &self.api_key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        head.push_str("\r\n");
        let write_error = |e: std::io::Error| {
            if is_timeout(&e) {
                LlmError::Timeout {
                    url: url.to_string(),
                    after: self.read_timeout,
                }
            } else {
                io_error(url, &e)
            }
        };
        stream
            .set_write_timeout(Some(self.read_timeout))
            .map_err(|e| io_error(url, &e))?;
        stream.write_all(head.as_bytes()).map_err(write_error)?;
        stream.write_all(payload).map_err(write_error)?;
        stream.flush().map_err(write_error)?;
        let mut reader = ResponseReader {
            stream: &mut stream,
            buf: Vec::new(),
            pos: 0,
            deadline,
            timeout: self.read_timeout,
            url,
            eof: false,
        };
        read_response(&mut reader, self.max_response_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

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
            out.push_str(&format!("{:x};ext=1\r\n", piece.len()));
            out.push_str(&String::from_utf8_lossy(piece));
            out.push_str("\r\n");
        }
        out.push_str("0\r\nX-Trailer: yes\r\n\r\n");
        out.into_bytes()
    }

    fn client(base: &str, key: Option<&str>) -> OpenAiClient {
        match OpenAiClient::new(base, key, "test-model") {
            Ok(c) => c.with_timeouts(Duration::from_secs(5), Duration::from_secs(5)),
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
    fn truncated_and_oversized_bodies_are_errors() {
        let truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"a\":".to_vec();
        let big = with_length("200 OK", &format!("\"{}\"", "y".repeat(1000)));
        let big_chunked = chunked("200 OK", &format!("\"{}\"", "y".repeat(1000)), 4);
        let garbage = b"SMTP ready\r\n\r\n".to_vec();
        let (base, _rx) = serve(vec![
            (Duration::ZERO, truncated),
            (Duration::ZERO, big),
            (Duration::ZERO, big_chunked),
            (Duration::ZERO, garbage),
        ]);
        let c = client(&base, None).with_max_response_bytes(256);
        let msg = [ChatMessage::user("hi")];
        assert!(matches!(c.chat(&msg), Err(LlmError::MalformedHttp { .. })));
        assert!(matches!(
            c.chat(&msg),
            Err(LlmError::ResponseTooLarge { limit: 256, .. })
        ));
        assert!(matches!(
            c.chat(&msg),
            Err(LlmError::ResponseTooLarge { limit: 256, .. })
        ));
        assert!(matches!(c.chat(&msg), Err(LlmError::MalformedHttp { .. })));
    }

    #[test]
    fn close_delimited_body_and_interim_100_continue_are_read() {
        let answer = r#"{"choices":[{"message":{"content":"done"}}]}"#;
        let raw = format!(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{answer}"
        );
        let (base, _rx) = serve(vec![(Duration::ZERO, raw.into_bytes())]);
        assert_eq!(
            client(&base, None).chat(&[ChatMessage::user("hi")]),
            Ok("done".to_string())
        );
    }

    #[test]
    fn slow_server_times_out() {
        let answer = with_length("200 OK", r#"{"choices":[]}"#);
        let (base, _rx) = serve(vec![(Duration::from_millis(1500), answer)]);
        let c =
            client(&base, None).with_timeouts(Duration::from_secs(2), Duration::from_millis(200));
        let started = Instant::now();
        let err = c.chat(&[ChatMessage::user("hi")]).err();
        assert!(matches!(err, Some(LlmError::Timeout { .. })), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("timed out after 0.2 s"), "{text}");
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
    fn https_base_url_is_refused_with_a_clear_message() {
        let err = OpenAiClient::new("https://api.openai.com/v1", Some("k"), "m").err();
        assert_eq!(
            err,
            Some(LlmError::TlsUnsupported {
                url: "https://api.openai.com/v1".to_string()
            })
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("TLS (https) is not supported"), "{text}");
        assert!(text.contains("http://"), "{text}");
        let via_env = OpenAiClient::from_lookup("m", |name| {
            (name == "OPENAI_BASE_URL").then(|| "HTTPS://example.com".to_string())
        });
        assert!(matches!(via_env, Err(LlmError::TlsUnsupported { .. })));
    }

    #[test]
    fn base_urls_are_parsed_or_rejected() {
        let parse = |u: &str| BaseUrl::parse(u);
        assert_eq!(
            parse("http://localhost:11434/v1/"),
            Ok(BaseUrl {
                host: "localhost".into(),
                port: 11434,
                path: "/v1".into()
            })
        );
        assert_eq!(
            parse("http://[::1]:8080"),
            Ok(BaseUrl {
                host: "[::1]".into(),
                port: 8080,
                path: String::new()
            })
        );
        assert_eq!(parse("http://example").map(|b| b.port), Ok(80));
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
                matches!(parse(bad), Err(LlmError::InvalidUrl { .. })),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn from_env_defaults_and_reads_variables() {
        let c = OpenAiClient::from_lookup("m", |_| None);
        assert_eq!(c.as_ref().map(|c| c.base_url()), Ok(DEFAULT_BASE_URL));
        assert_eq!(c.map(|c| c.api_key), Ok(None));
        let c = OpenAiClient::from_lookup("m", |name| match name {
            "OPENAI_BASE_URL" => Some("http://localhost:9000/api/".to_string()),
            "OPENAI_API_KEY" => Some("secret".to_string()),
            _ => None,
        });
        let c = match c {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.base_url(), "http://localhost:9000/api");
        assert_eq!(c.base.path, "/api");
        assert_eq!(c.api_key.as_deref(), Some("secret"));
        assert_eq!(c.model(), "m");
        let empty_key =
            OpenAiClient::from_lookup("m", |name| (name == "OPENAI_API_KEY").then(String::new));
        assert_eq!(empty_key.map(|c| c.api_key), Ok(None));
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
