//! The command line: one `Args` struct and one `run` per subcommand (a file each); this module holds the
//! parser, the dispatch and what several commands share (config arguments, running a body on a communicator).

mod bench_step;
mod eval_labels;
mod evaluate;
#[cfg(feature = "nccl")]
mod gpu_probe;
mod inspect;
mod label;
mod report;
mod run;
mod shard;
mod synth;
mod tokenizer;
mod train;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use chexlab::comm::Communicator;
use chexlab::config::Config;
use chexlab::run_dir::RunDir;

/// chexlab — how much does report-labeler quality change the chest X-ray classifier trained on its labels?
#[derive(Parser)]
#[command(name = "chexlab", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter such as `chexlab=debug`).
    #[arg(long, global = true, default_value = "info", env = "CHEXLAB_LOG")]
    log_level: String,
    /// Print only warnings and errors; no progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// When stderr is not a terminal (a batch log), write progress as a plain line this often, in seconds.
    #[arg(
        long,
        global = true,
        default_value_t = 60,
        env = "CHEXLAB_PROGRESS_EVERY"
    )]
    progress_every: u64,
    /// Worker threads for parallel stages (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a domain tokenizer for the BERT labelers.
    Tokenizer(tokenizer::TokenizerArgs),
    /// Generate a synthetic chest X-ray world (MIMIC-CXR-JPG layout plus image and report truth).
    Synth(synth::SynthArgs),
    /// Label reports with a built-in labeler (chexpert, chexbert, visualchexbert); `label train` trains a BERT one.
    Label(label::LabelArgs),
    /// Compare predicted labels with truth labels: per-class F1, weighted F1, Cohen's kappa.
    EvalLabels(eval_labels::EvalLabelsArgs),
    /// Join images with every label source and write Parquet shards plus index.json.
    Shard(shard::ShardArgs),
    /// Train one classifier per label source (data-parallel under mpirun/srun).
    Train(train::TrainArgs),
    /// Score a split with a run's best checkpoints and write per-image probabilities and AUROC.
    Evaluate(evaluate::EvaluateArgs),
    /// Write report.md, report.html, results.json and plots for a run.
    Report(report::ReportArgs),
    /// Run the whole study described by a config, skipping completed stages.
    Run(run::RunArgs),
    /// Run the embedded demo config on a fresh synthetic world.
    Demo(run::DemoArgs),
    /// Check the GPU path on every rank (run it under mpirun/srun like training): CUDA driver, GPUs and libnccl
    /// found, the ranks' agreement on NCCL or MPI for the gradient all-reduce, and the NCCL id exchange.
    /// One JSON line per rank.
    #[cfg(feature = "nccl")]
    GpuProbe(gpu_probe::GpuProbeArgs),
    /// Time one DenseNet training step on a device (same seeded weights and batch on every device) and write the
    /// first step's gradient for comparison: what benches/gpu/check.sh runs. One JSON line.
    BenchStep(bench_step::BenchStepArgs),
    /// Show what a dataset, label CSV, reports CSV or run directory contains.
    Inspect(inspect::InspectArgs),
}

/// Parses the command line, runs the command, and turns an error into a message and a failing exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = install_stop_signals(&cli.command) {
        eprintln!("error: {}", render(&e));
        return std::process::ExitCode::FAILURE;
    }
    init_logging(&cli);
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", render(&e));
            if matches!(
                e.downcast_ref::<chexlab::Error>(),
                Some(chexlab::Error::Stopped(_))
            ) {
                write_requeue_marker(&command_line());
                return std::process::ExitCode::from(chexlab::train::EXIT_PREEMPTED as u8);
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: the library's errors already carry the text of the
/// error they wrap (`path: No such file or directory`), which `{:#}` would print a second time.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn dispatch(cli: Cli) -> Result<()> {
    chexlab::progress::set_enabled(!cli.quiet);
    chexlab::progress::set_line_interval(cli.progress_every);
    if let Some(n) = cli.threads.or_else(|| {
        pool_size_for_this_rank(
            |k| std::env::var(k).ok(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }) {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("configuring the thread pool")?;
    }
    if matches!(
        cli.command,
        Command::Tokenizer(_)
            | Command::Synth(_)
            | Command::Label(_)
            | Command::EvalLabels(_)
            | Command::Shard(_)
            | Command::Report(_)
    ) {
        // Commands whose only state is their output: an interrupt removes their temporary files. Training keeps
        // SIGTERM for checkpoint-and-exit (see stop_flag).
        chexlab::io::remove_temporaries_on_signal()?;
    }
    match cli.command {
        Command::Tokenizer(a) => a.run(),
        Command::Synth(a) => a.run(),
        Command::Label(a) => a.run(),
        Command::EvalLabels(a) => a.run(),
        Command::Shard(a) => a.run(),
        Command::Train(a) => a.run(),
        Command::Evaluate(a) => a.run(),
        Command::Report(a) => a.run(),
        Command::Run(a) => a.run(),
        Command::Demo(a) => a.run(),
        #[cfg(feature = "nccl")]
        Command::GpuProbe(a) => a.run(),
        Command::BenchStep(a) => a.run(),
        Command::Inspect(a) => a.run(),
    }
}

/// The parallel stages' threads for one rank when `--threads` is not given: inside a Slurm step, the task's
/// `SLURM_CPUS_PER_TASK`; under `mpirun`, the node's cores shared by its ranks (`OMPI_COMM_WORLD_LOCAL_SIZE`).
/// Otherwise none: rayon's default, every core, is right for a process alone on its machine. Without this, 32
/// ranks on a 32-core node would each start 32 decode threads.
fn pool_size_for_this_rank(var: impl Fn(&str) -> Option<String>, cores: usize) -> Option<usize> {
    let num = |k: &str| {
        var(k)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    if var("SLURM_STEP_ID").is_some()
        && let Some(n) = num("SLURM_CPUS_PER_TASK")
    {
        return Some(n);
    }
    num("OMPI_COMM_WORLD_LOCAL_SIZE")
        .filter(|&ranks| ranks > 1)
        .map(|ranks| (cores / ranks).max(1))
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

/// `--config FILE` and `--set KEY=VALUE`, for every command that reads a study config.
#[derive(Args)]
pub struct ConfigArgs {
    /// Experiment config (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set optimizer.lr=3e-4` or `--set sources.chexpert.uncertainty=ones`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl ConfigArgs {
    /// The config with its overrides applied.
    pub fn load(&self) -> Result<Config> {
        Ok(Config::load(&self.config, &self.overrides)?)
    }
}

/// A run to read: its directory (`--run`, which holds `config.resolved.toml`) or its study config (`--config`,
/// whose `run_dir` names it), with `--set` overrides.
#[derive(Args)]
pub struct RunDirArgs {
    /// Run directory; a config file here is read as `--config`.
    #[arg(long, conflicts_with = "config")]
    pub run: Option<PathBuf>,
    /// The study config (its run_dir is the run).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override a config key.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl RunDirArgs {
    /// The run's config (overrides applied) and its directory.
    pub fn load(&self) -> Result<(Config, RunDir)> {
        let config_file = match (&self.run, &self.config) {
            (_, Some(c)) => Some(c.clone()),
            (Some(r), None) if r.is_file() => Some(r.clone()),
            _ => None,
        };
        Ok(match config_file {
            Some(file) => {
                let cfg = Config::load(&file, &self.overrides)?;
                let dir = cfg.run();
                (cfg, dir)
            }
            None => {
                let Some(run) = self.run.clone() else {
                    anyhow::bail!("give the run: --run DIR or --config FILE");
                };
                let dir = RunDir::new(run);
                let cfg = Config::load(&dir.resolved_config(), &self.overrides)?;
                (cfg, dir)
            }
        })
    }
}

/// Runs a (possibly distributed) command body on `comm`, with progress bars on rank 0 only. When the body fails
/// on one of several ranks, that rank reports the error and aborts the whole job, so that no other rank waits
/// forever in a collective. Then shuts MPI down (by dropping the communicator) and exits with the body's code
/// when it is not 0.
pub fn on_comm(
    comm: Box<dyn Communicator>,
    body: impl FnOnce(&dyn Communicator) -> Result<i32>,
) -> Result<()> {
    if comm.rank() != 0 {
        chexlab::progress::set_enabled(false);
    }
    let code = match body(comm.as_ref()) {
        Err(e) if comm.size() > 1 => {
            eprintln!(
                "error on rank {} of {}: {}",
                comm.rank(),
                comm.size(),
                render(&e)
            );
            comm.abort(1)
        }
        other => other,
    };
    if matches!(code, Ok(chexlab::train::EXIT_PREEMPTED)) && comm.rank() == 0 {
        write_requeue_marker(&command_line());
    }
    drop(comm);
    match code? {
        0 => Ok(()),
        c => std::process::exit(c),
    }
}

/// Runs `body` on the training communicator of `cfg` (NCCL for the gradients where configured, see
/// [`on_comm`]), after rank 0 has written the resolved config into the run directory.
pub fn on_training_comm(
    cfg: &Config,
    body: impl FnOnce(&dyn Communicator) -> Result<i32>,
) -> Result<()> {
    let comm = chexlab::comm::for_training(
        chexlab::comm::from_config(&cfg.distributed)?,
        &cfg.distributed,
    )?;
    on_comm(comm, |comm| {
        // Rank 0 holds the run for the job; a second job is refused before it changes any file.
        let _lock = if comm.rank() == 0 {
            Some(cfg.run().lock()?)
        } else {
            None
        };
        let previous = if comm.rank() == 0 {
            Some(prepare_run(cfg)?)
        } else {
            None
        };
        let r = body(comm);
        // A command that failed (a refused resume, say) leaves an existing run's config as it found it.
        if r.is_err()
            && let Some(Some(bytes)) = previous
        {
            let _ = chexlab::io::write_atomic(cfg.run().resolved_config(), &bytes);
        }
        r
    })
}

/// Writes the resolved config into its run directory (rank 0), says where, and returns what the file held
/// before (none: it was not there; a new run keeps its config even when its command fails).
fn prepare_run(cfg: &Config) -> Result<Option<Vec<u8>>> {
    let previous = std::fs::read(cfg.run().resolved_config()).ok();
    let path = cfg.write_resolved()?;
    tracing::info!(
        "resolved config written to {} (hash {})",
        path.display(),
        &cfg.hash()[..12]
    );
    Ok(previous)
}

/// Set by SIGUSR2 (Slurm's warning before preemption or the time limit, `--signal=USR2@120`) for every command,
/// and by SIGTERM for the training commands: training checkpoints at the next step and exits with
/// [`chexlab::train::EXIT_PREEMPTED`]; sharding stops before its next shard.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Installs the stop signals first thing, before any long set-up: a SIGUSR2 that arrives while the config is
/// read, MPI starts or a labeler runs must not kill the process (its default action). SIGTERM stays with
/// [`chexlab::io::remove_temporaries_on_signal`] for the commands whose only state is their output.
fn install_stop_signals(command: &Command) -> Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let mut signals = vec![signal_hook::consts::SIGUSR2];
    if matches!(
        command,
        Command::Train(_) | Command::Run(_) | Command::Demo(_)
    ) {
        signals.push(signal_hook::consts::SIGTERM);
    }
    for sig in signals {
        signal_hook::flag::register(sig, flag.clone()).context("installing a signal handler")?;
    }
    Ok(())
}

/// The stop flag (see [`STOP`]).
pub fn stop_flag() -> Arc<AtomicBool> {
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// The environment variable naming the requeue marker: a file that rank 0 writes when the command stopped for
/// preemption (exit code [`chexlab::train::EXIT_PREEMPTED`]). The sbatch scripts requeue the job when it is there,
/// whatever exit code `srun` reports for the step (with `--kill-on-bad-exit` it may report a rank it killed).
pub const REQUEUE_MARKER: &str = "CHEXLAB_REQUEUE_MARKER";

/// This process's arguments, for the requeue marker.
fn command_line() -> String {
    std::env::args().skip(1).collect::<Vec<_>>().join(" ")
}

/// Writes the requeue marker when [`REQUEUE_MARKER`] names one: the command, host, process and time, as JSON.
fn write_requeue_marker(what: &str) {
    let Some(path) = std::env::var_os(REQUEUE_MARKER).filter(|p| !p.is_empty()) else {
        return;
    };
    let path = PathBuf::from(path);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = serde_json::json!({
        "stopped": what,
        "host": chexlab::io::host(),
        "pid": std::process::id(),
        "unix_time": secs,
        "exit_code": chexlab::train::EXIT_PREEMPTED,
    });
    match chexlab::io::write_atomic(&path, format!("{body}\n").as_bytes()) {
        Ok(()) => tracing::info!("requeue marker written to {}", path.display()),
        Err(e) => eprintln!("warning: cannot write the requeue marker: {e}"),
    }
}

/// The named sources (checked against the config), or every source of the config.
pub fn selected_sources(cfg: &Config, names: &[String]) -> Result<Vec<String>> {
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

/// A path as a TOML string literal.
pub fn toml_string(p: &Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_pool_follows_the_slurm_task_then_the_ranks_on_the_node() {
        // Alone: rayon's default.
        assert_eq!(pool_size_for_this_rank(env(&[]), 32), None);
        // A Slurm step's task gets its CPUs, whatever the node has.
        let step = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "8"),
        ];
        assert_eq!(pool_size_for_this_rank(env(&step), 32), Some(4));
        // The batch shell itself (no step) is not a task: the ranks on the node share its cores.
        assert_eq!(pool_size_for_this_rank(env(&step[1..]), 32), Some(4));
        assert_eq!(
            pool_size_for_this_rank(env(&[("OMPI_COMM_WORLD_LOCAL_SIZE", "3")]), 32),
            Some(10)
        );
        assert_eq!(
            pool_size_for_this_rank(env(&[("OMPI_COMM_WORLD_LOCAL_SIZE", "64")]), 32),
            Some(1)
        );
        assert_eq!(
            pool_size_for_this_rank(env(&[("OMPI_COMM_WORLD_LOCAL_SIZE", "1")]), 32),
            None
        );
        // Unreadable values are ignored, not trusted.
        let bad = [("SLURM_STEP_ID", "0"), ("SLURM_CPUS_PER_TASK", "all")];
        assert_eq!(pool_size_for_this_rank(env(&bad), 32), None);
    }
}
