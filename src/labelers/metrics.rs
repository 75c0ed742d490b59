//! Labeler evaluation (`chexlab eval-labels`): per observation and class precision / recall / F1, support-weighted
//! F1, Cohen's kappa, and, against binary image labels, positive-class F1 with uncertain mapped by a policy.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::data::OnBadRecord;
use crate::data::ids::{index_by_key, label_key};
use crate::error::{Error, Result};
use crate::labelers::format::{LabeledRow, read_labeled};
use crate::observations::UncertaintyPolicy;
use crate::observations::{Label, LabelRow, N_OBS, OBSERVATIONS, Observation};

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ClassScore {
    /// Share of predicted members that are.
    pub precision: f64,
    /// Share of members predicted.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Truth count of the class.
    pub support: u64,
    /// Prediction count of the class.
    pub predicted: u64,
}

impl ClassScore {
    fn from_counts(tp: u64, predicted: u64, support: u64) -> Self {
        let div = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (p, r) = (div(tp, predicted), div(tp, support));
        ClassScore {
            precision: p,
            recall: r,
            f1: if p + r == 0.0 {
                0.0
            } else {
                2.0 * p * r / (p + r)
            },
            support,
            predicted,
        }
    }
}

/// Scores of one observation against report-style truth (four classes).
#[derive(Clone, Debug, Serialize)]
pub struct ObservationScores {
    /// The observation.
    pub observation: String,
    /// Positive class.
    pub positive: ClassScore,
    /// Negative class.
    pub negative: ClassScore,
    /// Uncertain class.
    pub uncertain: ClassScore,
    /// Blank (not mentioned).
    pub blank: ClassScore,
    /// F1 of positive, negative and uncertain weighted by their support.
    pub weighted_f1: f64,
    /// Cohen's kappa over the four classes.
    pub kappa: f64,
}

/// Scores of one observation against binary image truth.
#[derive(Clone, Debug, Serialize)]
pub struct BinaryScores {
    /// The observation.
    pub observation: String,
    /// Positive class against binary truth.
    pub positive: ClassScore,
}

/// What `eval-labels` reports.
#[derive(Clone, Debug, Serialize)]
pub struct LabelMetrics {
    /// Rows compared.
    pub rows: u64,
    /// `report` (1/0/-1/blank truth) or `image` (binary truth).
    pub truth_kind: String,
    /// How rows were matched (id column, or position).
    pub matched_by: String,
    /// Report truth: per observation.
    pub observations: Vec<ObservationScores>,
    /// Report truth: F1 of every (observation, non-blank class) weighted by support — the headline number.
    pub weighted_f1: Option<f64>,
    /// Image truth: how uncertain predictions were mapped.
    pub uncertain_policy: Option<String>,
    /// Against binary truth, per observation.
    pub binary: Vec<BinaryScores>,
    /// Image truth: mean positive-class F1 over observations with positives.
    pub mean_positive_f1: Option<f64>,
}

fn class_index(l: Label) -> usize {
    Label::ALL
        .iter()
        .position(|x| *x == l)
        .expect("all labels listed")
}

/// Confusion counts per observation: `[truth][pred]` over the four classes.
#[derive(Clone, Debug, Default)]
pub struct Confusion {
    /// Per observation, truth class × predicted class.
    pub counts: [[[u64; 4]; 4]; N_OBS],
    /// Rows counted.
    pub rows: u64,
}

impl Confusion {
    /// Adds one (truth, prediction) pair of rows.
    pub fn add(&mut self, truth: &LabelRow, pred: &LabelRow) {
        self.rows += 1;
        for o in OBSERVATIONS {
            self.counts[o.index()][class_index(truth.get(o))][class_index(pred.get(o))] += 1;
        }
    }

    fn score(&self, o: Observation, class: Label) -> ClassScore {
        let m = &self.counts[o.index()];
        let c = class_index(class);
        let tp = m[c][c];
        let support: u64 = m[c].iter().sum();
        let predicted: u64 = (0..4).map(|t| m[t][c]).sum();
        ClassScore::from_counts(tp, predicted, support)
    }

    fn kappa(&self, o: Observation) -> f64 {
        let m = &self.counts[o.index()];
        let n = self.rows as f64;
        if n == 0.0 {
            return 0.0;
        }
        let agree: u64 = (0..4).map(|c| m[c][c]).sum();
        let po = agree as f64 / n;
        let pe: f64 = (0..4)
            .map(|c| {
                let t: u64 = m[c].iter().sum();
                let p: u64 = (0..4).map(|r| m[r][c]).sum();
                (t as f64 / n) * (p as f64 / n)
            })
            .sum();
        if (1.0 - pe).abs() < 1e-12 {
            if po == 1.0 { 1.0 } else { 0.0 }
        } else {
            (po - pe) / (1.0 - pe)
        }
    }

    /// Report-truth metrics.
    pub fn report_scores(&self) -> (Vec<ObservationScores>, f64) {
        let mut all_num = 0.0;
        let mut all_den = 0u64;
        let per = OBSERVATIONS
            .iter()
            .map(|&o| {
                let [positive, negative, uncertain, blank] = Label::ALL.map(|l| self.score(o, l));
                let (mut num, mut den) = (0.0, 0u64);
                for s in [positive, negative, uncertain] {
                    num += s.f1 * s.support as f64;
                    den += s.support;
                }
                all_num += num;
                all_den += den;
                ObservationScores {
                    observation: o.name().to_string(),
                    positive,
                    negative,
                    uncertain,
                    blank,
                    weighted_f1: if den == 0 { 1.0 } else { num / den as f64 },
                    kappa: self.kappa(o),
                }
            })
            .collect();
        (
            per,
            if all_den == 0 {
                0.0
            } else {
                all_num / all_den as f64
            },
        )
    }

    /// Image-truth metrics: truth positive = Positive; prediction positive = Positive, or Uncertain under `ones`.
    pub fn binary_scores(&self, policy: UncertaintyPolicy) -> (Vec<BinaryScores>, f64) {
        self.binary_scores_over(policy, &OBSERVATIONS)
    }

    /// [`Confusion::binary_scores`] over `observations` only; the mean is over those with positives.
    pub fn binary_scores_over(
        &self,
        policy: UncertaintyPolicy,
        observations: &[Observation],
    ) -> (Vec<BinaryScores>, f64) {
        let (p, u) = (class_index(Label::Positive), class_index(Label::Uncertain));
        let mut f1s = Vec::new();
        let per = observations
            .iter()
            .map(|&o| {
                let m = &self.counts[o.index()];
                let pred_pos = |c: usize| c == p || (c == u && policy == UncertaintyPolicy::Ones);
                let tp: u64 = (0..4).filter(|&c| pred_pos(c)).map(|c| m[p][c]).sum();
                let predicted: u64 = (0..4)
                    .flat_map(|t| (0..4).map(move |c| (t, c)))
                    .filter(|&(_, c)| pred_pos(c))
                    .map(|(t, c)| m[t][c])
                    .sum();
                let support: u64 = m[p].iter().sum();
                let s = ClassScore::from_counts(tp, predicted, support);
                if support > 0 {
                    f1s.push(s.f1);
                }
                BinaryScores {
                    observation: o.name().to_string(),
                    positive: s,
                }
            })
            .collect();
        let mean = if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        };
        (per, mean)
    }
}

fn read_all(path: &Path) -> Result<(Vec<LabeledRow>, bool)> {
    let mut s = read_labeled(path, OnBadRecord::Fail)?;
    let has_id = s.parser().id_column().is_some();
    let rows = s.by_ref().collect::<Result<Vec<_>>>()?;
    Ok((rows, has_id))
}

/// Compares a prediction CSV with a truth CSV. Rows are matched by id when both files have an id column, else by
/// position (then the row counts must agree). Truth made only of 0/1 values is scored as image truth with
/// `policy` for uncertain predictions; any other truth as report truth.
pub fn evaluate(pred: &Path, truth: &Path, policy: UncertaintyPolicy) -> Result<LabelMetrics> {
    if is_gold_file(truth)? {
        return evaluate_against_gold(pred, truth, policy);
    }
    let (pred_rows, pred_id) = read_all(pred)?;
    let (truth_rows, truth_id) = read_all(truth)?;
    let mut confusion = Confusion::default();
    let matched_by;
    if pred_id && truth_id {
        matched_by = "id".to_string();
        // Ids are matched in normal form (`label_key`): `CheXpert-v1.0/test/patient64741/study1` in one file
        // meets `patient64741/study1` in the other.
        let by_id = index_by_key(pred, &pred_rows, |r| {
            (r.id.as_deref().unwrap_or(""), r.line)
        })?;
        for t in &truth_rows {
            let id = t.id.as_deref().unwrap_or("");
            let p = by_id.get(&label_key(id)).ok_or_else(|| {
                Error::record(
                    truth,
                    t.line,
                    format!("id '{id}' has no prediction in {}", pred.display()),
                )
            })?;
            confusion.add(&t.labels, &p.labels);
        }
        if truth_rows.len() != pred_rows.len() {
            return Err(Error::format(
                pred,
                format!(
                    "{} predictions for {} truth rows in {}",
                    pred_rows.len(),
                    truth_rows.len(),
                    truth.display()
                ),
            ));
        }
    } else {
        matched_by = "position".to_string();
        if truth_rows.len() != pred_rows.len() {
            return Err(Error::format(
                pred,
                format!(
                    "{} rows but {} has {}; without id columns rows are matched by position",
                    pred_rows.len(),
                    truth.display(),
                    truth_rows.len()
                ),
            ));
        }
        for (t, p) in truth_rows.iter().zip(&pred_rows) {
            confusion.add(&t.labels, &p.labels);
        }
    }
    let image_truth = truth_rows.iter().all(|r| {
        r.labels
            .0
            .iter()
            .all(|l| matches!(l, Label::Positive | Label::Negative))
    });
    let mut m = LabelMetrics {
        rows: confusion.rows,
        truth_kind: if image_truth { "image" } else { "report" }.into(),
        matched_by,
        observations: Vec::new(),
        weighted_f1: None,
        uncertain_policy: None,
        binary: Vec::new(),
        mean_positive_f1: None,
    };
    if image_truth {
        let (b, mean) = confusion.binary_scores(policy);
        m.binary = b;
        m.mean_positive_f1 = Some(mean);
        m.uncertain_policy = Some(format!("{policy:?}").to_lowercase());
    } else {
        let (per, w) = confusion.report_scores();
        m.observations = per;
        m.weighted_f1 = Some(w);
    }
    Ok(m)
}

/// Whether `path` is a ChestX-ray14-category gold file (see [`super::gold`]).
fn is_gold_file(path: &Path) -> Result<bool> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(crate::io::open_read(path)?);
    let Some(first) = r.records().next() else {
        return Ok(false);
    };
    let first = first.map_err(|e| Error::csv(path, e))?;
    Ok(super::gold::is_gold_header(
        &first.iter().collect::<Vec<_>>(),
    ))
}

/// Predictions against ChestX-ray14-category gold (NIH ChestX-ray14, OpenI): positive-class precision, recall and
/// F1 of the ten mapped observations and their mean (the macro F1). Predictions are matched to gold rows by id; a
/// prediction whose id the gold lacks is an error naming it; gold rows without a prediction are left out.
fn evaluate_against_gold(
    pred: &Path,
    truth: &Path,
    policy: UncertaintyPolicy,
) -> Result<LabelMetrics> {
    let gold = super::gold::read(truth)?;
    let (pred_rows, pred_id) = read_all(pred)?;
    if !pred_id {
        return Err(Error::format(
            pred,
            format!(
                "{} is gold by id: the predictions need an id column (label a two-column id,text input)",
                truth.display()
            ),
        ));
    }
    let mut confusion = Confusion::default();
    for p in &pred_rows {
        let id = p.id.as_deref().unwrap_or("");
        let g = super::gold::find(&gold, id).ok_or_else(|| {
            Error::record(
                pred,
                p.line,
                format!("id '{id}' matches no row of {}", truth.display()),
            )
        })?;
        confusion.add(&g.labels, &p.labels);
    }
    if confusion.rows == 0 {
        return Err(Error::format(pred, "no predictions"));
    }
    let observations = super::gold::observations();
    let (binary, mean) = confusion.binary_scores_over(policy, &observations);
    Ok(LabelMetrics {
        rows: confusion.rows,
        truth_kind: format!(
            "ChestX-ray14-category ({} mapped observations; {} gold rows without a prediction left out)",
            observations.len(),
            (gold.len() as u64).saturating_sub(confusion.rows)
        ),
        matched_by: "id".into(),
        observations: Vec::new(),
        weighted_f1: None,
        uncertain_policy: Some(format!("{policy:?}").to_lowercase()),
        binary,
        mean_positive_f1: Some(mean),
    })
}

impl fmt::Display for LabelMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} rows matched by {}; {} truth",
            self.rows, self.matched_by, self.truth_kind
        )?;
        if let Some(w) = self.weighted_f1 {
            writeln!(
                f,
                "{:<28} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7}",
                "observation", "F1 pos", "F1 neg", "F1 unc", "F1 blk", "weighted", "kappa"
            )?;
            for o in &self.observations {
                writeln!(
                    f,
                    "{:<28} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>8.3} {:>7.3}",
                    o.observation,
                    o.positive.f1,
                    o.negative.f1,
                    o.uncertain.f1,
                    o.blank.f1,
                    o.weighted_f1,
                    o.kappa
                )?;
            }
            writeln!(
                f,
                "support-weighted F1 (positive, negative, uncertain): {w:.4}"
            )?;
        }
        if let Some(mean) = self.mean_positive_f1 {
            writeln!(
                f,
                "{:<28} {:>9} {:>7} {:>7} {:>8}",
                "observation", "precision", "recall", "F1", "support"
            )?;
            for b in &self.binary {
                writeln!(
                    f,
                    "{:<28} {:>9.3} {:>7.3} {:>7.3} {:>8}",
                    b.observation,
                    b.positive.precision,
                    b.positive.recall,
                    b.positive.f1,
                    b.positive.support
                )?;
            }
            writeln!(
                f,
                "mean positive-class F1 (uncertain → {}): {mean:.4} (macro F1 over {} observations with positives)",
                self.uncertain_policy.as_deref().unwrap_or(""),
                self.binary
                    .iter()
                    .filter(|b| b.positive.support > 0)
                    .count()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(Observation, Label)]) -> LabelRow {
        let mut r = LabelRow::default();
        for &(o, l) in pairs {
            r.set(o, l);
        }
        r
    }

    #[test]
    fn counts_f1_and_kappa_by_hand() {
        use Label::*;
        use Observation::Edema as E;
        let mut c = Confusion::default();
        // truth/pred: P/P, P/N, N/N, U/P, B/B
        for (t, p) in [
            (Positive, Positive),
            (Positive, Negative),
            (Negative, Negative),
            (Uncertain, Positive),
            (Blank, Blank),
        ] {
            c.add(&row(&[(E, t)]), &row(&[(E, p)]));
        }
        let pos = c.score(E, Positive);
        assert_eq!((pos.support, pos.predicted), (2, 2));
        assert!((pos.f1 - 0.5).abs() < 1e-12);
        let neg = c.score(E, Negative);
        assert!((neg.precision - 0.5).abs() < 1e-12 && (neg.recall - 1.0).abs() < 1e-12);
        // kappa: po = 3/5; pe = (2/5·2/5) + (1/5·2/5) + (1/5·0) + (1/5·1/5) = 7/25
        let k = c.kappa(E);
        assert!((k - (0.6 - 0.28) / 0.72).abs() < 1e-12, "{k}");
        let (per, w) = c.report_scores();
        let e = &per[E.index()];
        // weighted over pos (2, F1 .5), neg (1, F1 2/3), unc (1, F1 0)
        assert!((e.weighted_f1 - (2.0 * 0.5 + 2.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!(
            (w - e.weighted_f1).abs() < 1e-12,
            "only Edema has non-blank truth"
        );
        // Binary: uncertain counts as positive under `ones`.
        let (b, _) = c.binary_scores(UncertaintyPolicy::Ones);
        assert_eq!(b[E.index()].positive.predicted, 2);
    }

    #[test]
    fn ids_match_in_normal_form_and_a_repeated_id_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<&str> = OBSERVATIONS.iter().map(|o| o.name()).collect();
        let file = |name: &str, ids: &[&str]| {
            let mut t = format!("Study,{}\n", names.join(","));
            for id in ids {
                t.push_str(&format!("{id},{}\n", vec!["1"; 14].join(",")));
            }
            let p = dir.path().join(name);
            std::fs::write(&p, t).unwrap();
            p
        };
        let truth = file(
            "truth.csv",
            &[
                "CheXpert-v1.0/test/patient64741/study1",
                "CheXpert-v1.0/test/patient64742/study1",
            ],
        );
        let pred = file(
            "pred.csv",
            &["patient64742/study1", "test/patient64741/study1/"],
        );
        let m = evaluate(&pred, &truth, UncertaintyPolicy::Ones).unwrap();
        assert_eq!(m.rows, 2);
        let twice = file(
            "twice.csv",
            &[
                "patient64741/study1",
                "CheXpert-v1.0/test/patient64741/study1",
            ],
        );
        let e = evaluate(&twice, &truth, UncertaintyPolicy::Ones)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "line 3: id 'CheXpert-v1.0/test/patient64741/study1' again (first on line 2)"
            ),
            "{e}"
        );
    }
}
