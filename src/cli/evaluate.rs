//! `chexlab evaluate`: score a split with each source's best checkpoint.

use anyhow::Result;
use clap::Args;

use chexlab::data::Split;

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
}

impl EvaluateArgs {
    /// Scores on every rank; rank 0 prints the tables.
    pub fn run(self) -> Result<()> {
        let (cfg, run) = self.run.load()?;
        let comm = chexlab::comm::from_config(&cfg.distributed)?;
        super::on_comm(comm, |comm| {
            let names = super::selected_sources(&cfg, &self.sources)?;
            let scores = chexlab::pipeline::evaluate(
                &cfg,
                &run,
                self.split,
                &names,
                !self.sources.is_empty(),
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
    for (((name, a), (_, pos)), (_, ci)) in sc.auroc.iter().zip(&sc.positives).zip(&sc.auroc_ci) {
        println!(
            "  {name:<28} {:>7}  {:<18} ({pos} positives)",
            a.map(|a| format!("{a:.4}")).unwrap_or("n/a".into()),
            ci.map(|(l, h)| format!("[{l:.3}, {h:.3}]"))
                .unwrap_or_default()
        );
    }
}
