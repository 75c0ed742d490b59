//! `chexlab run` and `chexlab demo`: the staged pipeline, on every rank of an MPI launch.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use chexlab::config::Config;
use chexlab::pipeline::Stage;

/// Arguments of `chexlab run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: super::ConfigArgs,
    /// Force re-running from this stage on.
    #[arg(long, value_enum)]
    from: Option<Stage>,
    /// Stop after this stage (e.g. `--to shard` on one node, then train in a larger job).
    #[arg(long, value_enum)]
    to: Option<Stage>,
}

impl RunArgs {
    /// Runs the study's stages.
    pub fn run(self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to < from
        {
            anyhow::bail!(
                "--to {} comes before --from {}: nothing would run",
                to.name(),
                from.name()
            );
        }
        pipeline(self.config.load()?, self.from, self.to)
    }
}

/// Arguments of `chexlab demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Run directory (default: ./chexlab-demo).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a demo config key.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl DemoArgs {
    /// Runs the embedded demo config.
    pub fn run(mut self) -> Result<()> {
        if let Some(out) = &self.out {
            self.overrides
                .insert(0, format!("run_dir={}", super::toml_string(out)));
            self.overrides.insert(
                1,
                format!("dataset.root={}", super::toml_string(&out.join("world"))),
            );
        }
        pipeline(Config::demo(&self.overrides)?, None, None)
    }
}

/// The staged pipeline on every rank; rank 0 prints the stages' times and the headline.
fn pipeline(cfg: Config, from: Option<Stage>, to: Option<Stage>) -> Result<()> {
    super::on_training_comm(&cfg, |comm| {
        let t = std::time::Instant::now();
        let out = chexlab::pipeline::run(&cfg, from, to, comm, Some(super::stop_flag()))?;
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
    })
}
