//! The `chexlab` command line: wiring only; the logic lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use chexlab::config::UncertaintyPolicy;
use chexlab::config::{Config, ImageFormat};
use chexlab::data::OnBadRecord;
use chexlab::data::report::SectionChoice;
use chexlab::data::synth::{self, SynthConfig};
use chexlab::labelers::ReportLabeler;
use chexlab::labelers::bert::BertReportLabeler;
use chexlab::labelers::bert::model::HeadKind;
use chexlab::labelers::bert::tokenizer::ReportTokenizer;
use chexlab::labelers::rules::RuleLabeler;
use chexlab::train::{Resume, TrainOptions};

/// chexlab — how much does report-labeler quality change the chest X-ray classifier trained on its labels?
#[derive(Parser)]
#[command(name = "chexlab", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter such as `chexlab=debug`).
    #[arg(long, global = true, default_value = "info", env = "CHEXLAB_LOG")]
    log_level: String,
    /// Print only warnings and errors; no progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Worker threads for parallel stages (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for chexlab::config::ComputeDevice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Self::Cpu,
            DeviceArg::Cuda => Self::Cuda,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum BadRecordArg {
    /// Stop at the first bad record with an error naming the file and line.
    Fail,
    /// Skip bad records, count them and report them at the end.
    Skip,
}

impl From<BadRecordArg> for OnBadRecord {
    fn from(a: BadRecordArg) -> Self {
        match a {
            BadRecordArg::Fail => OnBadRecord::Fail,
            BadRecordArg::Skip => OnBadRecord::Skip,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleArg {
    Auto,
    Concurrent,
    Sequential,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LabelerArg {
    /// The CheXpert-style rule labeler.
    Chexpert,
    /// CheXbert (BERT, four classes per observation).
    Chexbert,
    /// VisualCheXbert (BERT trained toward image labels).
    Visualchexbert,
}

#[derive(Clone, Copy, ValueEnum)]
enum SectionArg {
    Impression,
    Findings,
    All,
}

impl From<SectionArg> for SectionChoice {
    fn from(a: SectionArg) -> Self {
        match a {
            SectionArg::Impression => SectionChoice::Impression,
            SectionArg::Findings => SectionChoice::Findings,
            SectionArg::All => SectionChoice::All,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum UncertainArg {
    /// Uncertain counts as negative.
    Zeros,
    /// Uncertain counts as positive.
    Ones,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Png,
    Jpeg,
    Raw,
}

impl From<FormatArg> for ImageFormat {
    fn from(a: FormatArg) -> Self {
        match a {
            FormatArg::Png => ImageFormat::Png,
            FormatArg::Jpeg => ImageFormat::Jpeg,
            FormatArg::Raw => ImageFormat::Raw,
        }
    }
}

#[derive(Args)]
struct ConfigArgs {
    /// Experiment config (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Override a config key, e.g. `--set optimizer.lr=3e-4` or `--set sources.chexpert.uncertainty=ones`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Subcommand)]
enum LabelAction {
    /// Train a BERT labeler on a dataset's reports as configured in `[bert]` (data-parallel under mpirun/srun),
    /// and score it and the rule labeler on the test split.
    Train {
        /// chexbert or visualchexbert.
        #[arg(long, value_enum)]
        labeler: LabelerArg,
        #[command(flatten)]
        config: ConfigArgs,
        /// Labeler directory to write (default: RUN_DIR/labelers/<labeler>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenizerAction {
    /// Train a WordPiece vocabulary (uncased BERT rules) on a report corpus.
    Train {
        /// Reports CSV in the labeler input format.
        #[arg(long)]
        reports: PathBuf,
        /// Output `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
        /// Vocabulary size.
        #[arg(long, default_value_t = 3000)]
        vocab_size: usize,
        /// Words seen fewer times are left to sub-words.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Build a domain tokenizer for the BERT labelers.
    Tokenizer {
        #[command(subcommand)]
        action: TokenizerAction,
    },
    /// Generate a synthetic chest X-ray world (MIMIC-CXR-JPG layout plus image and report truth).
    Synth {
        /// Output directory (optional with --preview).
        #[arg(long, required_unless_present = "preview")]
        out: Option<PathBuf>,
        /// Number of studies.
        #[arg(long, default_value_t = 3000)]
        studies: u64,
        /// Image size in pixels (16..=512).
        #[arg(long, default_value_t = 64)]
        image_size: u32,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Image encoding.
        #[arg(long, value_enum, default_value = "png")]
        format: FormatArg,
        /// Write a contact sheet of examples per observation to this PNG.
        #[arg(long)]
        preview: Option<PathBuf>,
    },
    /// Label reports with a built-in labeler (chexpert, chexbert, visualchexbert); `label train` trains a BERT one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Label {
        #[command(subcommand)]
        action: Option<LabelAction>,
        /// Labeler.
        #[arg(long, value_enum, default_value = "chexpert")]
        labeler: LabelerArg,
        /// Reports CSV in the labeler input format, or a dataset directory.
        #[arg(long, required = true)]
        reports: Option<PathBuf>,
        /// Output CSV (CheXpert labeler output format; VisualCheXbert writes 0/1 only).
        #[arg(long, required = true)]
        out: Option<PathBuf>,
        /// Report part to read when --reports is a dataset directory.
        #[arg(long, value_enum, default_value = "impression")]
        sections: SectionArg,
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
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// What to do with malformed input rows.
        #[arg(long, value_enum, default_value = "fail")]
        on_bad_record: BadRecordArg,
    },
    /// Compare predicted labels with truth labels: per-class F1, weighted F1, Cohen's kappa.
    EvalLabels {
        /// Predicted labels CSV.
        #[arg(long)]
        pred: PathBuf,
        /// Truth labels CSV.
        #[arg(long)]
        truth: PathBuf,
        /// Write the metrics as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Against binary image truth: how uncertain predictions count.
        #[arg(long, value_enum, default_value = "zeros")]
        uncertain: UncertainArg,
    },
    /// Join images with every label source and write Parquet shards plus index.json.
    Shard {
        /// Experiment config: shards its dataset and sources into RUN_DIR/shards.
        #[arg(long, short, conflicts_with_all = ["dataset", "labels", "out"])]
        config: Option<PathBuf>,
        /// Override a config key.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
        overrides: Vec<String>,
        /// Dataset directory: MIMIC-CXR-JPG layout (real or synthetic) or CheXpert (train.csv, valid.csv).
        #[arg(long, required_unless_present = "config")]
        dataset: Option<PathBuf>,
        /// A label source: NAME=FILE, FILE a labeled CSV with a study_id column (CheXpert study ids look like
        /// patient00001/study1), or NAME=@dataset for the dataset's own labels. Repeat for each source.
        #[arg(long = "labels", value_name = "NAME=FILE")]
        labels: Vec<String>,
        /// Fraction of the training patients held out as the validation split.
        #[arg(long, default_value_t = 0.0)]
        holdout: f64,
        /// Use the dataset's validation split as the test split.
        #[arg(long)]
        valid_as_test: bool,
        /// Output directory.
        #[arg(long, required_unless_present = "config")]
        out: Option<PathBuf>,
        /// Side of the pre-resized images.
        #[arg(long, default_value_t = 64)]
        image_size: u32,
        /// Store the original encoded image bytes instead of pre-resized pixels.
        #[arg(long)]
        encoded: bool,
        /// Target shard size in MB.
        #[arg(long, default_value_t = 256.0)]
        target_mb: f64,
        /// Shuffle seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// What to do with malformed records.
        #[arg(long, value_enum, default_value = "fail")]
        on_bad_record: BadRecordArg,
    },
    /// Train one classifier per label source (data-parallel under mpirun/srun).
    Train {
        #[command(flatten)]
        config: ConfigArgs,
        /// Train only these label sources (default: every source in the config).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Resume: `auto` picks up the newest valid checkpoint of each source; or a checkpoint file.
        #[arg(long)]
        resume: Option<String>,
        /// How sources share the ranks: concurrent groups of ranks, or one source after another on all ranks
        /// (default: the config's distributed.schedule; auto = concurrent when the rank count divides).
        #[arg(long, value_enum)]
        schedule: Option<ScheduleArg>,
    },
    /// Score a split with a run's best checkpoints and write per-image probabilities and AUROC.
    Evaluate {
        /// Run directory (holds config.resolved.toml, shards/ and train/), or the study config (its run_dir).
        #[arg(long)]
        run: PathBuf,
        /// Split to score: train, valid or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Score only these label sources (default: every trained source).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
    },
    /// Write report.md, report.html, results.json and plots for a run.
    Report {
        /// Run directory.
        #[arg(long)]
        run: PathBuf,
        /// The evaluated split.
        #[arg(long, default_value = "test")]
        split: String,
    },
    /// Run the whole study described by a config, skipping completed stages.
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Force re-running from this stage on.
        #[arg(long)]
        from: Option<String>,
    },
    /// Run the embedded demo config on a fresh synthetic world.
    Demo {
        /// Run directory (default: ./chexlab-demo).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a demo config key.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Check the GPU path on every rank (run it under mpirun/srun like training): CUDA driver, GPUs and libnccl
    /// found, the ranks' agreement on NCCL or MPI for the gradient all-reduce, and the NCCL id exchange.
    /// One JSON line per rank.
    #[cfg(feature = "nccl")]
    GpuProbe {
        /// Also bring up the NCCL communicator on the GPUs and check one all-reduce (needs a GPU per rank).
        #[arg(long)]
        all_reduce: bool,
    },
    /// Time one DenseNet training step on a device (same seeded weights and batch on every device) and write the
    /// first step's gradient for comparison: what benches/gpu/check.sh runs. One JSON line.
    BenchStep {
        /// densenet121 or small.
        #[arg(long, default_value = "densenet121")]
        arch: String,
        /// Image side in pixels.
        #[arg(long, default_value_t = 224)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// cpu or cuda.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
        /// f32, or bf16 (training's mixed precision: bf16 convolutions, fp32 BatchNorm, loss and weights).
        #[arg(long, value_enum, default_value = "f32")]
        precision: PrecisionArg,
        /// Write the first step's flat gradient here (little-endian f32).
        #[arg(long)]
        grads_out: Option<PathBuf>,
    },
    /// Show what a dataset, label CSV, reports CSV or run directory contains.
    Inspect {
        /// Path to inspect.
        path: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Verify checksums where the content has them (shard directories).
        #[arg(long)]
        verify: bool,
        /// What to do with malformed records.
        #[arg(long, value_enum, default_value = "fail")]
        on_bad_record: BadRecordArg,
    },
}

fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "warn"
    } else {
        cli.log_level.as_str()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| {
        eprintln!("warning: invalid --log-level '{level}', using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Loads a config, writes the resolved copy into its run directory, and reports where.
/// Runs a (possibly distributed) command body; when it fails on one of several ranks, that rank reports the error
/// and aborts the whole job, so that no other rank waits forever in a collective.
fn distributed(
    comm: &dyn chexlab::dist::Communicator,
    body: impl FnOnce() -> Result<i32>,
) -> Result<i32> {
    match body() {
        Err(e) if comm.size() > 1 => {
            eprintln!("error on rank {} of {}: {e:#}", comm.rank(), comm.size());
            comm.abort(1)
        }
        other => other,
    }
}

/// Ends a distributed command: shuts MPI down (by dropping the communicator), then exits with `code` when it is
/// not 0.
fn finish(comm: Box<dyn chexlab::dist::Communicator>, code: Result<i32>) -> Result<()> {
    drop(comm);
    match code? {
        0 => Ok(()),
        c => std::process::exit(c),
    }
}

/// A flag set by SIGTERM or SIGUSR2 (Slurm's preemption and time-limit warnings): training checkpoints at the next
/// step and exits with [`chexlab::train::EXIT_PREEMPTED`].
fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR2] {
        signal_hook::flag::register(sig, flag.clone()).context("installing a signal handler")?;
    }
    Ok(flag)
}

/// The named sources (checked against the config), or every source of the config.
fn selected_sources(cfg: &Config, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(cfg.sources.iter().map(|s| s.name.clone()).collect());
    }
    for n in names {
        anyhow::ensure!(
            cfg.sources.iter().any(|s| &s.name == n),
            "--source {n}: not a source of the config (it has: {})",
            cfg.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(names.to_vec())
}

/// Prints one source's scores (rank 0).
fn print_scores(source: &str, sc: &chexlab::train::score::SplitScores, out: &std::path::Path) {
    println!(
        "{source}: {} {} images, mean AUROC {} vs '{}' (checkpoint step {}); {}",
        sc.images,
        sc.split,
        sc.mean_auroc
            .map(|m| format!("{m:.4}"))
            .unwrap_or("n/a".into()),
        sc.reference,
        sc.checkpoint_step,
        out.display()
    );
    for (((name, a), (_, pos)), (_, ci)) in sc.auroc.iter().zip(&sc.positives).zip(&sc.auroc_ci) {
        println!(
            "  {name:<28} {:>7}  {:<18} ({pos} positives)",
            a.map(|a| format!("{a:.4}")).unwrap_or("n/a".into()),
            ci.map(|(l, h)| format!("[{l:.3}, {h:.3}]"))
                .unwrap_or_default()
        );
    }
}

/// `run` and `demo`: the staged pipeline, on every rank of an MPI launch.
fn run_pipeline(cfg: Config, from: Option<&str>) -> Result<()> {
    let from = from
        .map(|f| {
            chexlab::pipeline::Stage::parse(f).with_context(|| {
                format!(
                    "--from '{f}': expected one of {}",
                    chexlab::pipeline::Stage::ALL.map(|s| s.name()).join(", ")
                )
            })
        })
        .transpose()?;
    let comm = chexlab::dist::for_training(
        chexlab::dist::from_config(&cfg.distributed)?,
        &cfg.distributed,
    )?;
    let code = distributed(comm.as_ref(), || {
        if comm.rank() == 0 {
            prepare_run(&cfg)?;
        } else {
            chexlab::progress::set_enabled(false);
        }
        let t = std::time::Instant::now();
        let out = chexlab::pipeline::run(&cfg, from, comm.as_ref(), Some(stop_flag()?))?;
        if out.preempted {
            eprintln!("stopped for preemption; run the same command again to resume");
            return Ok(chexlab::train::EXIT_PREEMPTED);
        }
        if comm.rank() == 0 {
            for (stage, secs) in &out.stages {
                match secs {
                    Some(s) => println!("{:<12} {s:>7.1} s", stage.name()),
                    None => println!("{:<12} up to date", stage.name()),
                }
            }
            if let Some(h) = &out.headline {
                println!("\n{h}");
            }
            if let Some(r) = &out.report {
                println!(
                    "report: {} ({:.0} s in all)",
                    r.display(),
                    t.elapsed().as_secs_f64()
                );
            }
        }
        Ok(0)
    });
    finish(comm, code)
}

fn prepare_run(cfg: &Config) -> Result<()> {
    let path = cfg.write_resolved()?;
    tracing::info!(
        "resolved config written to {} (hash {})",
        path.display(),
        &cfg.hash()[..12]
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    chexlab::progress::set_enabled(!cli.quiet);
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the thread pool")?;
    }
    match cli.command {
        Command::Synth {
            out,
            studies,
            image_size,
            seed,
            format,
            preview,
        } => {
            let cfg = SynthConfig {
                studies,
                image_size,
                seed,
                format: format.into(),
                ..SynthConfig::default()
            };
            if let Some(sheet) = preview {
                let legend = synth::preview(&sheet, &cfg, 8)?;
                println!(
                    "contact sheet: {} (rows listed in {})",
                    sheet.display(),
                    legend.display()
                );
            }
            if let Some(out) = out {
                let t = std::time::Instant::now();
                let s = synth::generate(&out, &cfg)?;
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "synthetic world: {} studies ({} train / {} validate / {} test), {} patients, {} images in {} \
                     ({secs:.1} s, {:.0} studies/s)",
                    s.studies,
                    s.train,
                    s.validate,
                    s.test,
                    s.patients,
                    s.images,
                    out.display(),
                    s.studies as f64 / secs.max(1e-9)
                );
            }
            Ok(())
        }
        Command::Tokenizer {
            action:
                TokenizerAction::Train {
                    reports,
                    out,
                    vocab_size,
                    min_frequency,
                },
        } => {
            let mut texts = Vec::new();
            for row in
                chexlab::labelers::format::read_reports(&reports, chexlab::data::OnBadRecord::Fail)?
            {
                texts.push(row?.text);
            }
            let tok = ReportTokenizer::train(
                texts.iter().map(String::as_str),
                vocab_size,
                min_frequency,
            )?;
            tok.save(&out)?;
            println!(
                "trained a {}-token vocabulary on {} reports into {}",
                tok.vocab_size(),
                texts.len(),
                out.display()
            );
            Ok(())
        }
        Command::Label {
            action:
                Some(LabelAction::Train {
                    labeler,
                    config,
                    out,
                }),
            ..
        } => {
            let kind = match labeler {
                LabelerArg::Chexpert => anyhow::bail!(
                    "the rule labeler is not trained; use --labeler chexbert|visualchexbert"
                ),
                LabelerArg::Chexbert => HeadKind::Chexbert,
                LabelerArg::Visualchexbert => HeadKind::Visualchexbert,
            };
            let cfg = Config::load(&config.config, &config.overrides)?;
            let out = out.unwrap_or_else(|| cfg.run_dir.join("labelers").join(kind.name()));
            let comm = chexlab::dist::from_config(&cfg.distributed)?;
            let code = distributed(comm.as_ref(), || {
                if comm.rank() != 0 {
                    chexlab::progress::set_enabled(false);
                }
                let r = chexlab::labelers::bert::pipeline::train_labeler(
                    &cfg,
                    kind,
                    &out,
                    comm.as_ref(),
                )?;
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
            });
            finish(comm, code)
        }
        Command::Label {
            action: None,
            labeler,
            reports,
            out,
            sections,
            reports_root,
            lexicon,
            model,
            tokenizer,
            batch_size,
            device,
            on_bad_record,
        } => {
            let (reports, out) = (reports.expect("required"), out.expect("required"));
            let labeler: Box<dyn ReportLabeler> = match labeler {
                LabelerArg::Chexpert => Box::new(match &lexicon {
                    Some(path) => RuleLabeler::with_lexicon_file(path)?,
                    None => RuleLabeler::default(),
                }),
                LabelerArg::Chexbert | LabelerArg::Visualchexbert => {
                    let model = model
                        .context("--model: a trained labeler directory or a checkpoint file")?;
                    let mut l = BertReportLabeler::load(&model, tokenizer.as_deref())?
                        .on_device(chexlab::dist::compute_device(device.into(), 0)?);
                    let want = if labeler == LabelerArg::Chexbert {
                        HeadKind::Chexbert
                    } else {
                        HeadKind::Visualchexbert
                    };
                    anyhow::ensure!(
                        l.meta.kind == want,
                        "{} is a {:?} model, not {want:?}",
                        model.display(),
                        l.meta.kind
                    );
                    l.batch_size = batch_size;
                    Box::new(l)
                }
            };
            let rules = labeler.as_ref();
            let t = std::time::Instant::now();
            let run = if reports.is_dir() {
                chexlab::labelers::label_dataset(
                    rules,
                    &reports,
                    reports_root.as_deref(),
                    sections.into(),
                    &out,
                    on_bad_record.into(),
                )?
            } else {
                chexlab::labelers::label_csv(rules, &reports, &out, on_bad_record.into())?
            };
            let secs = t.elapsed().as_secs_f64();
            println!(
                "labelled {} reports into {} ({secs:.2} s, {:.0} reports/s)",
                run.reports,
                out.display(),
                run.reports as f64 / secs.max(1e-9)
            );
            if rules.truncated() > 0 {
                println!(
                    "{} report(s) were longer than the model's maximum and were truncated",
                    rules.truncated()
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
        Command::EvalLabels {
            pred,
            truth,
            out,
            uncertain,
        } => {
            let policy = match uncertain {
                UncertainArg::Zeros => UncertaintyPolicy::Zeros,
                UncertainArg::Ones => UncertaintyPolicy::Ones,
            };
            let m = chexlab::labelers::metrics::evaluate(&pred, &truth, policy)?;
            print!("{m}");
            if let Some(out) = out {
                chexlab::io::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
            }
            Ok(())
        }
        Command::Shard {
            config,
            overrides,
            dataset,
            labels,
            holdout,
            valid_as_test,
            out,
            image_size,
            encoded,
            target_mb,
            seed,
            on_bad_record,
        } => {
            let (spec, out) = match config {
                Some(path) => {
                    let cfg = Config::load(&path, &overrides)?;
                    (
                        chexlab::shard::writer::spec_from_config(&cfg)?,
                        cfg.run_dir.join("shards"),
                    )
                }
                None => {
                    let sources = labels
                        .iter()
                        .map(|l| {
                            l.split_once('=')
                                .map(|(n, f)| {
                                    let input = match f {
                                        "@dataset" => LabelInput::Dataset,
                                        f => LabelInput::Csv(PathBuf::from(f)),
                                    };
                                    (n.to_string(), input)
                                })
                                .with_context(|| format!("--labels '{l}': expected NAME=FILE"))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    use chexlab::shard::writer::{LabelInput, SplitPlan};
                    let spec = chexlab::shard::ShardSpec {
                        dataset: dataset.expect("required by clap"),
                        sources,
                        target_mb,
                        pre_resize: !encoded,
                        image_size,
                        seed,
                        on_bad_record: on_bad_record.into(),
                        splits: SplitPlan {
                            holdout_fraction: holdout,
                            valid_as_test,
                        },
                    };
                    (spec, out.expect("required by clap"))
                }
            };
            let t = std::time::Instant::now();
            let index = chexlab::shard::write_shards(&spec, &out)?;
            let rows: u64 = index.splits.values().sum();
            println!(
                "{} shards, {rows} images ({}) with sources {} in {} ({:.1} s)",
                index.shards.len(),
                index
                    .splits
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                index.sources.join(", "),
                out.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Train {
            config,
            sources,
            resume,
            schedule,
        } => {
            let mut cfg = Config::load(&config.config, &config.overrides)?;
            if let Some(s) = schedule {
                use chexlab::config::SourceSchedule;
                cfg.distributed.schedule = match s {
                    ScheduleArg::Auto => SourceSchedule::Auto,
                    ScheduleArg::Concurrent => SourceSchedule::Concurrent,
                    ScheduleArg::Sequential => SourceSchedule::Sequential,
                };
            }
            let comm = chexlab::dist::for_training(
                chexlab::dist::from_config(&cfg.distributed)?,
                &cfg.distributed,
            )?;
            let code = distributed(comm.as_ref(), || {
                if comm.rank() == 0 {
                    prepare_run(&cfg)?;
                } else {
                    chexlab::progress::set_enabled(false);
                }
                let shards = chexlab::shard::ShardSet::open(&cfg.run_dir.join("shards"))?;
                let opts = TrainOptions {
                    resume: match resume.as_deref() {
                        None => Resume::Fresh,
                        Some("auto") => Resume::Auto,
                        Some(path) => Resume::From(PathBuf::from(path)),
                    },
                    threads: cfg.distributed.compute_threads,
                    device: cfg.distributed.device,
                    stop: Some(stop_flag()?),
                };
                let names = selected_sources(&cfg, &sources)?;
                let runs =
                    chexlab::train::train_sources(&cfg, &names, &shards, &opts, comm.as_ref())?;
                let mut preempted = false;
                for run in runs.iter().filter(|r| r.group_rank == 0) {
                    let sum = &run.summary;
                    preempted |= sum.preempted;
                    println!(
                        "{}: {} steps on {} rank(s), {} images in {:.0} s ({:.1} img/s); best valid mean AUROC {}{}",
                        run.source,
                        sum.steps,
                        sum.ranks,
                        sum.images_seen,
                        sum.seconds,
                        sum.images_per_s,
                        sum.best
                            .map(|(m, step)| format!("{m:.4} at step {step}"))
                            .unwrap_or("n/a".into()),
                        if sum.preempted {
                            " — stopped by signal, resume with --resume auto"
                        } else {
                            ""
                        }
                    );
                }
                if preempted || runs.iter().any(|r| r.summary.preempted) {
                    return Ok(chexlab::train::EXIT_PREEMPTED);
                }
                Ok(0)
            });
            finish(comm, code)
        }
        Command::Evaluate {
            run,
            split,
            sources,
        } => {
            let (cfg, run) = if run.is_file() {
                let cfg = Config::load(&run, &[])?;
                let dir = cfg.run_dir.clone();
                (cfg, dir)
            } else {
                (
                    Config::load(&run.join(chexlab::config::RESOLVED_NAME), &[])?,
                    run,
                )
            };
            let split = chexlab::data::Split::parse(&split)
                .with_context(|| format!("--split '{split}': expected train, valid or test"))?;
            let comm = chexlab::dist::from_config(&cfg.distributed)?;
            let code = distributed(comm.as_ref(), || {
                if comm.rank() != 0 {
                    chexlab::progress::set_enabled(false);
                }
                let names = selected_sources(&cfg, &sources)?;
                let scores = chexlab::train::score::evaluate_run(
                    &cfg,
                    &run,
                    split,
                    &names,
                    !sources.is_empty(),
                    comm.as_ref(),
                )?;
                for (source, sc) in &scores {
                    print_scores(source, sc, &run.join("eval").join(source));
                }
                if comm.rank() == 0 {
                    println!("per-source AUROC: {}", run.join("results.json").display());
                }
                Ok(0)
            });
            finish(comm, code)
        }
        Command::Report { run, split } => {
            let split = chexlab::data::Split::parse(&split)
                .with_context(|| format!("--split '{split}': expected train, valid or test"))?;
            let r = chexlab::eval::report::write_report(&run, split)?;
            println!("{}", r.headline);
            println!(
                "report: {} (and {}; {} plot files in {})",
                r.markdown.display(),
                r.html.display(),
                r.plots.len(),
                run.join("plots").display()
            );
            Ok(())
        }
        Command::Run { config, from } => {
            let cfg = Config::load(&config.config, &config.overrides)?;
            run_pipeline(cfg, from.as_deref())
        }
        Command::Demo { out, mut overrides } => {
            if let Some(out) = out {
                overrides.insert(0, format!("run_dir={}", toml_string(&out)));
                overrides.insert(
                    1,
                    format!("dataset.root={}", toml_string(&out.join("world"))),
                );
            }
            run_pipeline(Config::demo(&overrides)?, None)
        }
        #[cfg(feature = "nccl")]
        Command::GpuProbe { all_reduce } => {
            let comm = chexlab::dist::from_env()?;
            let report = chexlab::dist::nccl::probe_report(comm.as_ref())?;
            println!("{}", serde_json::to_string(&report)?);
            if all_reduce {
                let checked = chexlab::dist::nccl::check_all_reduce(comm)?;
                println!("{}", serde_json::to_string(&checked)?);
            }
            Ok(())
        }
        Command::BenchStep {
            arch,
            size,
            batch,
            steps,
            warmup,
            seed,
            device,
            precision,
            grads_out,
        } => {
            use chexlab::config::Precision;
            use chexlab::train::bench::{StepBench, bench_step};
            let spec = StepBench {
                arch,
                size,
                batch,
                steps,
                warmup,
                seed,
                device: device.into(),
                precision: match precision {
                    PrecisionArg::F32 => Precision::F32,
                    PrecisionArg::Bf16 => Precision::Bf16,
                },
            };
            let result = bench_step(&spec, grads_out.as_deref())?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Command::Inspect {
            path,
            json,
            verify,
            on_bad_record,
        } => {
            if path.join(chexlab::shard::INDEX).is_file() {
                let set = chexlab::shard::ShardSet::open(&path)?;
                if verify {
                    set.verify()?;
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&set.index)?);
                } else {
                    print!("{}", chexlab::inspect::shard_summary(&set, verify));
                }
                return Ok(());
            }
            let found = chexlab::inspect::inspect(&path, on_bad_record.into())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print!("{found}");
            }
            Ok(())
        }
    }
}

/// A path as a TOML string literal.
fn toml_string(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
