//! The flags every graph-building command shares: phase, configs, preset, shapes.

use anyhow::{anyhow, Result};
use clap::Args;
use compiler::frontend::config::{builtin, HfBertConfig, ModelConfig};
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::GraphSpec;
use compiler::passes::mixed_precision::Precision;
use compiler::pipeline::Stage;
use ir::{DType, Graph};
use std::path::PathBuf;

/// The model flags of `tbc compile`, `tbc step` and `tbc graph`: configs and preset.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Teacher config.json (Hugging Face BERT); default: built-in BERT-base.
    #[arg(long)]
    pub teacher_config: Option<PathBuf>,
    /// Student config.json; default: the preset's built-in student.
    #[arg(long)]
    pub student_config: Option<PathBuf>,
    /// mindspore | paper
    #[arg(long, default_value = "mindspore")]
    pub preset: String,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// gd | td1 | td2 | eval | ft | eval_teacher
    #[arg(long)]
    pub phase: String,
    #[command(flatten)]
    pub configs: ConfigArgs,
    /// Float type of parameters and activations: f32 | f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// fp32, or mixed precision: fp16 | bf16 GEMMs (the compiler's mixed-precision pass).
    #[arg(long, default_value = "fp32", value_parser = Precision::parse)]
    pub precision: Precision,
}

/// Configs and preset resolved from the flags.
pub struct ResolvedConfigs {
    pub preset: Preset,
    pub teacher: ModelConfig,
    pub student: ModelConfig,
}

/// Configs, preset and phase resolved from the flags.
pub struct Resolved {
    pub phase: Phase,
    pub preset: Preset,
    pub teacher: ModelConfig,
    pub student: ModelConfig,
    pub dtype: DType,
    pub precision: Precision,
}

impl ModelArgs {
    pub fn resolve(&self) -> Result<Resolved> {
        let phase = Phase::parse(&self.phase).map_err(|e| anyhow!(e))?;
        let dtype = match self.dtype.as_str() {
            "f32" => DType::F32,
            "f64" => DType::F64,
            d => return Err(anyhow!("unknown --dtype '{d}' (expected f32 or f64)")),
        };
        let c = self.configs.resolve()?;
        Ok(Resolved {
            phase,
            preset: c.preset,
            teacher: c.teacher,
            student: c.student,
            dtype,
            precision: self.precision,
        })
    }
}

impl ConfigArgs {
    pub fn resolve(&self) -> Result<ResolvedConfigs> {
        let preset = Preset::by_name(&self.preset).map_err(|e| anyhow!(e))?;
        let load = |path: &Option<PathBuf>,
                    builtin_text: &str,
                    builtin_name: &str|
         -> Result<(ModelConfig, bool)> {
            let (hf, name) = match path {
                Some(p) => (HfBertConfig::from_file(p)?, p.display().to_string()),
                None => (
                    HfBertConfig::from_json(builtin_text, builtin_name)?,
                    builtin_name.to_string(),
                ),
            };
            let says_labels = hf.num_labels.is_some() || hf.id2label.is_some();
            Ok((hf.resolve(&preset, &name)?, says_labels))
        };
        let (teacher, _) = load(
            &self.teacher_config,
            builtin::BERT_BASE,
            "built-in teacher config (BERT-base)",
        )?;
        let (mut student, student_says_labels) = load(
            &self.student_config,
            preset.default_student,
            "built-in student config",
        )?;
        // A student config that does not name its labels takes the teacher's task.
        if !student_says_labels {
            student.num_labels = teacher.num_labels;
        }
        Ok(ResolvedConfigs {
            preset,
            teacher,
            student,
        })
    }

    /// The config files as written (the built-in text otherwise), for the manifest.
    pub fn raw_texts(&self, preset: &Preset) -> Result<(String, String)> {
        let raw = |path: &Option<PathBuf>, builtin: &str| -> Result<String> {
            Ok(match path {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| anyhow!("cannot read {}: {e}", p.display()))?,
                None => builtin.to_string(),
            })
        };
        Ok((
            raw(&self.teacher_config, builtin::BERT_BASE)?,
            raw(&self.student_config, preset.default_student)?,
        ))
    }
}

impl Resolved {
    pub fn graph(&self, batch: usize, seq_len: usize) -> Result<Graph> {
        let spec = GraphSpec {
            phase: self.phase,
            teacher: &self.teacher,
            student: &self.student,
            preset: &self.preset,
            batch,
            seq_len,
            dtype: self.dtype,
            precision: self.precision,
        };
        // Through autodiff and the mixed-precision pass, as `tbc compile` builds it.
        Ok(compiler::pipeline::compile(&spec, Stage::Autodiff, &[], |_, _| {})?.graph)
    }
}
