//! Embedders turn text into keys. Real models are plug-ins behind [`Embedder`]; the built-in
//! [`HashEmbedder`] needs no model: it hashes words, word pairs and character trigrams into a
//! fixed number of signed buckets and L2-normalises the result. A text with no letter or
//! digit has no features: [`HashEmbedder::embed`] refuses it ([`Error::NothingToEmbed`])
//! rather than invent a vector that would score 1.0 against every other such text.

use crate::error::{Error, Result};
use crate::format::record::EmbedderId;

/// Something that turns text into a vector of fixed dimensions.
pub trait Embedder: Send + Sync {
    /// Name, version and dimensions; recorded in the key spaces it fills.
    fn id(&self) -> EmbedderId;
    /// The vector for `text`: `id().dims` finite values.
    fn embed(&self, text: &str) -> Result<Vec<f32>>;
    /// The vectors for `texts`, in order. The default calls [`Embedder::embed`] per text;
    /// embedders that batch (a remote model) override it.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        texts.iter().map(|t| self.embed(t)).collect()
    }
}

/// Feature-hashing embedder over lower-cased words, word bigrams and character trigrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashEmbedder {
    dims: u32,
}

/// Name the hash embedder records.
pub const HASH_EMBEDDER_NAME: &str = "trajdb-hash";
/// Version the hash embedder records; bump on any change to its output.
pub const HASH_EMBEDDER_VERSION: &str = "1";

impl HashEmbedder {
    /// An embedder of `dims` dimensions (1..=65536).
    pub fn new(dims: u32) -> Result<Self> {
        if dims == 0 || dims > 65_536 {
            return Err(Error::invalid(
                "embedder dims",
                format!("must be 1..=65536, got {dims}"),
            ));
        }
        Ok(HashEmbedder { dims })
    }

    /// Whether `text` has features to embed: at least one letter or digit (words are runs
    /// of them). Empty text and text of only spaces, punctuation or emoji has none.
    pub fn has_features(text: &str) -> bool {
        text.chars().any(char::is_alphanumeric)
    }
}

impl Default for HashEmbedder {
    /// 256 dimensions.
    fn default() -> Self {
        HashEmbedder { dims: 256 }
    }
}

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final mix so nearby inputs spread over buckets.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Embedder for HashEmbedder {
    fn id(&self) -> EmbedderId {
        EmbedderId {
            name: HASH_EMBEDDER_NAME.into(),
            version: HASH_EMBEDDER_VERSION.into(),
            dims: self.dims,
        }
    }

    fn embed(&self, text: &str) -> Result<Vec<f32>> {
        if !Self::has_features(text) {
            return Err(Error::NothingToEmbed {
                text: text.chars().take(40).collect(),
            });
        }
        let dims = usize::try_from(self.dims).unwrap_or(0);
        // (hash, weight) of every feature.
        let mut features: Vec<(u64, f32)> = Vec::new();
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for w in &words {
            features.push((fnv1a(w.as_bytes(), 1), 1.0));
            let chars: Vec<char> = format!("#{w}#").chars().collect();
            for tri in chars.windows(3) {
                let s: String = tri.iter().collect();
                features.push((fnv1a(s.as_bytes(), 3), 0.5));
            }
        }
        for pair in words.windows(2) {
            features.push((fnv1a(format!("{} {}", pair[0], pair[1]).as_bytes(), 2), 0.7));
        }
        let fill = |signed: bool| {
            let mut v = vec![0f32; dims];
            for &(h, weight) in &features {
                let bucket = usize::try_from(h % u64::from(self.dims)).unwrap_or(0);
                let sign = if signed && (h >> 63) == 1 { -1.0 } else { 1.0 };
                v[bucket] += sign * weight;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            (v, norm)
        };
        let (mut v, mut norm) = fill(true);
        if norm == 0.0 {
            // The signed features cancelled out in every bucket (a short word whose three
            // features share one bucket can): the same buckets, unsigned, which cannot.
            (v, norm) = fill(false);
        }
        if norm == 0.0 {
            return Err(Error::NothingToEmbed {
                text: text.chars().take(40).collect(),
            });
        }
        for x in &mut v {
            *x /= norm;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::Metric;
    use crate::index::kernels::reference;

    #[test]
    fn hash_embedding_is_unit_length_and_deterministic() {
        let e = HashEmbedder::new(128).expect("dims");
        let a = e.embed("Goal: create steam").expect("embed");
        let b = e.embed("Goal: create steam").expect("embed");
        assert_eq!(a, b);
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }

    /// Issue 9 item 13: empty, emoji-only and punctuation-only text all got one fixed vector
    /// that scored 1.0 against each other. They are refused, by a typed error.
    #[test]
    fn text_without_features_is_refused_not_given_a_shared_vector() {
        let e = HashEmbedder::new(16).expect("dims");
        for text in ["", "   ", "🙂🎉", "?!... ---", "\t\n"] {
            assert!(!HashEmbedder::has_features(text), "{text:?}");
            match e.embed(text) {
                Err(Error::NothingToEmbed { .. }) => {}
                other => panic!("{text:?}: expected NothingToEmbed, got {other:?}"),
            }
        }
        for text in ["a", "7", "ok 🙂", "é"] {
            assert!(e.embed(text).is_ok(), "{text:?}");
        }
        // Every text with a letter or digit gets a vector, even where its signed features
        // cancel out (short words at 1 dimension often do): what an import checks holds.
        let one = HashEmbedder::new(1).expect("dims");
        for a in b'a'..=b'z' {
            for b in b'a'..=b'z' {
                let w = String::from_utf8(vec![a, b]).expect("ascii");
                let v = one.embed(&w).expect("a word has features");
                assert!((v[0].abs() - 1.0).abs() < 1e-6, "{w}: {v:?}");
            }
        }
    }

    #[test]
    fn similar_texts_score_higher_than_unrelated_ones() {
        let e = HashEmbedder::default();
        let q = e
            .embed("create cyborg from human and metal")
            .expect("embed");
        let near = e
            .embed("create a cyborg using metal and a human")
            .expect("embed");
        let far = e.embed("bake bread in the oven").expect("embed");
        assert!(reference(Metric::Cosine, &q, &near) > reference(Metric::Cosine, &q, &far) + 0.2);
    }
}
