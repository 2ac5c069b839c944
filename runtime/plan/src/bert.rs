//! The BERT parameter schema: names and shapes of a `BertForSequenceClassification` in Hugging
//! Face names, the one list the compiler's graphs and the runtime's loaders share.

/// The sizes that fix a BERT's parameter shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BertShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
}

impl BertShape {
    /// The (name, shape) list of a `BertForSequenceClassification` in Hugging Face names and
    /// order: the one list the compiler's graphs and the runtime's loaders share. `pooler`
    /// includes `bert.pooler.dense`, `classifier = Some(num_labels)` the classifier.
    pub fn param_specs(
        &self,
        pooler: bool,
        classifier: Option<usize>,
    ) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        let mut p = |name: String, shape: Vec<usize>| v.push((name, shape));
        let e = "bert.embeddings";
        p(
            format!("{e}.word_embeddings.weight"),
            vec![self.vocab_size, h],
        );
        p(
            format!("{e}.position_embeddings.weight"),
            vec![self.max_position_embeddings, h],
        );
        p(
            format!("{e}.token_type_embeddings.weight"),
            vec![self.type_vocab_size, h],
        );
        p(format!("{e}.LayerNorm.weight"), vec![h]);
        p(format!("{e}.LayerNorm.bias"), vec![h]);
        for l in 0..self.num_layers {
            let pre = format!("bert.encoder.layer.{l}");
            for qkv in ["query", "key", "value"] {
                p(format!("{pre}.attention.self.{qkv}.weight"), vec![h, h]);
                p(format!("{pre}.attention.self.{qkv}.bias"), vec![h]);
            }
            p(format!("{pre}.attention.output.dense.weight"), vec![h, h]);
            p(format!("{pre}.attention.output.dense.bias"), vec![h]);
            p(format!("{pre}.attention.output.LayerNorm.weight"), vec![h]);
            p(format!("{pre}.attention.output.LayerNorm.bias"), vec![h]);
            p(format!("{pre}.intermediate.dense.weight"), vec![i, h]);
            p(format!("{pre}.intermediate.dense.bias"), vec![i]);
            p(format!("{pre}.output.dense.weight"), vec![h, i]);
            p(format!("{pre}.output.dense.bias"), vec![h]);
            p(format!("{pre}.output.LayerNorm.weight"), vec![h]);
            p(format!("{pre}.output.LayerNorm.bias"), vec![h]);
        }
        if pooler {
            p("bert.pooler.dense.weight".into(), vec![h, h]);
            p("bert.pooler.dense.bias".into(), vec![h]);
        }
        if let Some(n) = classifier {
            p("classifier.weight".into(), vec![n, h]);
            p("classifier.bias".into(), vec![n]);
        }
        v
    }
}

/// Every `config.json` field tbc resolves: what a trainer trains and exports.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedBertConfig {
    pub shape: BertShape,
    pub num_attention_heads: usize,
    /// transformers' activation name ("gelu", "gelu_new", …).
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    /// Label names in id order.
    pub labels: Vec<String>,
}

impl ResolvedBertConfig {
    /// The one `config.json` writer: `base` (the file as written, or `{}`) with every resolved
    /// field made explicit and `id2label`/`label2id` from the labels; `base`'s other fields are
    /// kept, so a config says exactly what was trained.
    pub fn write_over(&self, base: &serde_json::Value) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let mut o = base.as_object().cloned().unwrap_or_default();
        let s = &self.shape;
        let id2label: Map<String, Value> = (self.labels.iter().enumerate())
            .map(|(i, l)| (i.to_string(), json!(l)))
            .collect();
        let label2id: Map<String, Value> = (self.labels.iter().enumerate())
            .map(|(i, l)| (l.clone(), json!(i)))
            .collect();
        for (k, v) in [
            ("model_type", json!("bert")),
            ("vocab_size", json!(s.vocab_size)),
            ("hidden_size", json!(s.hidden_size)),
            ("num_hidden_layers", json!(s.num_layers)),
            ("num_attention_heads", json!(self.num_attention_heads)),
            ("intermediate_size", json!(s.intermediate_size)),
            ("max_position_embeddings", json!(s.max_position_embeddings)),
            ("type_vocab_size", json!(s.type_vocab_size)),
            ("hidden_act", json!(self.hidden_act)),
            ("layer_norm_eps", json!(self.layer_norm_eps)),
            ("hidden_dropout_prob", json!(self.hidden_dropout_prob)),
            (
                "attention_probs_dropout_prob",
                json!(self.attention_probs_dropout_prob),
            ),
            ("num_labels", json!(self.labels.len())),
            ("id2label", Value::Object(id2label)),
            ("label2id", Value::Object(label2id)),
        ] {
            o.insert(k.to_string(), v);
        }
        Value::Object(o)
    }
}

/// The label names of a config (parsed JSON) when its `id2label` names exactly the ids
/// `0..n`, else `LABEL_0 … LABEL_{n-1}` (transformers' default names).
pub fn label_names(config: &serde_json::Value, n: usize) -> Vec<String> {
    let named: Option<Vec<String>> = config
        .get("id2label")
        .and_then(|m| m.as_object())
        .filter(|m| m.len() == n)
        .and_then(|m| {
            (0..n)
                .map(|i| Some(m.get(&i.to_string())?.as_str()?.to_string()))
                .collect()
        });
    named.unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect())
}

/// The most encoder layers a config may have (far above any BERT).
pub const MAX_LAYERS: usize = 1024;

/// A Hugging Face BERT `config.json` as written: the one parser of these files. What a file may
/// omit is `None`; the reader fills it (the compiler from the preset, the runtime's loader with
/// transformers' defaults).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct BertConfigFile {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// transformers' default: 512.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// transformers' default: 2.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub layer_norm_eps: Option<f64>,
    #[serde(default)]
    pub hidden_dropout_prob: Option<f64>,
    #[serde(default)]
    pub attention_probs_dropout_prob: Option<f64>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub label2id: Option<std::collections::BTreeMap<String, usize>>,
}

fn default_max_positions() -> usize {
    512
}

fn default_type_vocab() -> usize {
    2
}

impl BertConfigFile {
    /// Parses and checks a config; the error says what is wrong (the caller names the file).
    pub fn from_value(value: &serde_json::Value) -> Result<BertConfigFile, String> {
        let c: BertConfigFile = serde_json::from_value(value.clone())
            .map_err(|e| format!("not a valid BERT config.json: {e}"))?;
        c.check()?;
        Ok(c)
    }

    /// Parses JSON text (see [`BertConfigFile::from_value`]).
    pub fn from_json(text: &str) -> Result<BertConfigFile, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("not a valid BERT config.json: not valid JSON: {e}"))?;
        BertConfigFile::from_value(&value)
    }

    /// The values a BERT can have: model type bert, positive sizes, heads dividing the hidden
    /// size, a positive epsilon, dropout in [0, 1), as many labels as `id2label` names.
    pub fn check(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return Err(format!("model_type is '{t}', expected 'bert'"));
            }
        }
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
            ("num_labels", self.num_labels.unwrap_or(1)),
        ] {
            if v == 0 {
                return Err(format!("{field} must be positive"));
            }
        }
        if self.num_hidden_layers > MAX_LAYERS {
            return Err(format!(
                "num_hidden_layers {} is more than {MAX_LAYERS}",
                self.num_hidden_layers
            ));
        }
        let h = self.hidden_size;
        for (field, rows) in [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
            ("intermediate_size", self.intermediate_size),
            ("hidden_size", h),
            ("num_labels", self.num_labels.unwrap_or(1)),
        ] {
            if crate::checked_numel(&[rows, h]).is_none() {
                return Err(format!(
                    "{field} {rows} with hidden_size {h}: a weight would have more than 2^40 elements"
                ));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if let Some(eps) = self.layer_norm_eps {
            if eps.is_nan() || eps <= 0.0 {
                return Err(format!("layer_norm_eps must be positive, found {eps}"));
            }
        }
        for (field, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if let Some(p) = p {
                if !(0.0..1.0).contains(&p) {
                    return Err(format!("{field} must be in [0, 1), found {p}"));
                }
            }
        }
        if let (Some(n), Some(m)) = (self.num_labels, &self.id2label) {
            if n != m.len() {
                return Err(format!(
                    "num_labels is {n} but id2label has {} entries",
                    m.len()
                ));
            }
        }
        Ok(())
    }

    /// num_labels, or the size of id2label (transformers stores only the latter).
    pub fn labels(&self) -> Option<usize> {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
    }

    /// The sizes that fix the parameter shapes.
    pub fn shape(&self) -> BertShape {
        BertShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "intermediate_size": 16})
    }

    #[test]
    fn omitted_fields_are_none_or_transformers_defaults() {
        let c = BertConfigFile::from_value(&base()).unwrap();
        assert_eq!((c.max_position_embeddings, c.type_vocab_size), (512, 2));
        assert_eq!(
            (c.hidden_act.as_deref(), c.layer_norm_eps, c.labels()),
            (None, None, None)
        );
    }

    #[test]
    fn every_check_says_what_is_wrong() {
        let cases: [(&str, serde_json::Value, &str); 7] = [
            (
                "model_type",
                "roberta".into(),
                "model_type is 'roberta', expected 'bert'",
            ),
            ("hidden_size", 0.into(), "hidden_size must be positive"),
            (
                "num_attention_heads",
                3.into(),
                "hidden_size 8 is not a multiple of num_attention_heads 3",
            ),
            (
                "layer_norm_eps",
                0.0.into(),
                "layer_norm_eps must be positive, found 0",
            ),
            (
                "hidden_dropout_prob",
                1.0.into(),
                "hidden_dropout_prob must be in [0, 1), found 1",
            ),
            (
                "num_labels",
                3.into(),
                "num_labels is 3 but id2label has 2 entries",
            ),
            ("vocab_size", "many".into(), "not a valid BERT config.json"),
        ];
        for (field, value, want) in cases {
            let mut v = base();
            v[field] = value;
            if field == "num_labels" {
                v["id2label"] = serde_json::json!({"0": "a", "1": "b"});
            }
            let e = BertConfigFile::from_value(&v).unwrap_err();
            assert!(e.contains(want), "{field}: {e}");
        }
        assert!(BertConfigFile::from_json("{ not json")
            .unwrap_err()
            .contains("not valid JSON"));
    }

    /// The writer keeps the user's other fields, makes every resolved one explicit, and what
    /// it writes parses back to the same config.
    #[test]
    fn the_writer_round_trips_through_the_parser() {
        let mut user = base();
        user["architectures"] = serde_json::json!(["BertForMaskedLM"]);
        user["id2label"] = serde_json::json!({"0": "neg", "1": "pos"});
        let labels = label_names(&user, 2);
        assert_eq!(labels, ["neg", "pos"]);
        assert_eq!(label_names(&user, 3), ["LABEL_0", "LABEL_1", "LABEL_2"]);
        let c = BertConfigFile::from_value(&base()).unwrap();
        let resolved = ResolvedBertConfig {
            shape: c.shape(),
            num_attention_heads: 2,
            hidden_act: "gelu_new".into(),
            layer_norm_eps: 1e-5,
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.1,
            labels,
        };
        let written = resolved.write_over(&user);
        assert_eq!(written["architectures"], user["architectures"]);
        assert_eq!(written["label2id"], serde_json::json!({"neg": 0, "pos": 1}));
        let back = BertConfigFile::from_value(&written).unwrap();
        assert_eq!(back.shape(), c.shape());
        assert_eq!(back.hidden_act.as_deref(), Some("gelu_new"));
        assert_eq!(back.layer_norm_eps, Some(1e-5));
        assert_eq!(back.hidden_dropout_prob, Some(0.0));
        assert_eq!(back.attention_probs_dropout_prob, Some(0.1));
        assert_eq!(back.labels(), Some(2));
    }
}
