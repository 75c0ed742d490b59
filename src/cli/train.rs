//! `chexlab train`: one classifier per label source, data-parallel under mpirun/srun.

use anyhow::Result;
use clap::Args;

use chexlab::config::SourceSchedule;
use chexlab::train::{EXIT_PREEMPTED, Resume, TrainOptions};

/// Arguments of `chexlab train`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    config: super::ConfigArgs,
    /// Train only these label sources (default: every source in the config).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// Train only this replicate of each source, 1..=study.replicates (default: all of them). A Slurm job array
    /// over the replicates passes its task id here (launch/slurm/train.sbatch).
    #[arg(long, value_name = "K")]
    replicate: Option<u32>,
    /// Resume: `auto` picks up the newest valid checkpoint of each source; or a checkpoint file.
    #[arg(long, value_name = "auto|CHECKPOINT")]
    resume: Option<Resume>,
    /// How the training runs (sources × replicates) share the ranks: concurrent groups of ranks, or one run after
    /// another on all ranks (default: the config's distributed.schedule; auto = as many concurrent groups as
    /// divide both the ranks and the runs, each taking its runs in turn).
    #[arg(long, value_enum)]
    schedule: Option<SourceSchedule>,
}

impl TrainArgs {
    /// Trains on every rank; rank 0 of each source's ranks prints its summary.
    pub fn run(self) -> Result<()> {
        let mut cfg = self.config.load()?;
        if let Some(s) = self.schedule {
            cfg.distributed.schedule = s;
        }
        super::on_training_comm(&cfg, |comm| {
            let shards = chexlab::shard::ShardSet::open(&cfg.run().shards())?;
            let opts = TrainOptions {
                resume: self.resume.unwrap_or(Resume::Fresh),
                threads: cfg.distributed.compute_threads,
                loader_threads: cfg.distributed.loader_threads,
                device: cfg.distributed.device,
                stop: Some(super::stop_flag()),
            };
            let names = super::selected_sources(&cfg, &self.sources)?;
            let jobs = cfg.train_jobs(&cfg.replicates(&names, self.replicate)?, &shards)?;
            let runs = chexlab::train::train_sources(
                &jobs,
                cfg.distributed.schedule,
                &shards,
                &opts,
                comm,
            )?;
            for run in runs.iter().filter(|r| r.group_rank == 0) {
                let sum = &run.summary;
                println!(
                    "{}: {} steps on {} rank(s), {} images in {:.0} s ({:.1} img/s); best valid mean AUROC {}{}",
                    run.id.dir_name(),
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
            Ok(if runs.iter().any(|r| r.summary.preempted) {
                EXIT_PREEMPTED
            } else {
                0
            })
        })
    }
}
