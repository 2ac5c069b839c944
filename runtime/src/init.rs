//! Seeded, deterministic parameter initialization for a (name, shape) list of Hugging Face BERT
//! parameter names.
//!
//! Every tensor draws from its own ChaCha8 stream, keyed by (seed, name): adding, removing or
//! reordering tensors never changes the values of the others, and the same (seed, name, shape)
//! gives the same bytes on every machine.

use crate::tensor_io::RawTensor;
use plan::ElemType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;

/// Which implementation's initializers to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitRule {
    /// PyTorch TinyBERT (`init_bert_weights`): every Linear and Embedding weight ~ N(0, 0.02)
    /// (not truncated), LayerNorm γ = 1, β = 0, biases 0.
    Paper,
    /// MindSpore TinyBERT: encoder dense weights, the pooler and the classifier ~
    /// TruncatedNormal(0.02) (cut at ±2σ, as MindSpore's `TruncatedNormal`); embeddings and
    /// fit_dense ~ N(0, 0.01) (the default init of `nn.Embedding`/`nn.Dense`, TINYBERT_SPEC
    /// §1.1); LayerNorm γ = 1, β = 0, biases 0.
    MindSpore,
}

/// The role of a parameter, read from its Hugging Face name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    LayerNormWeight,
    LayerNormBias,
    Bias,
    Embedding,
    FitDense,
    /// Any other Linear weight: attention, feed-forward, pooler, classifier.
    Dense,
}

/// How one tensor's elements are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Constant(f32),
    Normal {
        std: f64,
    },
    /// Normal, resampled until within ±2σ.
    TruncatedNormal {
        std: f64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "cannot initialize parameter '{0}': the name does not end in '.weight' or '.bias' \
         (expected a Hugging Face BERT parameter name)"
    )]
    UnknownParam(String),
}

/// Classifies a parameter by its name.
pub fn kind_of(name: &str) -> Result<ParamKind, InitError> {
    let layer_norm = name.contains("LayerNorm.");
    let fit = name.starts_with("fit_dense.");
    Ok(if name.ends_with(".bias") || name.ends_with(".beta") {
        if layer_norm {
            ParamKind::LayerNormBias
        } else {
            ParamKind::Bias
        }
    } else if name.ends_with(".weight") || name.ends_with(".gamma") {
        if layer_norm {
            ParamKind::LayerNormWeight
        } else if fit {
            ParamKind::FitDense
        } else if name.contains("embeddings.") {
            ParamKind::Embedding
        } else {
            ParamKind::Dense
        }
    } else {
        return Err(InitError::UnknownParam(name.to_string()));
    })
}

impl InitRule {
    /// The distribution this rule uses for a parameter of `kind`.
    pub fn dist(self, kind: ParamKind) -> Dist {
        match (self, kind) {
            (_, ParamKind::LayerNormWeight) => Dist::Constant(1.0),
            (_, ParamKind::LayerNormBias | ParamKind::Bias) => Dist::Constant(0.0),
            (InitRule::Paper, _) => Dist::Normal { std: 0.02 },
            (InitRule::MindSpore, ParamKind::Embedding | ParamKind::FitDense) => {
                Dist::Normal { std: 0.01 }
            }
            (InitRule::MindSpore, ParamKind::Dense) => Dist::TruncatedNormal { std: 0.02 },
        }
    }
}

/// 64-bit FNV-1a: a hash whose value is fixed by its definition (std's hasher is not).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The stream for one tensor: seed, the name's hash and its length, and a domain tag.
fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&fnv1a64(name.as_bytes()).to_le_bytes());
    key[16..24].copy_from_slice(&(name.len() as u64).to_le_bytes());
    key[24..32].copy_from_slice(b"tbcinit1");
    ChaCha8Rng::from_seed(key)
}

fn sample(dist: Dist, rng: &mut ChaCha8Rng) -> f32 {
    match dist {
        Dist::Constant(c) => c,
        Dist::Normal { std } => (rng.sample::<f64, _>(StandardNormal) * std) as f32,
        Dist::TruncatedNormal { std } => loop {
            let z: f64 = rng.sample(StandardNormal);
            if z.abs() <= 2.0 {
                break (z * std) as f32;
            }
        },
    }
}

/// One f32 tensor, initialized by `rule` from the stream for (seed, name).
pub fn init_tensor(
    name: &str,
    shape: &[usize],
    rule: InitRule,
    seed: u64,
) -> Result<RawTensor, InitError> {
    let dist = rule.dist(kind_of(name)?);
    let numel: usize = shape.iter().product();
    let mut rng = rng_for(seed, name);
    let bytes = (0..numel)
        .flat_map(|_| sample(dist, &mut rng).to_le_bytes())
        .collect();
    Ok(RawTensor {
        elem: ElemType::F32,
        shape: shape.to_vec(),
        bytes,
    })
}

/// Every parameter of `specs`, by name.
pub fn init_params(
    specs: &[(String, Vec<usize>)],
    rule: InitRule,
    seed: u64,
) -> Result<BTreeMap<String, RawTensor>, InitError> {
    specs
        .iter()
        .map(|(name, shape)| Ok((name.clone(), init_tensor(name, shape, rule, seed)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &RawTensor) -> Vec<f64> {
        t.to_f64()
    }

    fn mean_std(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        (m, var.sqrt())
    }

    #[test]
    fn kinds_follow_hf_names() {
        use ParamKind::*;
        let cases = [
            ("bert.embeddings.word_embeddings.weight", Embedding),
            ("bert.embeddings.LayerNorm.weight", LayerNormWeight),
            ("bert.embeddings.LayerNorm.bias", LayerNormBias),
            ("bert.encoder.layer.3.attention.self.key.weight", Dense),
            ("bert.encoder.layer.3.attention.self.key.bias", Bias),
            (
                "bert.encoder.layer.0.output.LayerNorm.gamma",
                LayerNormWeight,
            ),
            ("bert.pooler.dense.weight", Dense),
            ("classifier.weight", Dense),
            ("fit_dense.weight", FitDense),
            ("fit_dense.bias", Bias),
        ];
        for (n, k) in cases {
            assert_eq!(kind_of(n).unwrap(), k, "{n}");
        }
        let e = kind_of("bert.embeddings.position_ids").unwrap_err();
        assert!(e.to_string().contains("position_ids"));
    }

    #[test]
    fn paper_normal_statistics() {
        let t = init_tensor(
            "bert.encoder.layer.0.intermediate.dense.weight",
            &[300, 200],
            InitRule::Paper,
            7,
        )
        .unwrap();
        let v = values(&t);
        let (m, s) = mean_std(&v);
        // 60,000 samples: the standard error of the mean is 0.02/245 ≈ 8e-5, of the std ≈ 6e-5.
        assert!(m.abs() < 5e-4, "mean {m}");
        assert!((s - 0.02).abs() < 4e-4, "std {s}");
        // Not truncated: about 4.6% of N(0,1) samples lie beyond 2σ.
        let beyond = v.iter().filter(|x| x.abs() > 0.04).count() as f64 / v.len() as f64;
        assert!(
            (beyond - 0.0455).abs() < 0.005,
            "fraction beyond 2σ {beyond}"
        );
    }

    #[test]
    fn mindspore_truncated_and_default_normals() {
        let t = init_tensor("classifier.weight", &[300, 200], InitRule::MindSpore, 7).unwrap();
        let v = values(&t);
        assert!(v.iter().all(|x| x.abs() <= 0.04 + 1e-9));
        let (m, s) = mean_std(&v);
        // Std of N(0,1) truncated to ±2: 0.8796.
        assert!(m.abs() < 5e-4, "mean {m}");
        assert!((s - 0.02 * 0.8796).abs() < 4e-4, "std {s}");

        for name in ["bert.embeddings.word_embeddings.weight", "fit_dense.weight"] {
            let v = values(&init_tensor(name, &[300, 200], InitRule::MindSpore, 7).unwrap());
            let (m, s) = mean_std(&v);
            assert!(m.abs() < 3e-4, "{name} mean {m}");
            assert!((s - 0.01).abs() < 2e-4, "{name} std {s}");
            assert!(
                v.iter().any(|x| x.abs() > 0.02),
                "{name} must not be truncated"
            );
        }
    }

    #[test]
    fn layer_norm_and_biases_are_constant() {
        for rule in [InitRule::Paper, InitRule::MindSpore] {
            let specs = vec![
                ("bert.embeddings.LayerNorm.weight".to_string(), vec![8]),
                ("bert.embeddings.LayerNorm.bias".to_string(), vec![8]),
                ("bert.pooler.dense.bias".to_string(), vec![8]),
                ("fit_dense.bias".to_string(), vec![16]),
            ];
            let p = init_params(&specs, rule, 1).unwrap();
            assert!(values(&p["bert.embeddings.LayerNorm.weight"])
                .iter()
                .all(|&x| x == 1.0));
            for n in [
                "bert.embeddings.LayerNorm.bias",
                "bert.pooler.dense.bias",
                "fit_dense.bias",
            ] {
                assert!(values(&p[n]).iter().all(|&x| x == 0.0), "{n}");
            }
            assert_eq!(p["fit_dense.bias"].shape, vec![16]);
            assert_eq!(p["fit_dense.bias"].elem, ElemType::F32);
        }
    }

    #[test]
    fn deterministic_and_independent_of_other_tensors() {
        let a = (
            "bert.encoder.layer.0.attention.self.query.weight".to_string(),
            vec![16, 16],
        );
        let b = (
            "bert.encoder.layer.0.attention.self.key.weight".to_string(),
            vec![16, 16],
        );
        let one = init_params(std::slice::from_ref(&a), InitRule::Paper, 42).unwrap();
        let two = init_params(&[b.clone(), a.clone()], InitRule::Paper, 42).unwrap();
        assert_eq!(one[&a.0], two[&a.0]);
        // Different names, and different seeds, give different values.
        assert_ne!(two[&a.0].bytes, two[&b.0].bytes);
        let other_seed = init_params(std::slice::from_ref(&a), InitRule::Paper, 43).unwrap();
        assert_ne!(one[&a.0].bytes, other_seed[&a.0].bytes);
        let again = init_params(std::slice::from_ref(&a), InitRule::Paper, 42).unwrap();
        assert_eq!(one, again);
    }

    /// Pinned values: a change of the seed construction, of ChaCha8 or of rand_distr's normal
    /// sampler would silently change every run's initial weights; this shows it.
    #[test]
    fn pinned_first_values() {
        let first = |name: &str, rule| -> Vec<f32> {
            let t = init_tensor(name, &[4], rule, 42).unwrap();
            t.to_f64().iter().map(|&x| x as f32).collect()
        };
        assert_eq!(
            first(
                "bert.encoder.layer.0.attention.self.query.weight",
                InitRule::Paper
            ),
            [0.0053302557, -0.033365633, 0.00846164, 0.004755763]
        );
        assert_eq!(
            first("classifier.weight", InitRule::MindSpore),
            [0.004419745, 0.0022626212, -0.00082942354, 0.008423938]
        );
    }

    #[test]
    fn unknown_names_are_an_error() {
        let specs = vec![("bert.embeddings.position_ids".to_string(), vec![1, 4])];
        assert!(init_params(&specs, InitRule::Paper, 0).is_err());
    }
}
