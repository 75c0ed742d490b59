//! Scoring images with a trained classifier: probabilities, per-observation AUROC, and the split's predictions
//! file. With several ranks each scores a slice and the root gathers them.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{RunFiles, TrainSettings, checkpoint, load_model, to_batch};
use crate::data::Split;
use crate::dist::Communicator;
use crate::error::{Error, Result};
use crate::eval::auroc;
use crate::model::DenseNet;
use crate::observations::{Label, LabelRow, Observation};
use crate::shard::{RowRef, Sample, ShardSet};

/// Scored images: ids, labels of the reference source and probabilities `[images × observations]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub image_ids: Vec<String>,
    pub labels: Vec<LabelRow>,
    pub probs: Vec<f32>,
}

/// Scores `rows` with `model` (inference mode), with each row's labels of `source`.
pub fn predict(
    model: &DenseNet,
    shards: &ShardSet,
    rows: &[RowRef],
    source: &str,
    s: &TrainSettings,
    device: &Device,
) -> Result<Scored> {
    let size = s.model.image_size as usize;
    let chans = s.model.in_channels;
    let mut out = Scored::default();
    let pb = crate::progress::bar(rows.len() as u64, "scoring");
    for part in rows.chunks(64) {
        let samples: Vec<Sample> = shards.read(part, source)?;
        out.image_ids
            .extend(samples.iter().map(|x| x.image_id.clone()));
        let b = to_batch(samples, s.model.image_size, chans, &shards.dir)?;
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
    s: &TrainSettings,
    device: &Device,
    comm: &dyn Communicator,
) -> Result<Option<Scored>> {
    let (rank, world) = (comm.rank(), comm.size());
    let mine: Vec<RowRef> = rows.iter().skip(rank).step_by(world).copied().collect();
    let local = predict(model, shards, &mine, source, s, device)?;
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
            serde_json::from_slice(b)
                .map_err(|e| Error::Config(format!("scores gathered from rank {r}: {e}")))
        })
        .collect::<Result<_>>()?;
    let n_obs = s.model.observations.len();
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

/// Per-observation AUROC of the scores against their labels (uncertain reference labels are left out).
pub fn auroc_table(sc: &Scored, obs: &[Observation]) -> Vec<(String, Option<f64>)> {
    obs.iter()
        .enumerate()
        .map(|(j, &o)| {
            let (mut p, mut y) = (Vec::new(), Vec::new());
            for (i, l) in sc.labels.iter().enumerate() {
                match l.get(o) {
                    Label::Uncertain => continue,
                    l => {
                        p.push(sc.probs[i * obs.len() + j]);
                        y.push(l == Label::Positive);
                    }
                }
            }
            (o.name().to_string(), auroc(&p, &y))
        })
        .collect()
}

/// Mean of the defined AUROCs.
pub fn mean_auroc(table: &[(String, Option<f64>)]) -> Option<f64> {
    let v: Vec<f64> = table.iter().filter_map(|(_, a)| *a).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Per-image probabilities and per-observation AUROC of one trained classifier on one split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitScores {
    pub source: String,
    pub reference: String,
    pub split: String,
    pub checkpoint_step: u64,
    pub images: usize,
    /// Positives per observation in the reference labels.
    pub positives: Vec<(String, usize)>,
    pub auroc: Vec<(String, Option<f64>)>,
    pub mean_auroc: Option<f64>,
}

/// Scores `split` with the best checkpoint in `train_dir`, writes `predictions_<split>.csv` (image id, one
/// probability per observation, then the reference labels) and `scores_<split>.json` into `out`. The ranks of
/// `comm` share the images; rank 0 writes the files and returns the scores, the others `None`.
pub fn evaluate(
    shards: &ShardSet,
    s: &TrainSettings,
    train_dir: &Path,
    split: Split,
    out: &Path,
    comm: &dyn Communicator,
) -> Result<Option<SplitScores>> {
    let files = RunFiles {
        dir: train_dir.to_path_buf(),
    };
    let best = files.best();
    let (meta, _, _) = checkpoint::load(&best)?;
    let device = Device::flex();
    let model = load_model(&best, s, &device)?;
    let rows = shards.rows(split);
    let Some(sc) = predict_distributed(&model, shards, &rows, &s.reference, s, &device, comm)?
    else {
        return Ok(None);
    };
    let obs = s.observations()?;
    let table = auroc_table(&sc, &obs);
    let name = split.name();
    let csv_path = out.join(format!("predictions_{name}.csv"));
    let mut w = crate::io::csv_writer(&csv_path)?;
    let mut header = vec!["image_id".to_string()];
    header.extend(obs.iter().map(|o| format!("p_{}", o.snake_name())));
    header.extend(obs.iter().map(|o| format!("ref_{}", o.snake_name())));
    w.write_record(&header)
        .map_err(|e| Error::csv(&csv_path, e))?;
    for (i, id) in sc.image_ids.iter().enumerate() {
        let mut rec = vec![id.clone()];
        rec.extend((0..obs.len()).map(|j| format!("{:.6}", sc.probs[i * obs.len() + j])));
        rec.extend(
            obs.iter()
                .map(|&o| sc.labels[i].get(o).as_csv().to_string()),
        );
        w.write_record(&rec).map_err(|e| Error::csv(&csv_path, e))?;
    }
    crate::io::commit_csv(w, &csv_path)?;
    let scores = SplitScores {
        source: s.source.clone(),
        reference: s.reference.clone(),
        split: name.to_string(),
        checkpoint_step: meta.step,
        images: sc.image_ids.len(),
        positives: obs
            .iter()
            .map(|&o| {
                let n = sc
                    .labels
                    .iter()
                    .filter(|l| l.get(o) == Label::Positive)
                    .count();
                (o.name().to_string(), n)
            })
            .collect(),
        mean_auroc: mean_auroc(&table),
        auroc: table,
    };
    crate::io::write_atomic(
        out.join(format!("scores_{name}.json")),
        serde_json::to_string_pretty(&scores)
            .expect("scores serialise")
            .as_bytes(),
    )?;
    Ok(Some(scores))
}

/// Collects every source's `eval/<source>/scores_<split>.json` of a run into `RUN_DIR/results.json` (a
/// per-source AUROC table); returns its path.
pub fn write_results(run_dir: &Path, split: Split) -> Result<std::path::PathBuf> {
    let eval = run_dir.join("eval");
    let mut sources = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(&eval).map_err(|e| Error::io(&eval, e))? {
        let dir = entry.map_err(|e| Error::io(&eval, e))?.path();
        let file = dir.join(format!("scores_{}.json", split.name()));
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let scores: SplitScores =
            serde_json::from_str(&text).map_err(|e| Error::format(&file, e.to_string()))?;
        sources.insert(scores.source.clone(), scores);
    }
    let path = run_dir.join("results.json");
    let doc = serde_json::json!({ "split": split.name(), "sources": sources });
    crate::io::write_atomic(
        &path,
        serde_json::to_string_pretty(&doc).expect("json").as_bytes(),
    )?;
    Ok(path)
}
