//! Training the BERT labelers, data-parallel over a [`Communicator`] (one process: [`crate::comm::single::Single`]).
//!
//! CheXbert: cross-entropy summed over the 14 heads, first on the rule labeler's labels of the training reports,
//! then fine-tuned on a small set of expert report labels. VisualCheXbert: binary cross-entropy toward an image
//! model's probabilities (the "teacher"), then per-observation logistic regressions over the 14 output
//! probabilities fitted on a labelled dev set ([`fit_calibration`]).
//!
//! Every rank takes its slice of each epoch's permutation ([`crate::learn::deal`]); the flat gradient and the loss
//! are all-reduced once per step, so every rank takes the same Adam step and the replicas stay identical.

use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::comm::Communicator;
use crate::error::Result;
use crate::learn::OptimizerConfig;
use crate::learn::{apply, grads, loss::bce_with_logits, optimizer};
use crate::observations::{Label, N_OBS};

use super::Calibration;
use super::label_class;
use super::model::{BertLabeler, HeadKind};
use super::tokenizer::{Encoded, ReportTokenizer};

/// What a report is trained toward, per head (CheXbert order).
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// CheXbert classes (0 blank, 1 positive, 2 negative, 3 uncertain).
    Classes([u8; N_OBS]),
    /// VisualCheXbert probabilities; `None` leaves a head out of the loss.
    Probs([Option<f32>; N_OBS]),
}

impl Target {
    /// CheXbert targets from report labels in head order (No Finding's head knows only blank and positive).
    pub fn from_labels(labels: [Label; N_OBS]) -> Target {
        Target::Classes(std::array::from_fn(|i| {
            let c = label_class(labels[i]);
            if i == N_OBS - 1 && c > 1 { 0 } else { c as u8 }
        }))
    }
}

/// One training example.
#[derive(Clone, Debug)]
pub struct Example {
    /// The report's tokens.
    pub encoded: Encoded,
    /// What the heads should say.
    pub target: Target,
}

/// One training phase.
#[derive(Clone, Debug)]
pub struct FitSettings {
    /// Passes over the examples.
    pub epochs: usize,
    /// Reports per rank and step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Fraction of the steps with a linear warm-up.
    pub warmup: f64,
    /// Adam's other settings.
    pub optimizer: OptimizerConfig,
    /// Seed of the order and dropout.
    pub seed: u64,
}

/// What a phase did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FitLog {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Mean loss (over ranks) of each epoch.
    pub epoch_loss: Vec<f64>,
}

/// The loss of `model` on `rows`: CheXbert's summed cross-entropy (mean over reports) or VisualCheXbert's binary
/// cross-entropy (mean over the targets present).
pub fn batch_loss(
    model: &BertLabeler,
    tok: &ReportTokenizer,
    rows: &[&Example],
    device: &Device,
) -> Tensor<1> {
    let enc: Vec<&Encoded> = rows.iter().map(|e| &e.encoded).collect();
    let logits = model.forward_padded(tok.pad(&enc), device);
    match model.kind() {
        HeadKind::Chexbert => {
            let sizes = HeadKind::Chexbert.head_sizes();
            let width: usize = sizes.iter().sum();
            let mut parts = Vec::with_capacity(N_OBS);
            let mut at = 0;
            for n in sizes {
                parts.push(log_softmax(logits.clone().narrow(1, at, n), 1));
                at += n;
            }
            let mut onehot = vec![0f32; rows.len() * width];
            for (r, e) in rows.iter().enumerate() {
                let Target::Classes(c) = &e.target else {
                    panic!("CheXbert example without classes")
                };
                let mut at = 0;
                for (h, n) in sizes.iter().enumerate() {
                    onehot[r * width + at + c[h] as usize] = 1.0;
                    at += n;
                }
            }
            let onehot =
                Tensor::<2>::from_data(TensorData::new(onehot, [rows.len(), width]), device);
            (Tensor::cat(parts, 1) * onehot)
                .sum()
                .neg()
                .div_scalar(rows.len() as f64)
        }
        HeadKind::Visualchexbert => {
            let mut y = Vec::with_capacity(rows.len() * N_OBS);
            let mut m = Vec::with_capacity(rows.len() * N_OBS);
            for e in rows {
                let Target::Probs(p) = &e.target else {
                    panic!("VisualCheXbert example without probabilities")
                };
                for v in p {
                    y.push(v.unwrap_or(0.0));
                    m.push(if v.is_some() { 1.0 } else { 0.0 });
                }
            }
            bce_with_logits(logits, &y, &m, device)
        }
    }
}

/// Trains `model` on `examples` (every rank passes the same examples and settings). `model` lives on the autodiff
/// device `ad`. Progress on rank 0.
pub fn fit(
    mut model: BertLabeler,
    tok: &ReportTokenizer,
    examples: &[Example],
    s: &FitSettings,
    comm: &dyn Communicator,
    ad: &Device,
    what: &str,
) -> Result<(BertLabeler, FitLog)> {
    let (rank, world) = (comm.rank(), comm.size());
    let per_rank = examples.len() / world;
    let steps_per_epoch = per_rank / s.batch_size.max(1);
    let total = (steps_per_epoch * s.epochs) as u64;
    let mut optim = optimizer(&s.optimizer);
    let warmup = (total as f64 * s.warmup).ceil().max(1.0);
    let bar = (rank == 0).then(|| crate::progress::bar(total, what));
    let mut log = FitLog::default();
    for epoch in 0..s.epochs {
        let order = crate::learn::deal(examples.len(), rank, world, epoch as u64, s.seed);
        let mut sum = 0.0;
        for step in 0..steps_per_epoch {
            let rows: Vec<&Example> = order[step * s.batch_size..][..s.batch_size]
                .iter()
                .map(|&i| &examples[i])
                .collect();
            let loss = batch_loss(&model, tok, &rows, ad);
            let value = loss.clone().inner();
            let g = GradientsParams::from_grads(loss.backward(), &model);
            // The gradient and the loss, averaged over the ranks in one all-reduce on the model's device.
            let (layout, flat) = grads::flatten_tensor(&g, &model, value);
            let flat = comm
                .all_reduce_sum_tensor(flat)?
                .mul_scalar(1.0 / world as f32);
            let n = layout.len();
            let mean_loss = flat.clone().slice(n..n + 1).into_scalar::<f32>();
            sum += f64::from(mean_loss);
            // Linear warm-up, then linear decay to zero (BERT fine-tuning's schedule).
            let t = log.steps as f64 + 1.0;
            let lr = s.lr
                * if t <= warmup {
                    t / warmup
                } else {
                    (total as f64 - t + 1.0).max(0.0) / (total as f64 - warmup + 1.0)
                };
            model = apply(model, &mut optim, &layout, &flat, lr);
            log.steps += 1;
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("epoch {} loss {mean_loss:.4}", epoch + 1));
            }
        }
        let mean = sum / steps_per_epoch.max(1) as f64;
        if rank == 0 {
            tracing::info!(
                "{what}: epoch {} mean loss {mean:.4} ({steps_per_epoch} steps)",
                epoch + 1
            );
        }
        log.epoch_loss.push(mean);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((model, log))
}

/// Fits the per-observation logistic regressions of VisualCheXbert: for each observation, a logistic regression
/// of its 0/1 image label on the 14 head probabilities (plus intercept), by Newton's method with a small L2
/// penalty (`l2`; keeps separable data finite). The decision threshold is then moved to the one that maximises
/// the observation's F1 on the same rows (at 0.5 a rare finding with a weak signal is never called positive).
/// `probs` and `labels` are per report, in head order; a `None` label leaves the report out of that observation's
/// fit. Observations without both classes keep the identity rule.
pub fn fit_calibration(
    probs: &[Vec<f32>],
    labels: &[[Option<bool>; N_OBS]],
    l2: f64,
) -> Calibration {
    let mut cal = Calibration::identity();
    const K: usize = N_OBS + 1;
    for o in 0..N_OBS {
        let rows: Vec<(&Vec<f32>, f64)> = probs
            .iter()
            .zip(labels)
            .filter_map(|(p, l)| l[o].map(|y| (p, if y { 1.0 } else { 0.0 })))
            .collect();
        let pos = rows.iter().filter(|r| r.1 > 0.5).count();
        if pos == 0 || pos == rows.len() {
            continue;
        }
        let x = |p: &Vec<f32>, j: usize| if j == N_OBS { 1.0 } else { f64::from(p[j]) };
        let mut w = [0f64; K];
        for _ in 0..50 {
            let mut grad = [0f64; K];
            let mut hess = [[0f64; K]; K];
            for (p, y) in &rows {
                let z: f64 = (0..K).map(|j| w[j] * x(p, j)).sum();
                let mu = 1.0 / (1.0 + (-z).exp());
                let s = (mu * (1.0 - mu)).max(1e-9);
                for (j, row) in hess.iter_mut().enumerate() {
                    let xj = x(p, j);
                    grad[j] += (mu - y) * xj;
                    for (k, h) in row.iter_mut().enumerate() {
                        *h += s * xj * x(p, k);
                    }
                }
            }
            for j in 0..N_OBS {
                grad[j] += l2 * w[j];
                hess[j][j] += l2;
            }
            hess[N_OBS][N_OBS] += 1e-9;
            let Some(step) = solve(hess, grad) else { break };
            let mut change = 0f64;
            for j in 0..K {
                w[j] -= step[j];
                change = change.max(step[j].abs());
            }
            if change < 1e-8 {
                break;
            }
        }
        cal.weights[o].copy_from_slice(&w[..N_OBS]);
        let z: Vec<(f64, bool)> = rows
            .iter()
            .map(|(p, y)| ((0..K).map(|j| w[j] * x(p, j)).sum(), *y > 0.5))
            .collect();
        cal.bias[o] = w[N_OBS] - best_f1_cut(z);
    }
    cal
}

/// The score cut (predict positive when `score >= cut`) with the highest F1; ties go to the higher cut.
fn best_f1_cut(mut scored: Vec<(f64, bool)>) -> f64 {
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = scored.iter().filter(|s| s.1).count() as f64;
    let (mut tp, mut called) = (0f64, 0f64);
    let (mut best, mut cut) = (-1f64, 0f64);
    for (i, (z, y)) in scored.iter().enumerate() {
        called += 1.0;
        if *y {
            tp += 1.0;
        }
        // Only cut between distinct scores.
        if scored.get(i + 1).is_some_and(|n| n.0 == *z) {
            continue;
        }
        let f1 = 2.0 * tp / (called + positives);
        if f1 > best {
            best = f1;
            cut = *z;
        }
    }
    cut
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve<const K: usize>(mut a: [[f64; K]; K], mut b: [f64; K]) -> Option<[f64; K]> {
    for c in 0..K {
        let p = (c..K).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..K {
            let f = a[r][c] / a[c][c];
            let pivot = a[c];
            for (x, p) in a[r][c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0f64; K];
    for r in (0..K).rev() {
        let s: f64 = (r + 1..K).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_recovers_a_rule_on_another_observation() {
        // Observation 0 is positive exactly when head 3's probability is high: the fitted rule must use head 3.
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let mut p = vec![0.5f32; N_OBS];
            p[3] = (i % 100) as f32 / 100.0;
            p[0] = ((i * 37) % 100) as f32 / 100.0; // noise on its own head
            let mut l = [None; N_OBS];
            l[0] = Some(p[3] > 0.6);
            probs.push(p);
            labels.push(l);
        }
        let cal = fit_calibration(&probs, &labels, 1e-3);
        let right = probs
            .iter()
            .zip(&labels)
            .filter(|(p, l)| cal.decide(p)[0] == l[0].unwrap())
            .count();
        assert!(right >= 196, "{right}/200");
        assert!(
            cal.weights[0][3] > 10.0 * cal.weights[0][0].abs(),
            "{:?}",
            cal.weights[0]
        );
        // Observations without labels keep the identity rule.
        assert_eq!(cal.weights[5], Calibration::identity().weights[5]);
    }

    #[test]
    fn no_finding_targets_have_two_classes() {
        let mut labels = [Label::Uncertain; N_OBS];
        labels[0] = Label::Positive;
        let Target::Classes(c) = Target::from_labels(labels) else {
            unreachable!()
        };
        assert_eq!(c[0], 1);
        assert_eq!(c[1], 3);
        assert_eq!(c[N_OBS - 1], 0);
    }
}
