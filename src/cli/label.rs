//! `chexlab label`: label reports with a built-in labeler; `chexlab label train`: train a BERT labeler.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use chexlab::config::ComputeDevice;
use chexlab::config::LabelerKind;
use chexlab::data::OnBadRecord;
use chexlab::data::report::SectionChoice;
use chexlab::labelers::ReportLabeler;
use chexlab::labelers::bert::BertReportLabeler;
use chexlab::labelers::bert::model::HeadKind;
use chexlab::labelers::rules::RuleLabeler;

/// Arguments of `chexlab label`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LabelArgs {
    #[command(subcommand)]
    action: Option<LabelAction>,
    /// Labeler.
    #[arg(long, value_enum, default_value_t = LabelerKind::Chexpert)]
    labeler: LabelerKind,
    /// Reports CSV in the labeler input format, or a dataset directory.
    #[arg(long, required = true)]
    reports: Option<PathBuf>,
    /// Output CSV (CheXpert labeler output format; VisualCheXbert writes 0/1 only).
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Report part to read when --reports is a dataset directory.
    #[arg(long, value_enum, default_value_t = SectionChoice::Impression)]
    sections: SectionChoice,
    /// Where a MIMIC dataset keeps its report files, when not under the dataset directory.
    #[arg(long)]
    reports_root: Option<PathBuf>,
    /// Lexicon file extending the rule labeler's built-in one (or replacing it: first line `!replace`).
    #[arg(long)]
    lexicon: Option<PathBuf>,
    /// BERT labelers: a trained labeler directory, or a published CheXbert / VisualCheXbert checkpoint file.
    #[arg(long)]
    model: Option<PathBuf>,
    /// BERT labelers: tokenizer (`vocab.txt` or `tokenizer.json`) for a checkpoint file, or to replace a
    /// directory's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// BERT labelers: reports per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// BERT labelers: where the model runs (cuda: the first visible GPU).
    #[arg(long, value_enum, default_value_t = ComputeDevice::Cpu)]
    device: ComputeDevice,
    /// What to do with malformed input rows.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Fail)]
    on_bad_record: OnBadRecord,
    /// A report longer than this many bytes is a malformed row (refused, or skipped with --on-bad-record skip).
    #[arg(long, default_value_t = chexlab::labelers::format::DEFAULT_MAX_REPORT_BYTES)]
    max_report_bytes: usize,
}

#[derive(Subcommand)]
enum LabelAction {
    /// Train a BERT labeler on a dataset's reports as configured in `[bert]` (data-parallel under mpirun/srun),
    /// and score it and the rule labeler on the test split.
    Train {
        /// chexbert or visualchexbert.
        #[arg(long, value_enum)]
        labeler: LabelerKind,
        #[command(flatten)]
        config: super::ConfigArgs,
        /// Labeler directory to write (default: RUN_DIR/labelers/<labeler>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

impl LabelArgs {
    /// Labels the reports (or trains a labeler).
    pub fn run(self) -> Result<()> {
        if let Some(LabelAction::Train {
            labeler,
            config,
            out,
        }) = self.action
        {
            return train(labeler, &config, out);
        }
        let (reports, out) = (self.reports.expect("required"), self.out.expect("required"));
        let labeler: Box<dyn ReportLabeler> = match self.labeler {
            LabelerKind::Chexpert => Box::new(match &self.lexicon {
                Some(path) => RuleLabeler::with_lexicon_file(path)?,
                None => RuleLabeler::default(),
            }),
            kind @ (LabelerKind::Chexbert | LabelerKind::Visualchexbert) => {
                let model = self
                    .model
                    .context("--model: a trained labeler directory or a checkpoint file")?;
                let mut l = BertReportLabeler::load(&model, self.tokenizer.as_deref())?
                    .on_device(chexlab::comm::compute_device(self.device, 0)?);
                let want = head_kind(kind)?;
                anyhow::ensure!(
                    l.meta.kind == want,
                    "{} is a {:?} model, not {want:?}",
                    model.display(),
                    l.meta.kind
                );
                l.batch_size = self.batch_size;
                Box::new(l)
            }
        };
        let labeler = labeler.as_ref();
        let t = std::time::Instant::now();
        let run = if reports.is_dir() {
            chexlab::labelers::label_dataset(
                labeler,
                &reports,
                self.reports_root.as_deref(),
                self.sections,
                &out,
                self.on_bad_record,
            )?
        } else {
            chexlab::labelers::label_csv(
                labeler,
                &reports,
                &out,
                self.on_bad_record,
                self.max_report_bytes,
            )?
        };
        let secs = t.elapsed().as_secs_f64();
        println!(
            "labelled {} reports into {} ({secs:.2} s, {:.0} reports/s)",
            run.reports,
            out.display(),
            run.reports as f64 / secs.max(1e-9)
        );
        if labeler.truncated() > 0 {
            println!(
                "{} report(s) were longer than the model's maximum and were truncated",
                labeler.truncated()
            );
        }
        if run.bad.skipped > 0 {
            println!(
                "skipped {} bad record(s), e.g. {}",
                run.bad.skipped,
                run.bad.examples.join("; ")
            );
        }
        Ok(())
    }
}

/// The BERT head set of a labeler; the rule labeler has none.
fn head_kind(kind: LabelerKind) -> Result<HeadKind> {
    Ok(match kind {
        LabelerKind::Chexpert => {
            anyhow::bail!("the rule labeler is not trained; use --labeler chexbert|visualchexbert")
        }
        LabelerKind::Chexbert => HeadKind::Chexbert,
        LabelerKind::Visualchexbert => HeadKind::Visualchexbert,
    })
}

/// `label train`: trains a BERT labeler on every rank and prints its scores on rank 0.
fn train(labeler: LabelerKind, config: &super::ConfigArgs, out: Option<PathBuf>) -> Result<()> {
    let kind = head_kind(labeler)?;
    let cfg = config.load()?;
    let out = out.unwrap_or_else(|| cfg.run().labeler(kind.name()));
    let comm = chexlab::comm::from_config(&cfg.distributed)?;
    super::on_comm(comm, |comm| {
        let r =
            chexlab::labelers::bert::pipeline::train_labeler(&cfg.bert_job(), kind, &out, comm)?;
        if comm.rank() == 0 {
            println!(
                "trained {kind:?} on {} reports ({} expert) in {:.0} s on {} rank(s) into {}",
                r.train_reports,
                r.expert_reports,
                r.seconds,
                comm.size(),
                out.display()
            );
            println!("test split ({} reports):", r.test_reports);
            println!(
                "{:<18} {:>20} {:>24}",
                "labeler", "report weighted F1", "image mean positive F1"
            );
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            for s in &r.scores {
                println!(
                    "{:<18} {:>20} {:>24}",
                    s.labeler,
                    f(s.report_weighted_f1),
                    f(s.image_mean_positive_f1)
                );
            }
        }
        Ok(0)
    })
}
