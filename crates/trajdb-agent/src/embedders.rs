//! Choosing an embedder by name, as the command line spells it: `hash` (the built-in
//! feature-hashing embedder, no model) or `openai:MODEL` (an OpenAI-compatible
//! `/v1/embeddings` server: `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `SSL_CERT_FILE`).

use std::time::Duration;

use trajdb::{Embedder, HashEmbedder};

use crate::openai::{OpenAiClient, OpenAiEmbedder, DEFAULT_RETRIES, DEFAULT_TIMEOUT};
use crate::{AgentError, AgentResult};

/// Which embedder to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderSpec {
    /// The built-in hash embedder ([`HashEmbedder`]).
    Hash,
    /// An OpenAI-compatible embeddings endpoint with this model.
    OpenAi(String),
}

impl EmbedderSpec {
    /// Parses `hash` or `openai:MODEL`; `at` names the option in the error.
    pub fn parse(text: &str, at: &str) -> AgentResult<EmbedderSpec> {
        match text.trim() {
            "hash" => Ok(EmbedderSpec::Hash),
            other => match other.strip_prefix("openai:") {
                Some(model) if !model.trim().is_empty() => {
                    Ok(EmbedderSpec::OpenAi(model.trim().to_string()))
                }
                Some(_) => Err(AgentError::invalid(
                    at,
                    "openai: needs a model name, e.g. openai:text-embedding-3-small",
                )),
                None => Err(AgentError::invalid(
                    at,
                    format!("unknown embedder {other:?}; expected hash or openai:MODEL"),
                )),
            },
        }
    }

    /// Makes the embedder: `dims` for the hash embedder; for `openai:MODEL` a client from
    /// the environment with this time limit and retry count, and one probe request that
    /// learns the dimensions (so an unreachable server fails here, before any write).
    pub fn build(
        &self,
        dims: u32,
        timeout: Option<Duration>,
        retries: Option<u32>,
    ) -> AgentResult<Box<dyn Embedder>> {
        match self {
            EmbedderSpec::Hash => Ok(Box::new(HashEmbedder::new(dims)?)),
            EmbedderSpec::OpenAi(model) => {
                let client = OpenAiClient::from_env(model)?
                    .with_timeout(timeout.unwrap_or(DEFAULT_TIMEOUT))
                    .with_retries(retries.unwrap_or(DEFAULT_RETRIES));
                Ok(Box::new(OpenAiEmbedder::connect(client, model)?))
            }
        }
    }
}

/// Checks an LLM request time limit given in seconds.
pub fn check_timeout(seconds: f64, at: &str) -> AgentResult<Duration> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(AgentError::invalid(
            at,
            format!("must be more than 0 and at most 86400 seconds, got {seconds}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_names_parse_or_give_one_clear_error() {
        assert_eq!(
            EmbedderSpec::parse("hash", "--embedder").ok(),
            Some(EmbedderSpec::Hash)
        );
        assert_eq!(
            EmbedderSpec::parse("openai:text-embedding-3-small", "--embedder").ok(),
            Some(EmbedderSpec::OpenAi("text-embedding-3-small".into()))
        );
        let err = EmbedderSpec::parse("minilm", "--embedder")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("--embedder: unknown embedder \"minilm\"; expected hash or openai:MODEL")
        );
        assert!(EmbedderSpec::parse("openai:", "--embedder").is_err());
    }

    #[test]
    fn timeouts_must_be_positive_and_finite() {
        assert_eq!(
            check_timeout(1.5, "--llm-timeout").ok(),
            Some(Duration::from_millis(1500))
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(check_timeout(bad, "--llm-timeout").is_err(), "{bad}");
        }
    }
}
