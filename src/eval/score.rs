//! Scoring images with trained classifiers (the `evaluate` command's library side): probabilities,
//! per-observation AUROC with intervals, each split's predictions file, and the run's `results.json` with the
//! paired comparisons between label sources. With several ranks each scores a slice and the root gathers them.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::EvaluationConfig;
use super::bootstrap::auroc_ci;
use super::results::{Comparison, PairEffect, Results, SplitScores};
use super::{auprc, auroc};
use crate::comm::Communicator;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::model::DenseNet;
use crate::model::ModelConfig;
use crate::observations::{Label, LabelRow, Observation};
use crate::run_dir::{ReplicateId, RunDir};
use crate::shard::to_batch;
use crate::shard::{RowRef, Sample, ShardSet};

/// Scored images: ids, labels of the reference source and probabilities `[images × observations]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Image ids, in scoring order.
    pub image_ids: Vec<String>,
    /// Each image's reference labels.
    pub labels: Vec<LabelRow>,
    /// Probabilities, `[images × observations]` row-major.
    pub probs: Vec<f32>,
}

/// Scores `rows` with `model` (inference mode), with each row's labels of `source`.
pub fn predict(
    model: &DenseNet,
    shards: &ShardSet,
    rows: &[RowRef],
    source: &str,
    m: &ModelConfig,
    device: &Device,
) -> Result<Scored> {
    let size = m.image_size as usize;
    let chans = m.in_channels;
    let mut out = Scored::default();
    let pb = crate::progress::bar(rows.len() as u64, "scoring");
    for part in rows.chunks(64) {
        let samples: Vec<Sample> = shards.read_images(part, source, m.image_size)?;
        out.image_ids
            .extend(samples.iter().map(|x| x.image_id.clone()));
        let b = to_batch(samples, m.image_size, chans, &shards.dir)?;
        out.labels.extend_from_slice(&b.labels);
        let x = Tensor::<4>::from_data(TensorData::new(b.x, [b.n, chans, size, size]), device);
        let p = burn::tensor::activation::sigmoid(model.forward(x));
        out.probs.extend(
            p.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 probabilities"),
        );
        pb.inc(part.len() as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Every rank scores its share of `rows` (every `size`-th row from its rank); rank 0 gets all of them, in the
/// order of `rows`, and the others `None`.
pub fn predict_distributed(
    model: &DenseNet,
    shards: &ShardSet,
    rows: &[RowRef],
    source: &str,
    m: &ModelConfig,
    device: &Device,
    comm: &dyn Communicator,
) -> Result<Option<Scored>> {
    let (rank, world) = (comm.rank(), comm.size());
    let mine: Vec<RowRef> = rows.iter().skip(rank).step_by(world).copied().collect();
    let local = predict(model, shards, &mine, source, m, device)?;
    if world == 1 {
        return Ok(Some(local));
    }
    let bytes = serde_json::to_vec(&local).expect("scores serialise");
    let Some(parts) = comm.gather_bytes(&bytes, 0)? else {
        return Ok(None);
    };
    let parts: Vec<Scored> = parts
        .iter()
        .enumerate()
        .map(|(r, b)| {
            serde_json::from_slice(b).map_err(|e| {
                Error::distributed(
                    Some(comm.rank()),
                    format!("scores gathered from rank {r}"),
                    e.to_string(),
                )
            })
        })
        .collect::<Result<_>>()?;
    let n_obs = m.observations.len();
    let mut all = Scored::default();
    for i in 0..rows.len() {
        let (r, k) = (i % world, i / world);
        let p = &parts[r];
        all.image_ids.push(p.image_ids[k].clone());
        all.labels.push(p.labels[k]);
        all.probs
            .extend_from_slice(&p.probs[k * n_obs..(k + 1) * n_obs]);
    }
    Ok(Some(all))
}

/// One observation's scores and binary labels (images with an uncertain reference label are left out).
pub fn observation_pairs(sc: &Scored, obs: &[Observation], j: usize) -> (Vec<f32>, Vec<bool>) {
    let (images, y) = observation_index(sc, obs, j);
    (sc.observation_scores(&images, obs.len(), j), y)
}

/// One observation's images with a defined label (indices into `sc`) and those labels (positive or not).
fn observation_index(sc: &Scored, obs: &[Observation], j: usize) -> (Vec<u32>, Vec<bool>) {
    let (mut images, mut y) = (Vec::new(), Vec::new());
    for (i, l) in sc.labels.iter().enumerate() {
        match l.get(obs[j]) {
            Label::Uncertain => continue,
            l => {
                images.push(i as u32);
                y.push(l == Label::Positive);
            }
        }
    }
    (images, y)
}

/// Observation `j` on a common image set (`common`: every run's scores on the same images, with the first's labels):
/// the images with a defined label (indices into the set), their labels, and every run's scores on them.
fn observation_runs(
    common: &[Scored],
    obs: &[Observation],
    j: usize,
) -> (Vec<u32>, Vec<bool>, Vec<Vec<f32>>) {
    let (images, y) = observation_index(&common[0], obs, j);
    let probs = common
        .iter()
        .map(|sc| sc.observation_scores(&images, obs.len(), j))
        .collect();
    (images, y, probs)
}

impl Scored {
    /// Observation `j`'s probabilities (of `n_obs`) for `images` (indices into the scored images).
    fn observation_scores(&self, images: &[u32], n_obs: usize, j: usize) -> Vec<f32> {
        images
            .iter()
            .map(|&i| self.probs[i as usize * n_obs + j])
            .collect()
    }
}

/// Per-observation AUROC of the scores against their labels (uncertain reference labels are left out).
pub fn auroc_table(sc: &Scored, obs: &[Observation]) -> Vec<(String, Option<f64>)> {
    (0..obs.len())
        .map(|j| {
            let (p, y) = observation_pairs(sc, obs, j);
            (obs[j].name().to_string(), auroc(&p, &y))
        })
        .collect()
}

/// Reads a `predictions_<split>.csv` written by [`score`] back into scores.
pub fn read_predictions(path: &Path, obs: &[Observation]) -> Result<Scored> {
    let mut r = csv::Reader::from_reader(crate::io::open_read(path)?);
    let header = r.headers().map_err(|e| Error::csv(path, e))?.clone();
    let col = |name: String| -> Result<usize> {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::MissingColumns {
                path: path.to_path_buf(),
                missing: vec![name.clone()],
                found: header.iter().map(String::from).collect(),
            })
    };
    let id = col("image_id".into())?;
    let p: Vec<usize> = obs
        .iter()
        .map(|o| col(format!("p_{}", o.snake_name())))
        .collect::<Result<_>>()?;
    let l: Vec<usize> = obs
        .iter()
        .map(|o| col(format!("ref_{}", o.snake_name())))
        .collect::<Result<_>>()?;
    let mut sc = Scored::default();
    for (k, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::csv(path, e))?;
        let line = k as u64 + 2;
        sc.image_ids.push(rec[id].to_string());
        let mut row = LabelRow::default();
        for (j, &o) in obs.iter().enumerate() {
            let v: f32 = rec[p[j]].parse().map_err(|_| {
                Error::record(
                    path,
                    line,
                    format!("probability '{}' is not a number", &rec[p[j]]),
                )
            })?;
            sc.probs.push(v);
            row.set(
                o,
                Label::parse(&rec[l[j]])
                    .ok_or_else(|| Error::record(path, line, format!("label '{}'", &rec[l[j]])))?,
            );
        }
        sc.labels.push(row);
    }
    Ok(sc)
}

/// Mean of the defined AUROCs.
pub fn mean_auroc(table: &[(String, Option<f64>)]) -> Option<f64> {
    let v: Vec<f64> = table.iter().filter_map(|(_, a)| *a).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A trained classifier ready to score: its model, what it predicts, and what it is measured against.
pub struct Classifier {
    /// The label source it was trained on, and which replicate.
    pub id: ReplicateId,
    /// The label source its AUROC is measured against.
    pub reference: String,
    /// The network, on the device it scores on.
    pub model: DenseNet,
    /// Its `[model]` section: image size, channels, observations.
    pub config: ModelConfig,
    /// Optimizer step of its checkpoint.
    pub checkpoint_step: u64,
}

/// Loads the best classifier of a label source's replicate onto a device: `None` when it has none yet. The caller
/// (the training room knows checkpoints) provides it, so that scoring needs nothing of training.
pub type LoadClassifier<'a> =
    dyn Fn(&ReplicateId, &ShardSet, &Device) -> Result<Option<Classifier>> + 'a;

/// What to score: a split of a run, for some of its sources, with the evaluation settings.
pub struct ScoreJob<'a> {
    /// The run directory (`shards/` in, `eval/<run>/` and `results.json` out).
    pub run: &'a RunDir,
    /// The split to score.
    pub split: Split,
    /// The classifiers to score.
    pub sources: &'a [ReplicateId],
    /// A source without a trained classifier is an error (else it is skipped with a warning).
    pub strict: bool,
    /// Bootstrap settings.
    pub evaluation: &'a EvaluationConfig,
    /// The observations of the results' comparisons.
    pub observations: &'a [Observation],
    /// Seed of the bootstrap resamples.
    pub seed: u64,
    /// Where the ranks compute.
    pub device: crate::comm::ComputeDevice,
    /// The sources on the dose–response's curve of random label errors (corrupted sources and their bases).
    pub curve: &'a [String],
}

/// Scores the job's split with every classifier that `load` finds, into `run/eval/<run>/`; then rank 0 writes
/// `run/results.json`. Returns rank 0's scores by run directory name (other ranks only score their share). Fails
/// when nothing could be scored.
pub fn evaluate_run(
    job: &ScoreJob,
    load: &LoadClassifier,
    comm: &dyn Communicator,
) -> Result<Vec<(String, SplitScores)>> {
    let shards = ShardSet::open(&job.run.shards())?;
    let device = crate::comm::compute_device(job.device, comm.local_rank())?;
    let mut evaluated = 0;
    let mut out = Vec::new();
    for id in job.sources {
        let train_dir = job.run.train(&id.dir_name());
        let Some(classifier) = load(id, &shards, &device)? else {
            if job.strict {
                return Err(Error::Input(format!(
                    "{id}: no trained classifier (best.ckpt) in {}",
                    train_dir.display()
                )));
            }
            tracing::warn!("{id}: no best.ckpt in {}; skipped", train_dir.display());
            continue;
        };
        let scored = score(&classifier, &shards, job, &device, comm)?;
        evaluated += 1;
        out.extend(scored.map(|sc| (id.dir_name(), sc)));
    }
    if evaluated == 0 {
        return Err(Error::Input(format!(
            "nothing to evaluate: no source has a best.ckpt under {} (train first)",
            job.run.train_root().display()
        )));
    }
    if comm.rank() == 0 {
        write_results(
            job.run,
            job.split,
            job.observations,
            job.evaluation,
            job.seed,
            job.curve,
        )?;
    }
    Ok(out)
}

/// Scores the job's split with `c` on `device`, writes `predictions_<split>.csv` (image id, one probability per
/// observation, then the reference labels) and `scores_<split>.json` into `run/eval/<run>/`. The ranks of
/// `comm` share the images; rank 0 writes the files and returns the scores, the others `None`.
pub fn score(
    c: &Classifier,
    shards: &ShardSet,
    job: &ScoreJob,
    device: &Device,
    comm: &dyn Communicator,
) -> Result<Option<SplitScores>> {
    let out = &job.run.eval(&c.id.dir_name());
    let rows = shards.rows(job.split);
    let Some(sc) = predict_distributed(
        &c.model,
        shards,
        &rows,
        &c.reference,
        &c.config,
        device,
        comm,
    )?
    else {
        return Ok(None);
    };
    let obs = &c.config.observations;
    let name = job.split.name();
    write_predictions(&out.join(format!("predictions_{name}.csv")), &sc, obs)?;
    let scores = SplitScores {
        checkpoint_step: c.checkpoint_step,
        replicate: c.id.replicate,
        ..summarise(
            &sc,
            obs,
            job.evaluation,
            job.seed,
            &c.id.source,
            &c.reference,
            name,
        )
    };
    crate::io::write_atomic(
        out.join(format!("scores_{name}.json")),
        serde_json::to_string_pretty(&scores)
            .expect("scores serialise")
            .as_bytes(),
    )?;
    Ok(Some(scores))
}

/// The scores of `sc` on `obs` (classifier `source` against `reference` labels on `split`): AUROC per observation
/// with its stratified bootstrap interval, average precision, positives, and the mean AUROC.
pub fn summarise(
    sc: &Scored,
    obs: &[Observation],
    ev: &EvaluationConfig,
    seed: u64,
    source: &str,
    reference: &str,
    split: &str,
) -> SplitScores {
    let table = auroc_table(sc, obs);
    let (mut cis, mut aps) = (Vec::new(), Vec::new());
    for (j, o) in obs.iter().enumerate() {
        let (p, y) = observation_pairs(sc, obs, j);
        let ci = auroc_ci(&p, &y, ev.bootstrap, ev.ci, seed).map(|(_, ci)| ci);
        cis.push((o.name().to_string(), ci));
        aps.push((o.name().to_string(), auprc(&p, &y)));
    }
    SplitScores {
        source: source.to_string(),
        reference: reference.to_string(),
        split: split.to_string(),
        checkpoint_step: 0,
        replicate: 1,
        replicates: 1,
        images: sc.image_ids.len(),
        positives: positives(sc, obs),
        mean_auroc: mean_auroc(&table),
        mean_auroc_ci: None,
        auroc: table,
        auroc_ci: cis,
        auprc: aps,
    }
}

/// Positives per observation in the reference labels of `sc`.
fn positives(sc: &Scored, obs: &[Observation]) -> Vec<(String, usize)> {
    obs.iter()
        .map(|&o| {
            let n = sc
                .labels
                .iter()
                .filter(|l| l.get(o) == Label::Positive)
                .count();
            (o.name().to_string(), n)
        })
        .collect()
}

/// For every two of `preds` (by name; each source's replicates, paired by index) and every observation, the paired
/// difference of their mean AUROCs over replicates (bootstrap interval and p-value; DeLong's test with one
/// replicate) on the images all of them scored; and every pair's overall effect (the difference averaged over the
/// observations). The p-values are Holm-corrected, over all comparisons and over all pairs.
pub fn compare_all(
    preds: &std::collections::BTreeMap<String, Vec<Scored>>,
    obs: &[Observation],
    ev: &EvaluationConfig,
    seed: u64,
) -> (Vec<Comparison>, Vec<PairEffect>) {
    use super::compare::{ObservationArms, overall_effect, paired_replicates};
    let names: Vec<&String> = preds.keys().collect();
    let (mut comparisons, mut effects) = (Vec::new(), Vec::new());
    for (x, a) in names.iter().enumerate() {
        for b in &names[x + 1..] {
            let n = preds[*a].len().min(preds[*b].len());
            if n == 0 {
                continue;
            }
            let runs: Vec<&Scored> = preds[*a][..n].iter().chain(&preds[*b][..n]).collect();
            let common = aligned(&runs, obs.len());
            // Per observation: the images with a defined label, and every run's scores on them.
            let mut kept = Vec::new();
            for (j, &o) in obs.iter().enumerate() {
                let (images, y, probs) = observation_runs(&common, obs, j);
                let (pa, pb) = probs.split_at(n);
                let Some(result) =
                    paired_replicates(&views(pa), &views(pb), &y, ev.bootstrap, ev.ci, seed)
                else {
                    continue;
                };
                comparisons.push(Comparison {
                    a: (*a).clone(),
                    b: (*b).clone(),
                    observation: o.name().to_string(),
                    images: y.len(),
                    result,
                    p_holm: f64::NAN,
                });
                kept.push((images, y, probs));
            }
            let arms: Vec<ObservationArms> = kept
                .iter()
                .map(|(images, labels, probs)| ObservationArms {
                    images,
                    labels,
                    a: views(&probs[..n]),
                    b: views(&probs[n..]),
                })
                .collect();
            let images = common[0].image_ids.len();
            if let Some(effect) = overall_effect(&arms, images, ev.bootstrap, ev.ci, seed) {
                effects.push(PairEffect {
                    a: (*a).clone(),
                    b: (*b).clone(),
                    images,
                    effect,
                    p_holm: f64::NAN,
                });
            }
        }
    }
    set_holm(
        &mut comparisons,
        |c| c.result.p_bootstrap,
        |c| &mut c.p_holm,
    );
    set_holm(&mut effects, |e| e.effect.p_bootstrap, |e| &mut e.p_holm);
    (comparisons, effects)
}

/// Sets each item's Holm-corrected p-value, the family being all of `items`.
fn set_holm<T>(items: &mut [T], p: impl Fn(&T) -> f64, adjusted: impl Fn(&mut T) -> &mut f64) {
    let family: Vec<f64> = items.iter().map(&p).collect();
    for (item, q) in items.iter_mut().zip(super::compare::holm(&family)) {
        *adjusted(item) = q;
    }
}

/// Borrowed views of score vectors.
fn views(v: &[Vec<f32>]) -> Vec<&[f32]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Writes scores as a predictions CSV: image id, `p_<observation>` per observation, `ref_<observation>` labels.
fn write_predictions(csv_path: &Path, sc: &Scored, obs: &[Observation]) -> Result<()> {
    let mut w = crate::io::csv_writer(csv_path)?;
    let mut header = vec!["image_id".to_string()];
    header.extend(obs.iter().map(|o| format!("p_{}", o.snake_name())));
    header.extend(obs.iter().map(|o| format!("ref_{}", o.snake_name())));
    w.write_record(&header)
        .map_err(|e| Error::csv(csv_path, e))?;
    for (i, id) in sc.image_ids.iter().enumerate() {
        let mut rec = vec![id.clone()];
        rec.extend((0..obs.len()).map(|j| format!("{:.6}", sc.probs[i * obs.len() + j])));
        rec.extend(
            obs.iter()
                .map(|&o| sc.labels[i].get(o).as_csv().to_string()),
        );
        w.write_record(&rec).map_err(|e| Error::csv(csv_path, e))?;
    }
    crate::io::commit_csv(w, csv_path)
}

/// The images every one of `runs` scored, in the first's order, as score sets that all carry the first's
/// reference labels (so that the same images count for every run).
fn aligned(runs: &[&Scored], n_obs: usize) -> Vec<Scored> {
    let indexes: Vec<std::collections::HashMap<&str, usize>> = runs[1..]
        .iter()
        .map(|sc| {
            sc.image_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect()
        })
        .collect();
    let mut out = vec![Scored::default(); runs.len()];
    let first = runs[0];
    for (i, id) in first.image_ids.iter().enumerate() {
        let Some(rows) = std::iter::once(Some(i))
            .chain(indexes.iter().map(|ix| ix.get(id.as_str()).copied()))
            .collect::<Option<Vec<usize>>>()
        else {
            continue;
        };
        for ((to, from), row) in out.iter_mut().zip(runs).zip(rows) {
            to.image_ids.push(id.clone());
            to.labels.push(first.labels[i]);
            to.probs
                .extend_from_slice(&from.probs[row * n_obs..(row + 1) * n_obs]);
        }
    }
    out
}

/// Collects every classifier's `eval/<run>/scores_<split>.json` of a run into `RUN_DIR/results.json` — per
/// source the AUROC table with intervals (with several replicates, the mean over them with two-level intervals,
/// and each replicate's own table), and for every pair of sources and every observation the paired difference
/// (bootstrap interval and p-value; DeLong's test for single runs) on the images all of them scored; and, when
/// `curve` names sources of random label errors, the dose–response ([`super::dose`]) of every source whose label
/// F1 the run measured (`labels/metrics.json`). Returns its path.
pub fn write_results(
    run_dir: &RunDir,
    split: Split,
    obs: &[Observation],
    ev: &EvaluationConfig,
    seed: u64,
    curve: &[String],
) -> Result<std::path::PathBuf> {
    use std::collections::BTreeMap;
    let eval = run_dir.eval_root();
    // Per source, its replicates' scores and predictions, by replicate.
    let mut runs: BTreeMap<String, BTreeMap<u32, (SplitScores, Scored)>> = BTreeMap::new();
    for entry in std::fs::read_dir(&eval).map_err(|e| Error::io(&eval, e))? {
        let dir = entry.map_err(|e| Error::io(&eval, e))?.path();
        let file = dir.join(format!("scores_{}.json", split.name()));
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let scores: SplitScores = serde_json::from_str(&text).map_err(|e| Error::json(&file, e))?;
        let p = read_predictions(&dir.join(format!("predictions_{}.csv", split.name())), obs)?;
        let (source, replicate) = (scores.source.clone(), scores.replicate);
        if runs
            .entry(source.clone())
            .or_default()
            .insert(replicate, (scores, p))
            .is_some()
        {
            return Err(Error::format(
                &file,
                format!("a second set of scores of '{source}' replicate {replicate}"),
            ));
        }
    }
    let (mut sources, mut replicates, mut preds) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for (source, reps) in runs {
        let (scores, scored): (Vec<SplitScores>, Vec<Scored>) = reps.into_values().unzip();
        if scores.len() == 1 {
            sources.insert(source.clone(), scores[0].clone());
        } else {
            sources.insert(
                source.clone(),
                over_replicates(&scores, &scored, obs, ev, seed),
            );
            replicates.insert(source.clone(), scores);
        }
        preds.insert(source, scored);
    }
    let (comparisons, effects) = compare_all(&preds, obs, ev, seed);
    let dose_response = if curve.is_empty() {
        None
    } else {
        dose_of(run_dir, &preds, curve, obs, ev, seed)?
    };
    let path = run_dir.results();
    let results = Results {
        split: split.name().to_string(),
        reference: Results::shared_reference(sources.values()),
        bootstrap: ev.bootstrap,
        ci: ev.ci,
        sources,
        replicates,
        comparisons,
        effects,
        dose_response,
    };
    results.write(&path)?;
    Ok(path)
}

/// The dose–response over every scored source with a label F1 in the run's `labels/metrics.json` (none without
/// the file, or without two distinct F1 values on the curve), on the images all of them scored.
fn dose_of(
    run_dir: &RunDir,
    preds: &std::collections::BTreeMap<String, Vec<Scored>>,
    curve: &[String],
    obs: &[Observation],
    ev: &EvaluationConfig,
    seed: u64,
) -> Result<Option<super::dose::DoseResponse>> {
    use super::dose::{DoseSource, ObservationScores, dose_response};
    let path = run_dir.label_metrics();
    if !path.is_file() {
        tracing::warn!("no {}: no dose–response", path.display());
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let f1: std::collections::BTreeMap<String, super::report::LabelerAgreement> =
        serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    let with_f1: Vec<(&String, f64, &Vec<Scored>)> = preds
        .iter()
        .filter_map(|(name, runs)| Some((name, f1.get(name)?.image_mean_positive_f1?, runs)))
        .collect();
    let runs: Vec<&Scored> = with_f1.iter().flat_map(|(_, _, r)| r.iter()).collect();
    if runs.is_empty() {
        return Ok(None);
    }
    let common = aligned(&runs, obs.len());
    let per_obs: Vec<_> = (0..obs.len())
        .map(|j| observation_runs(&common, obs, j))
        .collect();
    let mut first = 0;
    let sources: Vec<DoseSource> = with_f1
        .iter()
        .map(|(name, label_f1, reps)| {
            let range = first..first + reps.len();
            first += reps.len();
            DoseSource {
                name: (*name).clone(),
                label_f1: *label_f1,
                on_curve: curve.contains(name),
                observations: per_obs
                    .iter()
                    .map(|(images, labels, probs)| ObservationScores {
                        images,
                        labels,
                        replicates: views(&probs[range.clone()]),
                    })
                    .collect(),
            }
        })
        .collect();
    let n_images = common[0].image_ids.len();
    let Some(mut dose) = dose_response(&sources, n_images, ev.bootstrap, ev.ci, seed) else {
        return Ok(None);
    };
    // Each observation alone, with each source's F1 on that observation.
    for (j, o) in obs.iter().enumerate() {
        let alone: Vec<DoseSource> = sources
            .iter()
            .filter_map(|s| {
                Some(DoseSource {
                    name: s.name.clone(),
                    label_f1: *f1[&s.name].image_positive_f1.get(o.name())?,
                    on_curve: s.on_curve,
                    observations: vec![ObservationScores {
                        images: s.observations[j].images,
                        labels: s.observations[j].labels,
                        replicates: s.observations[j].replicates.clone(),
                    }],
                })
            })
            .collect();
        if let Some(d) = dose_response(&alone, n_images, ev.bootstrap, ev.ci, seed) {
            dose.per_observation.push(super::dose::ObservationDose {
                observation: o.name().to_string(),
                line: d.line,
            });
        }
    }
    Ok(Some(dose))
}

/// One source's scores over its replicates (`scores[r]` and `scored[r]` are replicate r's) on the images all of
/// them scored: per observation the mean AUROC with its two-level bootstrap interval
/// ([`super::compare::replicates_auroc_ci`]), the mean average precision, and the mean AUROC over observations.
fn over_replicates(
    scores: &[SplitScores],
    scored: &[Scored],
    obs: &[Observation],
    ev: &EvaluationConfig,
    seed: u64,
) -> SplitScores {
    let common = aligned(&scored.iter().collect::<Vec<_>>(), obs.len());
    let per_obs: Vec<_> = (0..obs.len())
        .map(|j| observation_runs(&common, obs, j))
        .collect();
    let (mut auroc, mut auroc_ci, mut auprcs) = (Vec::new(), Vec::new(), Vec::new());
    for (o, (_, y, probs)) in obs.iter().zip(&per_obs) {
        let name = o.name().to_string();
        let r = super::compare::replicates_auroc_ci(&views(probs), y, ev.bootstrap, ev.ci, seed);
        auroc.push((name.clone(), r.map(|(a, _)| a)));
        auroc_ci.push((name.clone(), r.map(|(_, ci)| ci)));
        let ap: Vec<f64> = probs.iter().filter_map(|p| auprc(p, y)).collect();
        let mean_ap = (ap.len() == probs.len()).then(|| ap.iter().sum::<f64>() / ap.len() as f64);
        auprcs.push((name, mean_ap));
    }
    let mut out = SplitScores {
        source: scores[0].source.clone(),
        reference: scores[0].reference.clone(),
        split: scores[0].split.clone(),
        checkpoint_step: scores[0].checkpoint_step,
        replicate: 1,
        replicates: scores.len() as u32,
        images: common[0].image_ids.len(),
        positives: positives(&common[0], obs),
        mean_auroc: mean_auroc(&auroc),
        mean_auroc_ci: None,
        auroc,
        auprc: auprcs,
        auroc_ci,
    };
    // The observations with a defined AUROC, as the mean has them.
    let defined: Vec<super::dose::ObservationScores> = per_obs
        .iter()
        .zip(&out.auroc)
        .filter(|(_, (_, a))| a.is_some())
        .map(
            |((images, labels, probs), _)| super::dose::ObservationScores {
                images,
                labels,
                replicates: views(probs),
            },
        )
        .collect();
    out.mean_auroc_ci = super::dose::mean_auroc_ci(
        &defined,
        common[0].image_ids.len(),
        ev.bootstrap,
        ev.ci,
        seed,
    )
    .map(|(_, ci)| ci);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes one classifier's predictions and scores of the test split into `eval/<run>/`, as [`score`] does.
    fn write_run(
        run: &RunDir,
        id: &ReplicateId,
        sc: &Scored,
        obs: &[Observation],
        ev: &EvaluationConfig,
    ) {
        let dir = run.eval(&id.dir_name());
        write_predictions(&dir.join("predictions_test.csv"), sc, obs).unwrap();
        let s = SplitScores {
            replicate: id.replicate,
            ..summarise(sc, obs, ev, 1, &id.source, "truth", "test")
        };
        crate::io::write_atomic(
            dir.join("scores_test.json"),
            &serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
    }

    /// 60 Edema-labelled images, and scores that separate them by `signal` (plus a fixed pattern of noise).
    fn edema_run(signal: f32, noise: usize) -> Scored {
        let labels: Vec<LabelRow> = (0..60)
            .map(|i| {
                let mut l = LabelRow::default();
                l.set(
                    Observation::Edema,
                    if i % 3 == 0 {
                        Label::Positive
                    } else {
                        Label::Negative
                    },
                );
                l
            })
            .collect();
        let probs = (0..60)
            .map(|i| ((i * noise + 5) % 61) as f32 / 61.0 + if i % 3 == 0 { signal } else { 0.0 })
            .collect();
        Scored {
            image_ids: (0..60).map(|i| format!("img{i}")).collect(),
            labels,
            probs,
        }
    }

    #[test]
    fn results_average_a_sources_replicates_and_keep_each() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let obs = [Observation::Edema];
        let ev = EvaluationConfig {
            bootstrap: 200,
            ..EvaluationConfig::default()
        };
        let (a1, a2, b1) = (edema_run(0.5, 7), edema_run(0.2, 11), edema_run(0.3, 13));
        write_run(&run, &ReplicateId::new("a", 1), &a1, &obs, &ev);
        write_run(&run, &ReplicateId::new("b", 1), &b1, &obs, &ev);
        // One replicate each: no per-replicate entries, and the JSON has no replicate fields at all.
        let path = write_results(&run, Split::Test, &obs, &ev, 1, &[]).unwrap();
        let single = Results::read(&path).unwrap();
        assert!(single.replicates.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("replicate"), "{text}");
        assert!(single.comparisons[0].result.delong.is_some());

        write_run(&run, &ReplicateId::new("a", 2), &a2, &obs, &ev);
        let r =
            Results::read(&write_results(&run, Split::Test, &obs, &ev, 1, &[]).unwrap()).unwrap();
        let auroc = |sc: &Scored| auroc_table(sc, &obs)[0].1.unwrap();
        let a = &r.sources["a"];
        assert_eq!(a.replicates, 2);
        let mean = (auroc(&a1) + auroc(&a2)) / 2.0;
        assert!((a.auroc_of("Edema").unwrap() - mean).abs() < 1e-12);
        assert_eq!(a.mean_auroc, a.auroc_of("Edema"));
        let (mlo, mhi) = a
            .mean_auroc_ci
            .expect("an interval for the mean over replicates");
        assert!(mlo < mean && mean < mhi);
        assert!(r.sources["b"].mean_auroc_ci.is_none());
        let (lo, hi) = a.ci_of("Edema").unwrap();
        assert!(lo < mean && mean < hi);
        // Each replicate's own table, in replicate order; `b` has one replicate and stays a single run.
        let reps = &r.replicates["a"];
        assert_eq!(
            reps.iter().map(|s| s.replicate).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(reps[1].auroc_of("Edema"), Some(auroc(&a2)));
        assert!(!r.replicates.contains_key("b"));
        assert_eq!(r.sources["b"], single.sources["b"]);
        // The comparison pairs a's first replicate with b's only one (replicates pair by index).
        assert_eq!(r.comparisons[0].result.auroc_a, auroc(&a1));
        // Two sets of scores claiming one replicate: an error naming the file.
        let twin = run.eval("a_copy");
        std::fs::create_dir_all(&twin).unwrap();
        for f in ["scores_test.json", "predictions_test.csv"] {
            std::fs::copy(run.eval("a.r2").join(f), twin.join(f)).unwrap();
        }
        let err = write_results(&run, Split::Test, &obs, &ev, 1, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a second set of scores of 'a' replicate 2"),
            "{err}"
        );
    }

    #[test]
    fn aligned_keeps_common_images_in_a_order_with_a_labels() {
        let mut pos = LabelRow::default();
        pos.set(Observation::Edema, Label::Positive);
        let a = Scored {
            image_ids: vec!["x".into(), "y".into(), "z".into()],
            labels: vec![pos, LabelRow::default(), pos],
            probs: vec![0.1, 0.2, 0.3],
        };
        let b = Scored {
            image_ids: vec!["z".into(), "x".into()],
            labels: vec![LabelRow::default(); 2],
            probs: vec![0.9, 0.8],
        };
        let [a2, b2] = <[Scored; 2]>::try_from(aligned(&[&a, &b], 1)).unwrap();
        assert_eq!(a2.image_ids, vec!["x", "z"]);
        assert_eq!(b2.image_ids, vec!["x", "z"]);
        assert_eq!((a2.probs, b2.probs), (vec![0.1, 0.3], vec![0.8, 0.9]));
        assert_eq!(b2.labels, vec![pos, pos]);
    }
}
