//! Data-parallel training under a real `mpirun -np 2` (feature `mpi`; Open MPI must be installed): both ranks end
//! with identical weights; a killed rank ends the job with an error in bounded time and `--resume auto` then
//! finishes; a stopped rank is named by the collective watchdog of the other; SIGUSR2 (Slurm's preemption
//! warning, forwarded by mpirun) checkpoints and exits for requeue; a rank-0 stage outlasting the collective timeout
//! completes, and a stopped rank 0 is named while it works alone; a resume with another rank count is refused.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chexlab::train::checkpoint;

mod common;
use common::study;

fn mpirun(config: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_chexlab"))
        .args(["--quiet", "train", "--config"])
        .arg(config)
        .args(extra)
        // Where rank 0 says that the job stopped for preemption (what the sbatch scripts requeue on).
        .env("CHEXLAB_REQUEUE_MARKER", marker(config))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn marker(config: &Path) -> PathBuf {
    config.with_file_name("requeue.json")
}

fn summary(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("train/truth/summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn wait_for_checkpoint(dir: &Path, child: &mut Child) {
    let t = Instant::now();
    while checkpoint::list(dir).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before its first checkpoint"
        );
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > limit {
            child.kill().ok();
            panic!("the job did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a 1,500-step 2-rank training that checkpoints every 20 steps and returns once its first checkpoint is
/// written: the config, the checkpoint directory and the running mpirun. `extra` is appended to the config.
fn long_job_with(dir: &Path, extra: &str, stderr: Stdio) -> (PathBuf, PathBuf, Child) {
    let cfg = study(
        dir,
        &format!("max_steps = 1500\ncheckpoint_every = 20\nvalid_every = 2000\n{extra}"),
    );
    let ckpts = dir.join("run/train/truth/checkpoints");
    let mut job = mpirun(&cfg, &[]).stderr(stderr).spawn().unwrap();
    wait_for_checkpoint(&ckpts, &mut job);
    (cfg, ckpts, job)
}

fn long_job(dir: &Path) -> (PathBuf, PathBuf, Child) {
    long_job_with(dir, "", Stdio::inherit())
}

/// The MPI rank and pid of each rank process of the `chexlab --quiet <command>` job started with `cfg` (mpirun
/// itself excluded).
fn rank_pids(command: &str, cfg: &Path, job: &Child) -> Vec<(usize, String)> {
    let ranks = Command::new("pgrep")
        .args([
            "-f",
            &format!("chexlab --quiet {command} --config {}", cfg.display()),
        ])
        .output()
        .unwrap();
    let mut pids: Vec<(usize, String)> = String::from_utf8_lossy(&ranks.stdout)
        .split_whitespace()
        .filter(|p| *p != job.id().to_string())
        .map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            let rank = env
                .split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"OMPI_COMM_WORLD_RANK="))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or_else(|| panic!("process {pid} has no OMPI_COMM_WORLD_RANK"));
            (rank, pid.to_string())
        })
        .collect();
    pids.sort();
    assert_eq!(pids.len(), 2, "rank pids: {pids:?}");
    pids
}

#[test]
fn two_ranks_end_with_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(tmp.path(), "epochs = 2\nvalid_every = 5");
    let out = mpirun(&cfg, &[]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let s = summary(&tmp.path().join("run"));
    assert_eq!(s["ranks"], 2);
    // 215 train images: 107 per rank, 13 batches of 8 per epoch.
    assert_eq!(s["steps"], 26);
    let h = s["rank_state_sha256"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0], h[1], "ranks ended with different weights");
    assert!(tmp.path().join("run/train/truth/best.ckpt").is_file());
}

#[test]
fn killed_rank_fails_fast_and_resume_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, _, mut job) = long_job(tmp.path());
    // Kill one rank (not mpirun) hard.
    let pids = rank_pids("train", &cfg, &job);
    Command::new("kill")
        .args(["-9", &pids[1].1])
        .status()
        .unwrap();
    let status = wait_bounded(&mut job, Duration::from_secs(30));
    assert!(!status.success(), "a job that lost a rank must fail");
    // Resume from the newest valid checkpoint and finish.
    let out = mpirun(&cfg, &["--resume", "auto"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&tmp.path().join("run"));
    assert_eq!(s["steps"], 1500);
    let h = s["rank_state_sha256"].as_array().unwrap();
    assert_eq!(h[0], h[1]);
}

#[test]
fn a_stopped_rank_is_named_by_the_watchdog() {
    for stopped in [1, 0] {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, _, mut job) = long_job_with(
            tmp.path(),
            // Long enough past the 2.5 s after which a rank that arrived and went quiet counts as stopped.
            "[distributed]\ncollective_timeout_s = 6",
            Stdio::piped(),
        );
        let mut stderr = job.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut s).ok();
            s
        });
        // A rank that is alive but never arrives: nothing fails, so only the watchdog can end the job.
        let pid = rank_pids("train", &cfg, &job)[stopped].1.clone();
        Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        let status = wait_bounded(&mut job, Duration::from_secs(60));
        Command::new("kill").args(["-KILL", &pid]).status().ok();
        let log = log.join().unwrap();
        assert!(!status.success(), "{log}");
        let other = 1 - stopped;
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("error on rank {other} of 2")))
            .unwrap_or_else(|| panic!("no error from rank {other}:\n{log}"));
        assert!(line.contains("did not complete within"), "{line}");
        eprintln!("rank {stopped} stopped; rank {other} says: {line}");
        // Stopped before the collective ("last at #…") or inside it ("arrived, then silent").
        assert!(
            line.contains(&format!("1 rank holding it up: rank {stopped} (")),
            "{line}"
        );
    }
}

#[test]
fn sigusr2_checkpoints_and_exits_for_requeue() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, ckpts, mut job) = long_job(tmp.path());
    // mpirun forwards SIGUSR2 to every rank.
    Command::new("kill")
        .args(["-USR2", &job.id().to_string()])
        .status()
        .unwrap();
    let status = wait_bounded(&mut job, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(chexlab::train::EXIT_PREEMPTED),
        "{status:?}"
    );
    let (last, _) = *checkpoint::list(&ckpts).last().unwrap();
    assert!(last < 1500, "stopped at step {last}");
    // Rank 0 left the requeue marker, naming the command that stopped.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(marker(&cfg)).unwrap()).unwrap();
    assert_eq!(m["exit_code"], chexlab::train::EXIT_PREEMPTED, "{m}");
    assert!(
        m["stopped"].as_str().unwrap().contains("train --config"),
        "{m}"
    );
    std::fs::remove_file(marker(&cfg)).unwrap();
    let out = mpirun(&cfg, &["--resume", "auto"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summary(&tmp.path().join("run"))["steps"], 1500);
    // A run that finishes leaves none.
    assert!(!marker(&cfg).exists());
}

#[test]
fn two_ranks_with_batch_b_match_one_process_with_batch_2b() {
    use burn::tensor::Device;
    use chexlab::config::Config;
    use chexlab::shard::ShardSet;
    use chexlab::train::load_model;

    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(tmp.path(), "max_steps = 6\nvalid_every = 3");
    // Frozen BatchNorm statistics and `zeros` make the mean of two ranks' gradients the big batch's gradient.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("init_features = 8", "init_features = 8\nfreeze_bn = true")
        .replace(
            "kind = \"truth\"",
            "kind = \"truth\"\nuncertainty = \"zeros\"",
        );
    std::fs::write(&cfg, text).unwrap();
    let run = tmp.path().join("run");

    let one = Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args(["--quiet", "train", "--config"])
        .arg(&cfg)
        .args(["--set", "schedule.batch_size=8"])
        .output()
        .unwrap();
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    std::fs::rename(run.join("train/truth"), run.join("one")).unwrap();
    let two = mpirun(&cfg, &["--set", "schedule.batch_size=4"])
        .output()
        .unwrap();
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );

    let shards = ShardSet::open(&run.join("shards")).unwrap();
    let weights = |dir: &Path, batch: &str| -> Vec<f32> {
        let c = Config::load(&cfg, &[format!("schedule.batch_size={batch}")]).unwrap();
        let s = c
            .train_settings(&chexlab::run_dir::ReplicateId::new("truth", 1), &shards)
            .unwrap();
        let last = checkpoint::list(&dir.join("checkpoints"))
            .last()
            .unwrap()
            .1
            .clone();
        chexlab::model::state_values(&load_model(&last, &s, &Device::flex()).unwrap())
    };
    let a = weights(&run.join("one"), "8");
    let b = weights(&run.join("train/truth"), "4");
    common::assert_close(&a, &b, 1e-4);
}

#[test]
fn reduced_demo_pipeline_runs_on_two_ranks() {
    // Every stage under `mpirun -np 2`: BERT labeler training, the teacher, the four DenseNets (two groups of
    // one rank, two sources each) and the gathered evaluation use both ranks; the other stages run on rank 0.
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "dataset.studies=240",
        "dataset.image_size=32",
        "model.image_size=32",
        "schedule.epochs=1",
        "bert.hidden=32",
        "bert.intermediate=64",
        "bert.layers=1",
        "bert.epochs=1",
        "bert.finetune_epochs=1",
        "evaluation.bootstrap=50",
    ];
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_chexlab"))
        .args(["demo", "--out", "d"])
        .current_dir(tmp.path())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    for s in sets {
        c.args(["--set", s]);
    }
    let o = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(text.contains("| **mean** |"), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("d/results.json")).unwrap())
            .unwrap();
    assert_eq!(results["sources"].as_object().unwrap().len(), 6);
    // 4 sources on 2 ranks: two groups of one rank, each training two sources in turn.
    for source in ["chexpert", "chexbert", "visualchexbert", "truth"] {
        let s = summary_of(&tmp.path().join("d"), source);
        assert_eq!(s["ranks"], 1, "{source}: {s}");
    }
}

/// `dir/synth.toml`: a study on a synthetic world of `studies` studies at 16 px, with a 1 s collective timeout
/// (rank 1 gives up on a collective after 3 s).
fn synth_study(dir: &Path, studies: u64) -> PathBuf {
    let text = format!(
        r#"seed = 5
run_dir = "{dir}/run"
[dataset]
kind = "synthetic"
root = "{dir}/world"
studies = {studies}
image_size = 16
[[sources]]
name = "truth"
kind = "truth"
[model]
arch = "small"
image_size = 16
[distributed]
collective_timeout_s = 1
"#,
        dir = dir.display()
    );
    let path = dir.join("synth.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `mpirun -np 2 chexlab --quiet run --config CFG --to synth`: the synth stage only, which rank 0 runs alone.
fn mpirun_synth(cfg: &Path) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", "2", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_chexlab"))
        .args(["--quiet", "run", "--config"])
        .arg(cfg)
        .args(["--to", "synth"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

#[test]
fn a_rank_0_stage_longer_than_the_collective_timeout_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synth_study(tmp.path(), 20_000);
    let out = mpirun_synth(&cfg).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("run/stages/synth.json")).unwrap())
            .unwrap();
    // The test's premise: rank 1 waited longer than it may wait in any collective (1 s + 2 s).
    let seconds = marker["seconds"].as_f64().unwrap();
    assert!(
        seconds > 3.0,
        "the synth stage took only {seconds:.1} s: raise the study count so that it outlasts the deadline"
    );
    eprintln!("rank 0 worked alone for {seconds:.1} s under a 1 s collective timeout");
}

#[test]
fn a_stopped_rank_0_is_named_while_it_works_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synth_study(tmp.path(), 200_000);
    let mut job = mpirun_synth(&cfg).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = job.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    // Rank 0 is writing the world once its first images are there.
    let t = Instant::now();
    while !tmp.path().join("world/files").exists() {
        assert!(job.try_wait().unwrap().is_none(), "ended before the world");
        assert!(t.elapsed() < Duration::from_secs(60), "no world after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rank_pids("run", &cfg, &job)[0].1.clone();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let stopped = Instant::now();
    let status = wait_bounded(&mut job, Duration::from_secs(60));
    let took = stopped.elapsed();
    Command::new("kill").args(["-KILL", &pid]).status().ok();
    let log = log.join().unwrap();
    assert!(!status.success(), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("error on rank 1 of 2"))
        .unwrap_or_else(|| panic!("no error from rank 1:\n{log}"));
    assert!(
        line.contains(
            "rank 0 has been silent for 3 s while it worked alone on the synthetic world"
        ),
        "{line}"
    );
    eprintln!("rank 0 stopped; after {took:?} rank 1 says: {line}");
}

/// Trains `cfg` to its end on `ranks` ranks (1: without mpirun), with `extra` arguments; returns the output.
fn train_on(ranks: usize, cfg: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = if ranks == 1 {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chexlab"));
        c.args(["--quiet", "train", "--config"])
            .arg(cfg)
            .args(extra);
        c
    } else {
        mpirun(cfg, extra)
    };
    c.output().unwrap()
}

#[test]
fn a_resume_with_another_rank_count_is_refused_both_ways() {
    for (first, then) in [(1, 2), (2, 1)] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = study(
            tmp.path(),
            "max_steps = 12\ncheckpoint_every = 4\nvalid_every = 100",
        );
        let out = train_on(first, &cfg, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ckpts = tmp.path().join("run/train/truth/checkpoints");
        let before: Vec<_> = checkpoint::list(&ckpts)
            .iter()
            .map(|(_, p)| std::fs::read(p).unwrap())
            .collect();
        let out = train_on(then, &cfg, &["--resume", "auto"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "resumed on {then} rank(s): {log}");
        let (a, b) = (
            format!(
                "written by a run of {first} rank{}",
                if first == 1 { "" } else { "s" }
            ),
            format!(
                "this run is {then} rank{}",
                if then == 1 { "" } else { "s" }
            ),
        );
        assert!(log.contains(&a) && log.contains(&b), "{log}");
        assert!(log.contains(&format!("resume with {first} rank")), "{log}");
        let after: Vec<_> = checkpoint::list(&ckpts)
            .iter()
            .map(|(_, p)| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after, "a refused resume changed the checkpoints");
    }
}

fn summary_of(run: &Path, dir_name: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(run.join("train").join(dir_name).join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn two_sources_by_two_replicates_share_two_ranks_concurrently_or_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::replicate_study(tmp.path());
    let run = tmp.path().join("run");
    let dirs = ["truth", "report", "truth.r2", "report.r2"];
    // Auto: 4 runs on 2 ranks make two groups of one rank, each training two runs in turn.
    let out = train_on(2, &cfg, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let auto: Vec<serde_json::Value> = dirs.iter().map(|d| summary_of(&run, d)).collect();
    for (d, s) in dirs.iter().zip(&auto) {
        assert_eq!(s["ranks"], 1, "{d}: {s}");
        assert_eq!(
            s["replicate"].as_u64().unwrap_or(1),
            if d.ends_with(".r2") { 2 } else { 1 }
        );
    }
    // Replicates differ in their seed: the same source, other weights.
    assert_ne!(auto[0]["rank_state_sha256"], auto[2]["rank_state_sha256"]);
    // The gathered evaluation on both ranks: each source's mean over its two replicates, and each replicate.
    let mut ev = Command::new("mpirun");
    ev.args(["-np", "2", "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_chexlab"))
        .args(["--quiet", "evaluate", "--run"])
        .arg(&cfg)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let o = ev.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    for source in ["truth", "report"] {
        assert_eq!(results["sources"][source]["replicates"], 2, "{results}");
        let reps = results["replicates"][source].as_array().unwrap();
        assert_eq!(reps.len(), 2);
        let mean: f64 = reps
            .iter()
            .map(|r| r["mean_auroc"].as_f64().unwrap())
            .sum::<f64>()
            / 2.0;
        let got = results["sources"][source]["mean_auroc"].as_f64().unwrap();
        assert!((got - mean).abs() < 1e-9, "{source}: {got} vs {mean}");
    }
    assert!(!results["effects"].as_array().unwrap().is_empty());

    // Sequential: each run on both ranks, one after another; the ranks stay in step, and a run trained on two
    // ranks is not the one trained on one (the global batch doubles).
    std::fs::remove_dir_all(run.join("train")).unwrap();
    let out = train_on(2, &cfg, &["--schedule", "sequential"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for d in dirs {
        let s = summary_of(&run, d);
        assert_eq!(s["ranks"], 2, "{d}: {s}");
        let h = s["rank_state_sha256"].as_array().unwrap();
        assert_eq!(h[0], h[1], "{d}: ranks ended with different weights");
    }
    // One replicate alone, as a job array's task trains it.
    std::fs::remove_dir_all(run.join("train")).unwrap();
    let out = train_on(1, &cfg, &["--replicate", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        run.join("train/truth.r2/best.ckpt").is_file()
            && run.join("train/report.r2/best.ckpt").is_file()
    );
    assert!(!run.join("train/truth").exists());
    // Trained alone on one rank, replicate 2 is the replicate 2 the auto schedule trained on a group of one.
    assert_eq!(
        summary_of(&run, "truth.r2")["rank_state_sha256"],
        auto[2]["rank_state_sha256"]
    );
    let out = train_on(1, &cfg, &["--replicate", "3"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && log.contains("replicates 1..=2"),
        "{log}"
    );
}
