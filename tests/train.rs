//! Training on a tiny synthetic world: loss goes down, an interrupted run resumed from its checkpoint ends with
//! exactly the weights of an uninterrupted one, a resume with other settings is refused by key, and a corrupt
//! checkpoint is detected.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use chexlab::comm::Communicator;
use chexlab::comm::single::Single;
use chexlab::comm::threads::Threads;
use chexlab::config::{OptimizerConfig, ScheduleConfig, UncertaintyPolicy};
use chexlab::model::{Arch, ModelConfig, Precision};
use chexlab::observations::Observation;
use chexlab::shard::ShardSet;

mod common;
use chexlab::train::{Resume, TrainOptions, TrainSettings, TrainSummary, checkpoint, load_model};

fn train(
    set: &ShardSet,
    s: &TrainSettings,
    out: &Path,
    resume: Resume,
    threads: usize,
) -> chexlab::Result<TrainSummary> {
    let opts = TrainOptions {
        resume,
        threads,
        ..TrainOptions::default()
    };
    chexlab::train::train(set, s, out, &opts, &Single)
}

fn shards(dir: &Path) -> ShardSet {
    common::world_and_shards(
        dir,
        120,
        &[
            ("truth", "truth/image_labels.csv"),
            ("report", "truth/report_labels.csv"),
        ],
    );
    ShardSet::open(&dir.join("run/shards")).unwrap()
}

fn settings(set: &ShardSet) -> TrainSettings {
    TrainSettings {
        source: "report".into(),
        uncertainty: UncertaintyPolicy::Ignore,
        reference: "truth".into(),
        model: ModelConfig {
            arch: Arch::Small,
            growth_rate: 4,
            block_config: vec![1, 1],
            init_features: 8,
            image_size: 32,
            in_channels: 1,
            pretrained: None,
            freeze_bn: false,
            observations: vec![
                Observation::Cardiomegaly,
                Observation::PleuralEffusion,
                Observation::Edema,
            ],
            precision: Precision::F32,
        },
        optimizer: OptimizerConfig {
            lr: 3e-3,
            grad_clip: Some(5.0),
            ..OptimizerConfig::default()
        },
        schedule: ScheduleConfig {
            epochs: 2,
            batch_size: 8,
            grad_accum: 2,
            valid_every: 3,
            log_every: 1,
            keep_last: 10,
            ..ScheduleConfig::default()
        },
        seed: 11,
        replicate: 1,
        lr_scaling: Default::default(),
        shards: set.index.config_hash.clone(),
    }
}

fn weights(path: &Path, s: &TrainSettings) -> Vec<f32> {
    chexlab::model::state_values(&load_model(path, s, &Device::flex()).unwrap())
}

fn last_ckpt(dir: &Path) -> PathBuf {
    checkpoint::list(&dir.join("checkpoints"))
        .last()
        .unwrap()
        .1
        .clone()
}

#[test]
fn interrupted_and_resumed_run_matches_uninterrupted_run() {
    interrupted_and_resumed(Precision::F32);
}

#[test]
fn interrupted_and_resumed_bf16_run_matches_uninterrupted_run() {
    let summary = interrupted_and_resumed(Precision::Bf16);
    // Mixed precision trains other weights than fp32 does, and its checkpoints hold fp32 weights (the loads in
    // the run above read them into an fp32 model).
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.schedule.augment.enabled = true;
    let f32_run = train(&set, &s, &tmp.path().join("f32"), Resume::Fresh, 1).unwrap();
    assert_eq!(f32_run.steps, summary.steps);
    assert_ne!(f32_run.rank_state_sha256, summary.rank_state_sha256);
    assert!(
        summary.last_valid_auroc.iter().any(|(_, a)| a.is_some()),
        "{summary:?}"
    );
}

/// Trains, then trains again cut short and resumed, with `precision`; returns the uninterrupted run's summary.
fn interrupted_and_resumed(precision: Precision) -> TrainSummary {
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.model.precision = precision;
    // With augmentation: its draws must not depend on where the run was interrupted.
    s.schedule.augment.enabled = true;

    let full = tmp.path().join("full");
    let summary = train(&set, &s, &full, Resume::Fresh, 1).unwrap();
    assert!(summary.steps >= 6, "{summary:?}");
    let metrics = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    assert!(
        metrics
            .lines()
            .next()
            .unwrap()
            .starts_with("step,epoch,kind,loss,lr")
    );
    assert!(metrics.lines().any(|l| l.contains(",valid,")), "{metrics}");

    // "Interrupt": train with max_steps = 3 (a validation, hence a checkpoint, falls on step 3), then resume the
    // same directory with the full settings — the checkpoint must be accepted only if the settings match, so the
    // interrupted run uses the full settings and is cut by deleting later checkpoints instead.
    let part = tmp.path().join("part");
    train(&set, &s, &part, Resume::Fresh, 1).unwrap();
    {
        let (a, b) = (
            weights(&last_ckpt(&full), &s),
            weights(&last_ckpt(&part), &s),
        );
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(
            differing,
            0,
            "two fresh runs differ in {differing} of {} values",
            a.len()
        );
    }
    let ckpts = checkpoint::list(&part.join("checkpoints"));
    assert!(ckpts.len() >= 2, "{ckpts:?}");
    for (step, p) in &ckpts {
        if *step > 3 {
            std::fs::remove_file(p).unwrap();
        }
    }
    std::fs::remove_file(part.join("summary.json")).unwrap();
    let resumed = train(&set, &s, &part, Resume::Auto, 1).unwrap();
    assert_eq!(resumed.steps, summary.steps);
    // The counts cover the whole run: the part before the interruption too.
    assert_eq!(resumed.images_seen, summary.images_seen, "{resumed:?}");
    // Resuming a finished run changes nothing and keeps its summary.
    let kept = std::fs::read(part.join("summary.json")).unwrap();
    let again = train(&set, &s, &part, Resume::Auto, 1).unwrap();
    assert_eq!(
        (again.images_seen, again.steps),
        (resumed.images_seen, resumed.steps)
    );
    assert_eq!(std::fs::read(part.join("summary.json")).unwrap(), kept);
    let (a, b) = (
        weights(&last_ckpt(&full), &s),
        weights(&last_ckpt(&part), &s),
    );
    assert_eq!(a.len(), b.len());
    let differing = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} values differ after resume",
        a.len()
    );
    // The metrics log has no duplicated steps after the resume.
    let a = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    let b = std::fs::read_to_string(part.join("metrics.csv")).unwrap();
    let strip = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| {
                l.split(',')
                    .enumerate()
                    .filter(|(i, _)| *i != 5)
                    .map(|(_, c)| c)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    summary
}

#[test]
fn augmentation_changes_what_is_learned() {
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.schedule.epochs = 1;
    let plain = train(&set, &s, &tmp.path().join("plain"), Resume::Fresh, 1).unwrap();
    s.schedule.augment.enabled = true;
    let aug = train(&set, &s, &tmp.path().join("aug"), Resume::Fresh, 1).unwrap();
    assert_eq!(plain.steps, aug.steps);
    assert_ne!(plain.rank_state_sha256, aug.rank_state_sha256);
}

#[test]
fn the_loader_threads_change_the_speed_not_what_is_learned() {
    // Augmentation draws per image from (seed, epoch, batch, rank, position), so how many loader threads decode
    // and augment a batch must not change a single weight.
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.schedule.epochs = 1;
    s.schedule.augment.enabled = true;
    let run = |loader_threads: usize, dir: &str| {
        let opts = TrainOptions {
            resume: Resume::Fresh,
            loader_threads,
            ..TrainOptions::default()
        };
        chexlab::train::train(&set, &s, &tmp.path().join(dir), &opts, &Single).unwrap()
    };
    let one = run(1, "one");
    let three = run(3, "three");
    assert!(one.steps > 0);
    assert_eq!(one.steps, three.steps);
    assert_eq!(one.rank_state_sha256, three.rank_state_sha256);
}

#[test]
fn resume_with_other_settings_names_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.schedule.epochs = 1;
    let out = tmp.path().join("run");
    train(&set, &s, &out, Resume::Fresh, 1).unwrap();
    // A fresh start into a directory with checkpoints is refused.
    let err = train(&set, &s, &out, Resume::Fresh, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume auto"), "{err}");
    let mut other = s.clone();
    other.optimizer.lr = 1e-4;
    other.uncertainty = UncertaintyPolicy::Ones;
    let err = train(&set, &other, &out, Resume::Auto, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optimizer.lr") && err.contains("uncertainty"),
        "{err}"
    );
}

#[test]
fn corrupt_checkpoint_is_detected_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    s.schedule.epochs = 1;
    let out = tmp.path().join("run");
    train(&set, &s, &out, Resume::Fresh, 1).unwrap();
    let newest = last_ckpt(&out);
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let err = checkpoint::load(&newest).unwrap_err().to_string();
    assert!(err.contains("SHA-256") || err.contains("corrupt"), "{err}");
    let err = load_model(&newest, &s, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&newest.display().to_string()), "{err}");
    // Auto-resume falls back to the previous valid checkpoint.
    let (p, meta, _, _) = checkpoint::latest_valid(&out.join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_ne!(p, newest);
    assert!(meta.step > 0);
}

#[test]
fn two_ranks_with_batch_b_match_one_rank_with_batch_2b() {
    let tmp = tempfile::tempdir().unwrap();
    let set = shards(tmp.path());
    let mut s = settings(&set);
    // Frozen BatchNorm statistics make each sample's loss independent of its batch-mates; `zeros` gives every
    // rank the same number of loss terms. Then the mean of the ranks' mean gradients is the big batch's.
    s.model.freeze_bn = true;
    s.uncertainty = UncertaintyPolicy::Zeros;
    s.optimizer.grad_clip = None;
    s.schedule = ScheduleConfig {
        max_steps: Some(6),
        batch_size: 8,
        grad_accum: 1,
        valid_every: 3,
        log_every: 1,
        keep_last: 10,
        ..ScheduleConfig::default()
    };
    let one = tmp.path().join("one");
    train(&set, &s, &one, Resume::Fresh, 1).unwrap();

    let mut s2 = s.clone();
    s2.schedule.batch_size = 4;
    let two = tmp.path().join("two");
    let summaries: Vec<TrainSummary> = std::thread::scope(|scope| {
        let handles: Vec<_> = Threads::world(2)
            .into_iter()
            .map(|comm| {
                let (set, s2, two) = (&set, &s2, &two);
                scope.spawn(move || {
                    let opts = TrainOptions {
                        resume: Resume::Fresh,
                        ..TrainOptions::default()
                    };
                    let sum = chexlab::train::train(set, s2, two, &opts, &comm).unwrap();
                    assert_eq!(comm.size(), 2);
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Both ranks end with bit-identical state, and rank 0 reports both digests.
    let digests = &summaries[0].rank_state_sha256;
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0], digests[1]);
    assert_eq!(summaries[0].steps, 6);
    assert_eq!(summaries[1].steps, 6);

    let a = weights(&last_ckpt(&one), &s);
    let b = weights(&last_ckpt(&two), &s2);
    common::assert_close(&a, &b, 1e-4);
    // The losses logged agree too.
    let loss = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("metrics.csv"))
            .unwrap()
            .lines()
            .filter(|l| l.contains(",train,"))
            .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
            .collect()
    };
    let (la, lb) = (loss(&one), loss(&two));
    assert_eq!(la.len(), 6);
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5, "losses {la:?} vs {lb:?}");
    }
}
