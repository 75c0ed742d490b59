//! Paired comparison of two classifiers scored on the same images: the AUROC difference with a paired stratified
//! bootstrap interval and p-value (both classifiers see the same resampled images), and DeLong's test
//! (DeLong, DeLong & Clarke-Pearson 1988), computed from mid-ranks.

use serde::{Deserialize, Serialize};

use super::bootstrap::{Ranked, percentile_interval, resample_rng};

/// Mid-ranks (1-based; ties share their mean rank) of `x`.
pub fn midranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && x[order[j]] == x[order[i]] {
            j += 1;
        }
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

/// DeLong's structural components of one classifier: per-positive and per-negative placement values.
fn placements(scores: &[f64], labels: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let pos: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, l)| **l)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|(_, l)| !**l)
        .map(|(s, _)| *s)
        .collect();
    let (m, n) = (pos.len() as f64, neg.len() as f64);
    let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
    let r_all = midranks(&all);
    let (r_pos, r_neg) = (midranks(&pos), midranks(&neg));
    let v10 = (0..pos.len()).map(|i| (r_all[i] - r_pos[i]) / n).collect();
    let v01 = (0..neg.len())
        .map(|j| 1.0 - (r_all[pos.len() + j] - r_neg[j]) / m)
        .collect();
    (v10, v01)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn cov(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() as f64 - 1.0)
}

/// Complementary error function (Chebyshev fit; fractional error below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// DeLong's test of two correlated AUROCs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeLong {
    #[serde(deserialize_with = "f64_or_nan")]
    /// AUROC of classifier A.
    pub auroc_a: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    /// AUROC of classifier B.
    pub auroc_b: f64,
    /// Variance of `auroc_a − auroc_b`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub var_diff: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    /// The difference over its standard error.
    pub z: f64,
    /// Two-sided p-value.
    #[serde(deserialize_with = "f64_or_nan")]
    pub p: f64,
}

/// DeLong's test on two score vectors for the same labelled samples; `None` without at least two positives and two
/// negatives.
pub fn delong(a: &[f64], b: &[f64], labels: &[bool]) -> Option<DeLong> {
    assert!(a.len() == labels.len() && b.len() == labels.len());
    let m = labels.iter().filter(|&&l| l).count();
    let n = labels.len() - m;
    if m < 2 || n < 2 {
        return None;
    }
    let (a10, a01) = placements(a, labels);
    let (b10, b01) = placements(b, labels);
    let (auroc_a, auroc_b) = (mean(&a10), mean(&b10));
    let s10 = [cov(&a10, &a10), cov(&b10, &b10), cov(&a10, &b10)];
    let s01 = [cov(&a01, &a01), cov(&b01, &b01), cov(&a01, &b01)];
    let var = |k: usize| s10[k] / m as f64 + s01[k] / n as f64;
    let var_diff = var(0) + var(1) - 2.0 * var(2);
    let diff = auroc_a - auroc_b;
    let (z, p) = if var_diff > 0.0 {
        let z = diff / var_diff.sqrt();
        (z, erfc(z.abs() / std::f64::consts::SQRT_2))
    } else if diff == 0.0 {
        (0.0, 1.0)
    } else {
        (diff.signum() * f64::INFINITY, 0.0)
    };
    Some(DeLong {
        auroc_a,
        auroc_b,
        var_diff,
        z,
        p,
    })
}

/// Classifier A against classifier B on the same images.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    #[serde(deserialize_with = "f64_or_nan")]
    /// AUROC of classifier A.
    pub auroc_a: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    /// AUROC of classifier B.
    pub auroc_b: f64,
    /// `auroc_a − auroc_b`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub diff: f64,
    /// Paired stratified bootstrap percentile interval of the difference.
    #[serde(deserialize_with = "pair_or_nan")]
    pub ci: (f64, f64),
    /// Two-sided bootstrap p-value: twice the smaller share of resampled differences on either side of 0.
    #[serde(deserialize_with = "f64_or_nan")]
    pub p_bootstrap: f64,
    /// DeLong's test of the same difference.
    pub delong: DeLong,
}

/// JSON writes a NaN as `null`: read it back as NaN (a test without variance has no p-value).
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`f64_or_nan`] for an interval.
fn pair_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(f64, f64), D::Error> {
    let (a, b) = <(Option<f64>, Option<f64>)>::deserialize(d)?;
    Ok((a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN)))
}

/// Compares two classifiers' scores on the same labelled images.
pub fn paired(
    a: &[f32],
    b: &[f32],
    labels: &[bool],
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<Paired> {
    use rayon::prelude::*;
    let (ra, rb) = (Ranked::new(a, labels), Ranked::new(b, labels));
    let ones = vec![1; labels.len()];
    let (auroc_a, auroc_b) = (ra.weighted_auroc(&ones)?, rb.weighted_auroc(&ones)?);
    let diffs: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map_init(Vec::new, |w, k| {
            ra.resample(&mut resample_rng(seed, k), w);
            match (ra.weighted_auroc(w), rb.weighted_auroc(w)) {
                (Some(x), Some(y)) => x - y,
                _ => f64::NAN,
            }
        })
        .collect();
    let finite = diffs.iter().filter(|d| d.is_finite()).count().max(1) as f64;
    let below = diffs.iter().filter(|&&d| d <= 0.0).count() as f64 / finite;
    let above = diffs.iter().filter(|&&d| d >= 0.0).count() as f64 / finite;
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    Some(Paired {
        auroc_a,
        auroc_b,
        diff: auroc_a - auroc_b,
        ci: percentile_interval(diffs, level)?,
        p_bootstrap: (2.0 * below.min(above)).min(1.0),
        delong: delong(&wide(a), &wide(b), labels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_1),
            (2.5, 4.069_520_174_449_59e-4),
            (-1.0, 1.842_700_792_949_715),
        ] {
            assert!(
                ((erfc(x) - want) / want).abs() < 2e-7,
                "erfc({x}) = {}",
                erfc(x)
            );
        }
    }

    #[test]
    fn identical_classifiers_do_not_differ() {
        let labels: Vec<bool> = (0..60).map(|i| i % 4 == 0).collect();
        let s: Vec<f32> = (0..60)
            .map(|i| ((i * 13) % 17) as f32 + if i % 4 == 0 { 6.0 } else { 0.0 })
            .collect();
        let p = paired(&s, &s, &labels, 200, 0.95, 3).unwrap();
        assert_eq!((p.diff, p.ci, p.p_bootstrap), (0.0, (0.0, 0.0), 1.0));
        assert_eq!((p.delong.z, p.delong.p), (0.0, 1.0));
    }
}
