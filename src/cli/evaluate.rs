//! `chexlab evaluate`: score a split with each source's best checkpoint, or score models' probability files.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use chexlab::data::Split;
use chexlab::eval::EvaluationConfig;

/// Arguments of `chexlab evaluate`.
#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    run: super::RunDirArgs,
    /// Split to score.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
    /// Score only these label sources (default: every trained source).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Score only this replicate of each source (default: all of them).
    #[arg(long, value_name = "K", conflicts_with = "predictions")]
    replicate: Option<u32>,
    /// Fail when a classifier of the selection has no best.ckpt (the default when --source or --replicate names
    /// them; otherwise one without is skipped with a warning). The gather step of a study trained in several
    /// jobs uses it: no results over an incomplete study.
    #[arg(long, conflicts_with = "predictions")]
    strict: bool,
    /// Instead of a run: a model's probability file, NAME=FILE or FILE (named after its file): an id column
    /// (Study, Path, study_id, id) and one column per observation. Repeat to compare models.
    #[arg(long = "predictions", value_name = "[NAME=]FILE", value_parser = parse_model,
          requires = "truth", conflicts_with_all = ["run", "config"])]
    predictions: Vec<(String, PathBuf)>,
    /// The labels the probability files are scored against (e.g. the CheXpert test set's groundtruth.csv).
    #[arg(long, requires = "predictions")]
    truth: Option<PathBuf>,
    /// Where the probability files' results go (JSON, as a run's results.json).
    #[arg(long, requires = "predictions")]
    out: Option<PathBuf>,
    /// Bootstrap resamples of the intervals and paired tests (probability files).
    #[arg(long, default_value_t = EvaluationConfig::default().bootstrap)]
    bootstrap: u32,
    /// Confidence level of the intervals (probability files).
    #[arg(long, default_value_t = EvaluationConfig::default().ci)]
    ci: f64,
    /// Seed of the bootstrap (probability files).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_model(s: &str) -> std::result::Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        Some(_) => Err(format!("'{s}': expected NAME=FILE or FILE")),
        None => {
            let file = PathBuf::from(s);
            let name = file
                .file_stem()
                .map(|f| f.to_string_lossy().trim_end_matches(".csv").to_string())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| format!("'{s}' names no file"))?;
            Ok((name, file))
        }
    }
}

impl EvaluateArgs {
    /// Scores on every rank; rank 0 prints the tables.
    pub fn run(self) -> Result<()> {
        if !self.predictions.is_empty() {
            return self.score_files();
        }
        let (cfg, run) = self.run.load()?;
        let comm = chexlab::comm::from_config(&cfg.distributed)?;
        super::on_comm(comm, |comm| {
            let names = super::selected_sources(&cfg, &self.sources)?;
            let scores = chexlab::pipeline::evaluate(
                &cfg,
                &run,
                self.split,
                &cfg.replicates(&names, self.replicate)?,
                self.strict || !self.sources.is_empty() || self.replicate.is_some(),
                comm,
            )?;
            for (source, sc) in &scores {
                print_scores(source, sc, &run.eval(source));
            }
            if comm.rank() == 0 {
                println!("per-source AUROC: {}", run.results().display());
            }
            Ok(0)
        })
    }
}

impl EvaluateArgs {
    /// `--predictions … --truth …`: scores the files, prints each model's table and the paired comparisons.
    fn score_files(&self) -> Result<()> {
        let truth = self.truth.as_ref().expect("clap requires --truth");
        let ev = EvaluationConfig {
            bootstrap: self.bootstrap,
            ci: self.ci,
            reference: None,
        };
        if let Some(out) = &self.out {
            let inputs: Vec<&std::path::Path> = self
                .predictions
                .iter()
                .map(|(_, p)| p.as_path())
                .chain([truth.as_path()])
                .collect();
            chexlab::io::refuse_overwrite(out, &inputs)?;
        }
        let results =
            chexlab::eval::external::score_files(&self.predictions, truth, &ev, self.seed)?;
        for (name, sc) in &results.sources {
            println!(
                "{name}: {} studies, mean AUROC {} against {}",
                sc.images,
                sc.mean_auroc
                    .map(|m| format!("{m:.4}"))
                    .unwrap_or("n/a".into()),
                sc.reference
            );
            print_table(sc);
        }
        if !results.comparisons.is_empty() {
            println!(
                "\npaired differences (AUROC a − b, {:.0} % interval, DeLong p, Holm-corrected bootstrap p):",
                ev.ci * 100.0
            );
            for c in &results.comparisons {
                println!(
                    "  {:<16} {:<16} {:<24} {:+.4} [{:+.3}, {:+.3}]  p = {:.4}  p (Holm) = {:.4}",
                    c.a,
                    c.b,
                    c.observation,
                    c.result.diff,
                    c.result.ci.0,
                    c.result.ci.1,
                    c.result.delong.map_or(f64::NAN, |d| d.p),
                    c.p_holm
                );
            }
        }
        if !results.effects.is_empty() {
            println!(
                "\noverall effect (mean AUROC a − b over observations, {:.0} % interval, Holm-corrected p):",
                ev.ci * 100.0
            );
            for e in &results.effects {
                println!(
                    "  {:<16} {:<16} {:+.4} [{:+.3}, {:+.3}]  p = {:.4}",
                    e.a, e.b, e.effect.diff, e.effect.ci.0, e.effect.ci.1, e.p_holm
                );
            }
        }
        if let Some(out) = &self.out {
            results
                .write(out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("results: {}", out.display());
        }
        Ok(())
    }
}

/// Prints one source's scores (rank 0).
fn print_scores(source: &str, sc: &chexlab::eval::results::SplitScores, out: &std::path::Path) {
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
    print_table(sc);
}

/// Prints the AUROC table of `sc`: per observation its AUROC, interval and positives.
fn print_table(sc: &chexlab::eval::results::SplitScores) {
    for (((name, a), (_, pos)), (_, ci)) in sc.auroc.iter().zip(&sc.positives).zip(&sc.auroc_ci) {
        println!(
            "  {name:<28} {:>7}  {:<18} ({pos} positives)",
            a.map(|a| format!("{a:.4}")).unwrap_or("n/a".into()),
            ci.map(|(l, h)| format!("[{l:.3}, {h:.3}]"))
                .unwrap_or_default()
        );
    }
}
