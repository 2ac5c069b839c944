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
