//! The sbatch scripts on a real single-node Slurm cluster (feature `mpi`). Runs when `CHEXLAB_SLURM=1` says a
//! cluster is up (`launch/local-slurm/start.sh`, as `.ci/run` does); otherwise each test says why it skips.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chexlab::train::checkpoint;

mod common;
use common::study;

/// The cluster, one test at a time: its two CPUs fit one job, and a test's deadlines (first checkpoint, end of
/// job) must not include the queue of the others' jobs.
fn cluster() -> Option<std::sync::MutexGuard<'static, ()>> {
    static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if std::env::var("CHEXLAB_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "skipping: no local Slurm cluster (start launch/local-slurm/start.sh and set CHEXLAB_SLURM=1)"
        );
        return None;
    }
    Some(CLUSTER.lock().unwrap_or_else(|e| e.into_inner()))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("launch/slurm")
        .join(name)
}

fn sbatch(dir: &Path, config: &Path, script_name: &str, wait: bool) -> (bool, String) {
    sbatch_with(dir, config, script_name, wait, &[])
}

/// [`sbatch`] with extra `sbatch` options (`--array`, `--dependency`) and `NAME=value` settings for the script.
fn sbatch_with(
    dir: &Path,
    config: &Path,
    script_name: &str,
    wait: bool,
    options: &[&str],
) -> (bool, String) {
    let (env, options): (Vec<&str>, Vec<&str>) = options
        .iter()
        .partition(|o| !o.starts_with('-') && o.contains('='));
    let mut c = Command::new("sbatch");
    // Submitted from the checkout, as the scripts expect (they find common.sh under the submit directory).
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("--parsable")
        .args(options)
        .arg(format!("--chdir={}", dir.display()))
        .arg(format!(
            "--export=ALL,CONFIG={},CHEXLAB={}{}",
            config.display(),
            env!("CARGO_BIN_EXE_chexlab"),
            env.iter().map(|e| format!(",{e}")).collect::<String>()
        ));
    if wait {
        c.arg("--wait");
    }
    let out = c.arg(script(script_name)).output().unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), id)
}

fn job_state(id: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or("GONE")
        .to_string()
}

fn steps_of(id: &str) -> usize {
    let out = Command::new("squeue")
        .args(["-h", "-s", "-j", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The job's output file, for failure messages.
fn job_log(dir: &Path, prefix: &str, id: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{prefix}-{id}.out"))).unwrap_or_default()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/train/truth/summary.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn train_sbatch_trains_on_two_ranks() {
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(tmp.path(), "epochs = 2\nvalid_every = 5");
    let (ok, id) = sbatch(tmp.path(), &cfg, "train.sbatch", true);
    let log = std::fs::read_to_string(tmp.path().join(format!("chexlab-train-{id}.out")))
        .unwrap_or_default();
    assert!(ok, "job {id} failed:\n{log}");
    let s = summary(tmp.path());
    assert_eq!(
        (s["ranks"].as_u64(), s["steps"].as_u64()),
        (Some(2), Some(26)),
        "{log}"
    );
    let h = s["rank_state_sha256"].as_array().unwrap();
    assert_eq!(h[0], h[1]);
    assert!(log.contains("on 2 ranks"), "{log}");
}

/// Waits for the job's first checkpoint, then sends `scancel ARGS JOB`: what Slurm does before a preemption or
/// the time limit (`--signal=USR2@120`; with `--full`, the batch shell too).
fn preempt_after_first_checkpoint(dir: &Path, prefix: &str, id: &str, scancel: &[&str]) {
    let ckpts = dir.join("run/train/truth/checkpoints");
    let t = Instant::now();
    while checkpoint::list(&ckpts).is_empty() {
        let state = job_state(id);
        assert!(
            !matches!(state.as_str(), "FAILED" | "CANCELLED" | "COMPLETED"),
            "job {id} ended {state}:\n{}",
            job_log(dir, prefix, id)
        );
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s; job {id}: {}",
            job_state(id)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        Command::new("scancel")
            .args(scancel)
            .arg(id)
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until the job has ended and returns its final state, releasing it whenever it was requeued (Slurm
/// holds a requeued job back for a while).
fn wait_releasing_requeues(dir: &Path, prefix: &str, id: &str) -> String {
    let t = Instant::now();
    loop {
        let state = job_state(id);
        // Release the requeued job early, but only once the first run's steps are gone (a step still being torn
        // down would collide with the new run's step of the same id).
        // Slurm 22.05 may still deliver the first run's step signals for a while, and a step of the new run that
        // reuses their step id is then aborted at launch: release after a pause like the hold Slurm would impose.
        if state == "PENDING" && steps_of(id) == 0 {
            std::thread::sleep(Duration::from_secs(10));
            Command::new("scontrol")
                .args(["update", &format!("JobId={id}"), "StartTime=now"])
                // "no longer pending" when it started meanwhile
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
        }
        if matches!(
            state.as_str(),
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "GONE"
        ) {
            return state;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "job {id} still {state} after 300 s:\n{}",
            job_log(dir, prefix, id)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn train_sbatch_signalled_with_its_batch_shell_requeues_and_ends_as_an_uninterrupted_run() {
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(
        tmp.path(),
        "max_steps = 600\ncheckpoint_every = 20\nvalid_every = 2000",
    );
    let (ok, reference) = sbatch(tmp.path(), &cfg, "train.sbatch", true);
    assert!(
        ok,
        "job {reference} failed:\n{}",
        job_log(tmp.path(), "chexlab-train", &reference)
    );
    let uninterrupted = summary(tmp.path());
    std::fs::rename(
        tmp.path().join("run/train"),
        tmp.path().join("run/reference"),
    )
    .unwrap();

    let (ok, id) = sbatch(tmp.path(), &cfg, "train.sbatch", false);
    assert!(ok, "sbatch failed");
    // `--full` signals the batch shell as well as the ranks: the script must pass it on, not die of it.
    preempt_after_first_checkpoint(
        tmp.path(),
        "chexlab-train",
        &id,
        &["--full", "--signal=USR2"],
    );
    let state = wait_releasing_requeues(tmp.path(), "chexlab-train", &id);
    let log = job_log(tmp.path(), "chexlab-train", &id);
    assert_eq!(state, "COMPLETED", "{log}");
    assert!(
        log.contains("requeueing") && log.contains("(restart 1)"),
        "{log}"
    );
    let resumed = summary(tmp.path());
    assert_eq!(resumed["steps"], 600, "{log}");
    assert_eq!(
        resumed["rank_state_sha256"], uninterrupted["rank_state_sha256"],
        "{log}"
    );
    // The marker was consumed.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".chexlab-requeue")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_signal_to_the_batch_shell_alone_reaches_the_ranks_and_requeues() {
    // `--signal=B:USR2@120` and some preemption setups signal only the batch shell: the script passes it on.
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(
        tmp.path(),
        "max_steps = 600\ncheckpoint_every = 20\nvalid_every = 2000",
    );
    let (ok, id) = sbatch(tmp.path(), &cfg, "train.sbatch", false);
    assert!(ok, "sbatch failed");
    preempt_after_first_checkpoint(
        tmp.path(),
        "chexlab-train",
        &id,
        &["--batch", "--signal=USR2"],
    );
    let state = wait_releasing_requeues(tmp.path(), "chexlab-train", &id);
    let log = job_log(tmp.path(), "chexlab-train", &id);
    assert_eq!(state, "COMPLETED", "{log}");
    assert!(
        log.contains("passing it to the stage") && log.contains("(restart 1)"),
        "{log}"
    );
    assert_eq!(summary(tmp.path())["steps"], 600, "{log}");
}

#[test]
fn past_the_restart_cap_a_preempted_job_fails_and_says_to_resubmit() {
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(
        tmp.path(),
        "max_steps = 1500\ncheckpoint_every = 20\nvalid_every = 2000",
    );
    let (ok, id) = sbatch_with(tmp.path(), &cfg, "train.sbatch", false, &["MAX_RESTARTS=0"]);
    assert!(ok, "sbatch failed");
    preempt_after_first_checkpoint(tmp.path(), "chexlab-train", &id, &["--signal=USR2"]);
    let state = wait_releasing_requeues(tmp.path(), "chexlab-train", &id);
    let log = job_log(tmp.path(), "chexlab-train", &id);
    assert_eq!(state, "FAILED", "{log}");
    assert!(
        log.contains("restart cap MAX_RESTARTS=0") && log.contains("resubmit"),
        "{log}"
    );
    assert!(!log.contains("requeueing"), "{log}");
    // What it trained is kept for the resubmission.
    let (last, _) = *checkpoint::list(&tmp.path().join("run/train/truth/checkpoints"))
        .last()
        .unwrap();
    assert!((1..1500).contains(&last), "{last}");
}

#[test]
fn run_sbatch_requeues_after_preemption_and_finishes() {
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = study(
        tmp.path(),
        "max_steps = 1500\ncheckpoint_every = 20\nvalid_every = 2000",
    );
    let (ok, id) = sbatch(tmp.path(), &cfg, "run.sbatch", false);
    assert!(ok, "sbatch failed");
    preempt_after_first_checkpoint(tmp.path(), "chexlab-run", &id, &["--signal=USR2"]);
    let state = wait_releasing_requeues(tmp.path(), "chexlab-run", &id);
    let log = job_log(tmp.path(), "chexlab-run", &id);
    assert_eq!(state, "COMPLETED", "{log}");
    assert!(
        log.contains("requeueing") && log.contains("(restart 1)"),
        "{log}"
    );
    assert_eq!(summary(tmp.path())["steps"], 1500, "{log}");
    assert!(
        tmp.path()
            .join("run/eval/truth/predictions_test.csv")
            .is_file(),
        "{log}"
    );
}

#[test]
fn a_job_array_trains_the_replicates_and_the_gather_job_reports_them() {
    let Some(_cluster) = cluster() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::replicate_study(tmp.path());
    // Gathering before any replicate is trained fails and names what is missing.
    let (ok, early) = sbatch(tmp.path(), &cfg, "gather.sbatch", true);
    let log = job_log(tmp.path(), "chexlab-gather", &early);
    assert!(!ok && log.contains("no trained classifier"), "{log}");
    let (ok, array) = sbatch_with(tmp.path(), &cfg, "train.sbatch", false, &["--array=1-2"]);
    assert!(ok, "sbatch --array failed");
    let dependency = format!("--dependency=afterok:{array}");
    let (ok, gather) = sbatch_with(tmp.path(), &cfg, "gather.sbatch", true, &[&dependency]);
    let log = job_log(tmp.path(), "chexlab-gather", &gather);
    assert!(ok, "gather job {gather} failed:\n{log}");
    let run = tmp.path().join("run");
    // Each array task trained one replicate of both sources, on the task's two ranks.
    for dir in ["truth", "report", "truth.r2", "report.r2"] {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("train").join(dir).join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(s["ranks"], 1, "{dir}: {s}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    for source in ["truth", "report"] {
        assert_eq!(results["sources"][source]["replicates"], 2, "{results}");
    }
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("## Test AUROC per replicate"), "{md}");
    assert!(log.contains("report:"), "{log}");
}
