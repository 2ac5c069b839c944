//! The trainer's commands: general distillation, task distillation (phase 1 then phase 2),
//! teacher fine-tuning, evaluation and Hugging Face export — the jobs of the seed's
//! `run_general_distill.py` and `run_task_distill.py` (TINYBERT_SPEC §3–§9).

use super::args::{
    EvalArgs, ExportArgs, FinetuneArgs, GeneralDistillArgs, LoopArgs, TaskDistillArgs,
};
use super::driver::{run_phase, BestModel, PhaseOutcome, PhaseRun};
use super::eval::PlanEvaluator;
use super::log::Logger;
use super::models::{self, ModelSource};
use super::replicas;
use super::run_guard::{refuse_output_over_inputs, RunGuard};
use super::schedule::StepPlan;
use super::session::{trained_prefix, Session};
use super::source::DatasetSource;
use super::state::{Checkpoints, TrainerState};
use super::tokenizer_choice::{self, TokenizerSources};
use crate::device::Backend;
use crate::dist;
use plan::exec::ExecutablePlan;
use plan::manifest::{Manifest, TrainerBundle};
use std::path::{Path, PathBuf};

/// The linked plans and the manifest, and the backend the sessions run on.
pub struct Trainer<'k> {
    pub bundle: &'k TrainerBundle,
    pub backend: Backend<'k>,
}

const BATCH_COLUMNS: [&str; 3] = ["input_ids", "input_mask", "segment_ids"];
const LABELED_COLUMNS: [&str; 4] = ["input_ids", "input_mask", "segment_ids", "label_ids"];

impl<'k> Trainer<'k> {
    fn manifest(&self) -> &Manifest {
        &self.bundle.manifest
    }

    fn plan(&self, name: &str) -> Result<&'k ExecutablePlan, String> {
        self.bundle
            .plans
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                let have: Vec<&str> = self.bundle.plans.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "this trainer was compiled without phase '{name}' (it has: {}); recompile with `tbc compile --phases {}`",
                    have.join(", "),
                    if have.is_empty() { name.to_string() } else { format!("{},{name}", have.join(",")) }
                )
            })
    }

    /// A session for a training phase with teacher, trained parameters and fresh state set.
    fn training_session(
        &self,
        phase: &str,
        teacher: Option<&Path>,
        student: &ModelSource,
        common: &LoopArgs,
    ) -> Result<Session<'k>, String> {
        let seed = common.seed;
        let plan = self.plan(phase)?;
        let mut s = Session::on_device(plan, self.backend.device()).map_err(|e| e.to_string())?;
        let trained = trained_prefix(plan)
            .ok_or_else(|| format!("phase {phase} has no trained parameters"))?;
        let m = self.manifest();
        if trained == "student" {
            let t = teacher.expect("distillation phases have a teacher");
            models::load_required(&mut s, "teacher", t, phase, &m.teacher_config)?;
        }
        models::load_trained(&mut s, trained, student, m, seed)?;
        let info = m
            .phase(phase)
            .ok_or_else(|| format!("the trainer's manifest has no constants for phase {phase}"))?;
        let scale = common
            .loss_scale_value
            .unwrap_or(info.loss_scale.map_or(1.0, |l| l.init));
        for (name, v) in [
            ("state.step", 0.0),
            ("state.cur_iter", 1.0),
            ("state.last_overflow_iter", 0.0),
            ("state.loss_scale", scale),
            ("state.seed", (seed % (1 << 31)) as f64),
        ] {
            s.set_scalar(name, v).map_err(|e| e.to_string())?;
        }
        Ok(s)
    }

    /// Runs one training phase with checkpoints in `ckpt_dir`, resuming if asked.
    #[allow(clippy::too_many_arguments)]
    fn train_phase(
        &self,
        phase: &str,
        mut session: Session<'k>,
        data: &DatasetSource,
        epochs: u64,
        common: &LoopArgs,
        ckpt_dir: &Path,
        evaluator: Option<&mut PlanEvaluator<'k>>,
        best: Option<BestModel>,
        logger: &mut Logger,
    ) -> Result<(Session<'k>, PhaseOutcome), String> {
        let m = self.manifest();
        let info = m.phase(phase).expect("checked by training_session");
        let plan = StepPlan {
            steps_per_epoch: data.steps(),
            epochs,
            sink: common.sink(),
        };
        let trained = trained_prefix(session.plan()).expect("training plan");
        let lead = dist::world().rank() == 0;
        let checkpoints = if lead {
            Checkpoints::new(ckpt_dir, common.save_ckpt_step, common.max_ckpt_num)?
        } else {
            Checkpoints::follower(ckpt_dir, common.save_ckpt_step, common.max_ckpt_num)
        };
        let mut state = TrainerState::new(phase, m, plan.steps_per_epoch);
        if common.resume && lead {
            match checkpoints.newest()? {
                Some(found) => {
                    state = checkpoints.restore(&found, &mut session, trained, &state)?;
                    eprintln!(
                        "resuming {phase} from {} at step {}",
                        found.weights.display(),
                        state.global_step
                    );
                }
                None => eprintln!(
                    "--resume: no checkpoint of {phase} in {}; starting from step 0",
                    ckpt_dir.display()
                ),
            }
        }
        let config = format!("{}\n{plan:?}\n{common:?}", session.plan().to_json());
        let state = replicas::start_together(&mut session, state, &config)?;
        println!("{phase} dataset size: {}", plan.steps_per_epoch);
        println!(
            "{phase} dataset repeatcount: {}",
            match plan.sink {
                Some(n) => plan.epochs.saturating_mul(plan.steps_per_epoch) / n,
                None => plan.epochs,
            }
        );
        let outcome = run_phase(
            &mut session,
            PhaseRun {
                info,
                plan,
                data,
                batch_size: m.batch,
                save_ckpt_step: common.save_ckpt_step,
                checkpoints: &checkpoints,
                lr: common.learning_rate,
                loss_scale_logs: m.loss_scale_logs && info.loss_scale.is_some(),
                trained,
                evaluator: evaluator.map(|e| e as &mut dyn super::driver::Evaluator),
                best,
                overflow_patience: common.overflow_patience,
            },
            state,
            logger,
        )?;
        eprintln!(
            "{phase}: {} steps in {:.1} s, last loss {:.6}",
            outcome.steps, outcome.seconds, outcome.last_loss
        );
        Ok((session, outcome))
    }

    fn open_train_data(
        &self,
        data: &Path,
        schema: Option<&Path>,
        labeled: bool,
        common: &LoopArgs,
    ) -> Result<DatasetSource, String> {
        let cols: &[&str] = if labeled {
            &LABELED_COLUMNS
        } else {
            &BATCH_COLUMNS
        };
        DatasetSource::open(
            data,
            schema,
            cols,
            self.manifest(),
            common.do_shuffle.then_some(common.seed),
            (dist::world().rank(), dist::world().size()),
        )
    }

    /// Whether this process is rank 0 of the data-parallel job (`trainer::job` joined it), the
    /// one that writes checkpoints, logs and evaluates.
    fn join(&self) -> bool {
        let w = dist::world();
        if w.size() > 1 && w.rank() == 0 {
            eprintln!(
                "data parallel: {} ranks × batch {} = global batch {}; rank 0 writes the checkpoints and logs",
                w.size(),
                self.manifest().batch,
                w.size() * self.manifest().batch
            );
        }
        w.rank() == 0
    }

    /// Rank 0's logger, or a quiet one for the other ranks.
    fn logger(&self, lead: bool, common: &LoopArgs) -> Result<Logger, String> {
        if lead {
            Logger::new(Some(&common.metrics_path()))
        } else {
            Ok(Logger::quiet())
        }
    }

    fn evaluator(&self, plan: &str, data: &Path, task: &str) -> Result<PlanEvaluator<'k>, String> {
        let source =
            DatasetSource::open(data, None, &LABELED_COLUMNS, self.manifest(), None, (0, 1))?;
        PlanEvaluator::new(
            self.plan(plan)?,
            &self.backend,
            source,
            task,
            self.manifest(),
        )
    }

    pub fn general_distill(&self, a: &GeneralDistillArgs) -> Result<(), String> {
        let c = &a.common;
        let lead = self.join();
        let ckpt_dir = a.save_ckpt_path.as_deref().map_or(vec![], |d| vec![d]);
        let _guard = lead
            .then(|| RunGuard::start(&c.output_dir, &ckpt_dir))
            .transpose()?;
        let mut inputs = vec![a.load_teacher_ckpt_path.as_path(), a.data_dir.as_path()];
        inputs.extend(c.schema_dir.as_deref());
        refuse_output_over_inputs("--metrics-file", &c.metrics_path(), &inputs)?;
        let mut logger = self.logger(lead, c)?;
        let data = self.open_train_data(&a.data_dir, c.schema_dir.as_deref(), false, c)?;
        warn_data_tokenizer(&a.load_teacher_ckpt_path, &a.data_dir);
        let session =
            self.training_session("gd", Some(&a.load_teacher_ckpt_path), &ModelSource::Init, c)?;
        let dir = a
            .save_ckpt_path
            .clone()
            .unwrap_or_else(|| c.output_dir.join("tinybert_gd_save_ckpt"));
        self.train_phase(
            "gd",
            session,
            &data,
            a.epoch_size,
            c,
            &dir,
            None,
            None,
            &mut logger,
        )?;
        eprintln!("general distillation checkpoints: {}", dir.display());
        Ok(())
    }

    pub fn task_distill(&self, a: &TaskDistillArgs) -> Result<(), String> {
        let c = &a.common;
        let (p1, p2) = match a.td_phase.as_str() {
            "1" => (true, false),
            "2" => (false, true),
            "both" => (true, true),
            other => return Err(format!("--td-phase must be 1, 2 or both, found '{other}'")),
        };
        let td1_dir = c.output_dir.join("tinybert_td_phase1_save_ckpt");
        let td2_dir = c.output_dir.join("tinybert_td_phase2_save_ckpt");
        let best_path = c.output_dir.join("eval_model.safetensors");
        if !a.do_train {
            // Standalone evaluation of the phase-1 (or any) student, as the seed does.
            let ckpt = a
                .load_td1_ckpt_path
                .clone()
                .ok_or("--do-train false evaluates --load-td1-ckpt-path; give one")?;
            let eval = EvalArgs {
                eval_data_dir: a
                    .task
                    .eval_data_dir
                    .clone()
                    .ok_or("--do-eval needs --eval-data-dir")?,
                schema_dir: None,
                load_td1_ckpt_path: Some(ckpt),
                load_teacher_ckpt_path: None,
                task_name: a.task.task_name.clone(),
                dump_logits: None,
            };
            return self.eval(&eval);
        }
        let train_dir = a
            .train_data_dir
            .as_deref()
            .ok_or("task distillation needs --train-data-dir")?;
        let lead = self.join();
        let export_parent: Vec<&Path> =
            a.task.export_hf.iter().filter_map(|d| d.parent()).collect();
        let _guard = lead
            .then(|| RunGuard::start(&c.output_dir, &export_parent))
            .transpose()?;
        let mut inputs = vec![a.load_teacher_ckpt_path.as_path(), train_dir];
        inputs.extend(a.task.eval_data_dir.as_deref());
        inputs.extend(a.load_gd_ckpt_path.as_deref());
        inputs.extend(a.load_td1_ckpt_path.as_deref());
        inputs.extend(a.task.tokenizer.as_deref());
        inputs.extend(a.task.vocab.as_deref());
        inputs.extend(c.schema_dir.as_deref());
        if let Some(dir) = &a.task.export_hf {
            refuse_output_over_inputs("--export-hf", dir, &inputs)?;
        }
        refuse_output_over_inputs("--metrics-file", &c.metrics_path(), &inputs)?;
        let mut logger = self.logger(lead, c)?;
        // A regression student (STS-B) learns from the labels in phase 2.
        let labeled = p2
            && self
                .plan("td2")?
                .inputs
                .iter()
                .any(|s| s.name == "label_ids");
        let data = self.open_train_data(train_dir, c.schema_dir.as_deref(), labeled, c)?;
        warn_data_tokenizer(&a.load_teacher_ckpt_path, train_dir);
        // The dev set and the task are checked before phase 1 spends its time; rank 0
        // evaluates, the others go on to the next step and wait for it there.
        let mut evaluator = match (&a.task.eval_data_dir, p2 && a.do_eval) {
            (Some(d), true) if lead => Some(self.evaluator("eval", d, &a.task.task_name)?),
            (None, true) => {
                return Err("--do-eval true needs --eval-data-dir".into());
            }
            _ => None,
        };
        if p1 {
            let student = match &a.load_gd_ckpt_path {
                Some(p) => ModelSource::Checkpoint {
                    path: p.clone(),
                    from_gd: true,
                },
                None => {
                    eprintln!("warning: no --load-gd-ckpt-path: task distillation starts from a randomly initialized student");
                    ModelSource::Init
                }
            };
            let session =
                self.training_session("td1", Some(&a.load_teacher_ckpt_path), &student, c)?;
            self.train_phase(
                "td1",
                session,
                &data,
                a.td_phase1_epoch_size,
                c,
                &td1_dir,
                None,
                None,
                &mut logger,
            )?;
        }
        if p2 {
            // Phase 2 takes the newest phase-1 checkpoint (the seed sorts by mtime).
            let td1 = match (&a.load_td1_ckpt_path, p1) {
                (Some(p), false) => p.clone(),
                _ => td1_dir.clone(),
            };
            // Phase 1's checkpoint is rank 0's file (and may still be being written when the
            // others get here): they start from any student and take rank 0's by broadcast.
            let student = match lead {
                true => ModelSource::Checkpoint {
                    path: td1,
                    from_gd: false,
                },
                false => ModelSource::Init,
            };
            let session =
                self.training_session("td2", Some(&a.load_teacher_ckpt_path), &student, c)?;
            let eval_log = c.output_dir.join("eval.log");
            let best = evaluator.as_ref().map(|_| BestModel {
                path: &best_path,
                eval_log: &eval_log,
            });
            let (_, outcome) = self.train_phase(
                "td2",
                session,
                &data,
                a.td_phase2_epoch_size,
                c,
                &td2_dir,
                evaluator.as_mut(),
                best,
                &mut logger,
            )?;
            if let Some(best) = outcome.best_metric {
                eprintln!(
                    "best dev {} {best:.6}; best student: {}",
                    evaluator.as_ref().map_or("acc", |e| e.selection()),
                    best_path.display()
                );
                if let Some(dir) = a.task.export_hf.as_ref().filter(|_| lead) {
                    models::export(
                        &best_path,
                        dir,
                        &self.manifest().student_config,
                        &a.task
                            .tokenizer_sources(&a.load_teacher_ckpt_path, train_dir),
                    )?;
                    eprintln!("exported the best student to {}", dir.display());
                }
            }
        }
        Ok(())
    }

    pub fn finetune(&self, a: &FinetuneArgs) -> Result<(), String> {
        let c = &a.common;
        let lead = self.join();
        let export_dir = a
            .task
            .export_hf
            .clone()
            .unwrap_or_else(|| c.output_dir.join("teacher_finetuned"));
        let export_parent: Vec<&Path> = export_dir.parent().into_iter().collect();
        let _guard = lead
            .then(|| RunGuard::start(&c.output_dir, &export_parent))
            .transpose()?;
        let mut inputs = vec![
            a.load_teacher_ckpt_path.as_path(),
            a.train_data_dir.as_path(),
        ];
        inputs.extend(a.task.eval_data_dir.as_deref());
        inputs.extend(a.task.tokenizer.as_deref());
        inputs.extend(a.task.vocab.as_deref());
        inputs.extend(c.schema_dir.as_deref());
        refuse_output_over_inputs("--export-hf", &export_dir, &inputs)?;
        refuse_output_over_inputs("--metrics-file", &c.metrics_path(), &inputs)?;
        let mut logger = self.logger(lead, c)?;
        let data = self.open_train_data(&a.train_data_dir, c.schema_dir.as_deref(), true, c)?;
        warn_data_tokenizer(&a.load_teacher_ckpt_path, &a.train_data_dir);
        let session = self.training_session(
            "ft",
            None,
            &ModelSource::Checkpoint {
                path: a.load_teacher_ckpt_path.clone(),
                from_gd: false,
            },
            c,
        )?;
        let mut evaluator = match &a.task.eval_data_dir {
            Some(d) if lead => Some(self.evaluator("eval_teacher", d, &a.task.task_name)?),
            _ => None,
        };
        let best_path = c.output_dir.join("teacher_best.safetensors");
        let eval_log = c.output_dir.join("eval_teacher.log");
        let best = evaluator.as_ref().map(|_| BestModel {
            path: &best_path,
            eval_log: &eval_log,
        });
        let (session, outcome) = self.train_phase(
            "ft",
            session,
            &data,
            a.epoch_size,
            c,
            &c.output_dir.join("teacher_ft_save_ckpt"),
            evaluator.as_mut(),
            best,
            &mut logger,
        )?;
        if !lead {
            return Ok(());
        }
        let dir = export_dir;
        let tokenizer = a
            .task
            .tokenizer_sources(&a.load_teacher_ckpt_path, &a.train_data_dir);
        let cfg = &self.manifest().teacher_config;
        if outcome.best_metric.is_some() {
            models::export(&best_path, &dir, cfg, &tokenizer)?;
        } else {
            let last = session.inputs_with_prefix("teacher");
            let tmp = c.output_dir.join("teacher_last.safetensors");
            models::save_weights(&tmp, &last)?;
            models::export(&tmp, &dir, cfg, &tokenizer)?;
        }
        eprintln!("fine-tuned teacher: {}", dir.display());
        Ok(())
    }

    pub fn eval(&self, a: &EvalArgs) -> Result<(), String> {
        if let Some(out) = &a.dump_logits {
            let mut inputs = vec![a.eval_data_dir.as_path()];
            inputs.extend(a.load_td1_ckpt_path.as_deref());
            inputs.extend(a.load_teacher_ckpt_path.as_deref());
            inputs.extend(a.schema_dir.as_deref());
            refuse_output_over_inputs("--dump-logits", out, &inputs)?;
        }
        let (plan, source, prefix) = match (&a.load_td1_ckpt_path, &a.load_teacher_ckpt_path) {
            (Some(s), None) => ("eval", s, "student"),
            (None, Some(t)) => ("eval_teacher", t, "teacher"),
            _ => {
                return Err(
                    "give exactly one of --load-td1-ckpt-path (a student) or --load-teacher-ckpt-path (a teacher)"
                        .into(),
                )
            }
        };
        let data = DatasetSource::open(
            &a.eval_data_dir,
            a.schema_dir.as_deref(),
            &LABELED_COLUMNS,
            self.manifest(),
            None,
            (0, 1),
        )?;
        println!("eval dataset size: {}", data.steps());
        println!("eval dataset batch size: {}", self.manifest().batch);
        let mut ev = PlanEvaluator::new(
            self.plan(plan)?,
            &self.backend,
            data,
            &a.task_name,
            self.manifest(),
        )?;
        let compiled = if prefix == "teacher" {
            &self.manifest().teacher_config
        } else {
            &self.manifest().student_config
        };
        let params = models::load_for_eval(ev.session(), prefix, source, compiled)?;
        ev.keep_logits(a.dump_logits.is_some());
        let r = super::driver::Evaluator::evaluate(&mut ev, &params)?;
        let bar = "=".repeat(62);
        println!("{bar}");
        for (k, v) in &r.metrics {
            println!("============== {k} is {v}");
        }
        println!("{bar}");
        if let Some(p) = &a.dump_logits {
            ev.write_logits(p)?;
        }
        Ok(())
    }

    pub fn export(&self, a: &ExportArgs) -> Result<(), String> {
        let mut inputs = vec![a.ckpt.as_path()];
        inputs.extend(a.tokenizer.as_deref());
        inputs.extend(a.vocab.as_deref());
        refuse_output_over_inputs("--output", &a.output, &inputs)?;
        if let Some(parent) = a.output.parent() {
            crate::temp_files::sweep_and_report(&[parent]);
        }
        models::export(
            &a.ckpt,
            &a.output,
            &self.manifest().student_config,
            &TokenizerSources {
                explicit: a.tokenizer.as_deref(),
                vocab: a.vocab.as_deref(),
                ..Default::default()
            },
        )?;
        eprintln!("exported {} to {}", a.ckpt.display(), a.output.display());
        Ok(())
    }
}

/// Says when the training data was tokenized otherwise than the teacher's tokenizer does.
fn warn_data_tokenizer(teacher: &Path, data: &Path) {
    if let Some(w) = tokenizer_choice::data_tokenizer_warning(teacher, data) {
        eprintln!("{w}");
    }
}

/// `dir` if it is a file, else the newest checkpoint in it.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        if let Some(found) = Checkpoints::newest_in(path)? {
            return Ok(found.weights);
        }
        return Err(format!(
            "{}: neither a Hugging Face model directory (config.json + model.safetensors) nor a directory of tbc checkpoints (tiny_bert_*.safetensors)",
            path.display()
        ));
    }
    Err(format!("{}: no such file or directory", path.display()))
}
