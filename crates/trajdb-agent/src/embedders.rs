//! Choosing an embedder by name, as the command line spells it: `hash` (the built-in
//! feature-hashing embedder, no model), `minilm:PATH` (all-MiniLM-L6-v2 on the CPU from the
//! model folder PATH, see [`crate::minilm`]; builds with the cargo feature `minilm` only) or
//! `openai:MODEL` (an OpenAI-compatible `/v1/embeddings` server: `OPENAI_BASE_URL`,
//! `OPENAI_API_KEY`, `SSL_CERT_FILE`).

use std::path::PathBuf;
use std::time::Duration;

use trajdb::{Embedder, HashEmbedder};

use crate::openai::{OpenAiClient, OpenAiEmbedder, DEFAULT_RETRIES, DEFAULT_TIMEOUT};
use crate::{AgentError, AgentResult};

/// Which embedder to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderSpec {
    /// The built-in hash embedder ([`HashEmbedder`]).
    Hash,
    /// all-MiniLM-L6-v2 from this model folder ([`crate::minilm`]).
    MiniLm(PathBuf),
    /// An OpenAI-compatible embeddings endpoint with this model.
    OpenAi(String),
}

impl EmbedderSpec {
    /// Parses `hash`, `minilm:PATH` or `openai:MODEL`; `at` names the option in the error.
    /// `minilm:PATH` is refused by a build without the feature `minilm`, saying so.
    pub fn parse(text: &str, at: &str) -> AgentResult<EmbedderSpec> {
        let text = text.trim();
        if let Some(dir) = text.strip_prefix("minilm:") {
            if !cfg!(feature = "minilm") {
                return Err(AgentError::invalid(
                    at,
                    crate::minilm::MiniLmError::NotBuilt.to_string(),
                ));
            }
            if dir.trim().is_empty() {
                return Err(AgentError::invalid(
                    at,
                    "minilm: needs the model folder, e.g. minilm:/models/all-MiniLM-L6-v2",
                ));
            }
            return Ok(EmbedderSpec::MiniLm(PathBuf::from(dir)));
        }
        match text {
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
                    format!(
                        "unknown embedder {other:?}; expected hash, minilm:PATH or openai:MODEL"
                    ),
                )),
            },
        }
    }

    /// Makes the embedder: `dims` for the hash embedder; for `minilm:PATH` the model loaded
    /// from its folder (a missing or invalid folder fails here, before any write); for
    /// `openai:MODEL` a client from the environment with this time limit and retry count,
    /// and one probe request that learns the dimensions (so an unreachable server fails
    /// here, before any write).
    pub fn build(
        &self,
        dims: u32,
        timeout: Option<Duration>,
        retries: Option<u32>,
    ) -> AgentResult<Box<dyn Embedder>> {
        match self {
            EmbedderSpec::Hash => Ok(Box::new(HashEmbedder::new(dims)?)),
            #[cfg(feature = "minilm")]
            EmbedderSpec::MiniLm(dir) => Ok(Box::new(crate::minilm::MiniLmEmbedder::load(dir)?)),
            #[cfg(not(feature = "minilm"))]
            EmbedderSpec::MiniLm(_) => Err(crate::minilm::MiniLmError::NotBuilt.into()),
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
            Some(
                "--embedder: unknown embedder \"minilm\"; expected hash, minilm:PATH or openai:MODEL"
            )
        );
        assert!(EmbedderSpec::parse("openai:", "--embedder").is_err());
    }

    /// With the feature, `minilm:PATH` names a folder; without it, the spec is refused with
    /// the build flag to use, before anything is done.
    #[test]
    fn minilm_spec_names_a_folder_or_says_how_to_build_it() {
        let parsed = EmbedderSpec::parse("minilm:/models/mini", "--embedder");
        if cfg!(feature = "minilm") {
            assert_eq!(
                parsed.ok(),
                Some(EmbedderSpec::MiniLm(PathBuf::from("/models/mini")))
            );
            let err = EmbedderSpec::parse("minilm:", "--embedder")
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("--embedder: minilm: needs the model folder, e.g. minilm:/models/all-MiniLM-L6-v2")
            );
        } else {
            let err = parsed.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("--embedder: "), "{err}");
            assert!(err.contains("--features minilm"), "{err}");
        }
    }

    /// A folder without the model's files is refused by name, before any model code runs.
    #[test]
    fn minilm_folder_without_files_is_one_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("trajdb-minilm-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = crate::minilm::check_folder(&dir)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err,
            Some(format!(
                "MiniLM model folder {} has no config.json",
                dir.display()
            ))
        );
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        std::fs::write(dir.join("tokenizer.json"), "{}").expect("write");
        let err = crate::minilm::check_folder(&dir)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err,
            Some(format!(
                "MiniLM model folder {} has no weights (model.safetensors or pytorch_model.bin)",
                dir.display()
            ))
        );
        let missing = dir.join("nope");
        let err = crate::minilm::check_folder(&missing)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err,
            Some(format!(
                "MiniLM model folder {} does not exist or is not a directory",
                missing.display()
            ))
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
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
