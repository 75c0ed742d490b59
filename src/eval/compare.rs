//! Paired comparison of two classifiers scored on the same images: the AUROC difference with a paired stratified
//! bootstrap interval and p-value (both classifiers see the same resampled images), and DeLong's test
//! (DeLong, DeLong & Clarke-Pearson 1988), computed from mid-ranks. With several training replicates per source the
//! bootstrap is two-level: each resample draws the replicates (with replacement, the same replicate indices for
//! both sources) as well as the images, so the interval holds the run-to-run spread of training too. Holm's
//! step-down adjustment corrects a family of p-values for multiple comparisons.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::bootstrap::{Ranked, image_weights, percentile_interval, resample_rng};

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
    /// DeLong's test of the same difference (one replicate per source only: DeLong's variance is over test
    /// images, not training runs).
    #[serde(default)]
    pub delong: Option<DeLong>,
}

/// NaN, for a p-value not computed (`serde(default)`).
pub(crate) fn nan() -> f64 {
    f64::NAN
}

/// JSON writes a NaN as `null`: read it back as NaN (a test without variance has no p-value).
pub(crate) fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`f64_or_nan`] for an interval.
pub(crate) fn pair_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(f64, f64), D::Error> {
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
    paired_replicates(&[a], &[b], labels, resamples, level, seed)
}

/// The replicate indices of resample `b` among `n` replicates: all of them, in order, for one replicate (so that a
/// single run's resamples are exactly the one-level bootstrap's), else `n` draws with replacement from a stream of
/// their own (the image draws of resample `b` stay those of [`resample_rng`]).
pub fn replicate_draw(n: usize, seed: u64, b: u32) -> Vec<usize> {
    if n <= 1 {
        return (0..n).collect();
    }
    let mut rng = resample_rng(seed ^ 0x5245_504c_4943_4154, b);
    (0..n).map(|_| rng.random_range(0..n)).collect()
}

/// Each replicate's scores ranked against the same labels.
pub(super) fn rank_each(replicates: &[&[f32]], labels: &[bool]) -> Vec<Ranked> {
    replicates.iter().map(|s| Ranked::new(s, labels)).collect()
}

/// Mean over `draw` of each replicate's AUROC under `weights`; NaN when one is undefined.
pub(super) fn mean_over(ranked: &[Ranked], draw: &[usize], weights: &[u32]) -> f64 {
    let mut sum = 0.0;
    for &r in draw {
        match ranked[r].weighted_auroc(weights) {
            Some(x) => sum += x,
            None => return f64::NAN,
        }
    }
    sum / draw.len() as f64
}

/// One label source's mean AUROC over its replicates' scores on the same labelled images, with a two-level
/// bootstrap percentile interval: each resample draws the replicate indices ([`replicate_draw`]) and stratified
/// images ([`resample_rng`]), so the interval holds training noise as well as test-set sampling. With one
/// replicate it is exactly [`super::bootstrap::auroc_ci`]. `None` without replicates or when an AUROC is undefined.
pub fn replicates_auroc_ci(
    replicates: &[&[f32]],
    labels: &[bool],
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<(f64, (f64, f64))> {
    use rayon::prelude::*;
    if replicates.is_empty() {
        return None;
    }
    let ranked = rank_each(replicates, labels);
    let all: Vec<usize> = (0..replicates.len()).collect();
    let point = mean_over(&ranked, &all, &vec![1; labels.len()]);
    if !point.is_finite() {
        return None;
    }
    let stats: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map_init(Vec::new, |w, k| {
            ranked[0].resample(&mut resample_rng(seed, k), w);
            mean_over(&ranked, &replicate_draw(replicates.len(), seed, k), w)
        })
        .collect();
    Some((point, percentile_interval(stats, level)?))
}

/// Two-sided bootstrap p-value of a difference: twice the smaller share of resampled differences on either side of
/// 0 (NaN resamples left out).
fn two_sided_p(diffs: &[f64]) -> f64 {
    let finite = diffs.iter().filter(|d| d.is_finite()).count().max(1) as f64;
    let below = diffs.iter().filter(|&&d| d <= 0.0).count() as f64 / finite;
    let above = diffs.iter().filter(|&&d| d >= 0.0).count() as f64 / finite;
    (2.0 * below.min(above)).min(1.0)
}

/// Compares two label sources' classifiers — `a[r]` and `b[r]` are replicate `r`'s scores, replicates paired by
/// index — on the same labelled images: the difference of their mean AUROCs over replicates, with a two-level
/// paired bootstrap (replicate indices and stratified images drawn in each resample) interval and p-value. With one
/// replicate each it is the one-level paired bootstrap, with DeLong's test. `None` when a source has no replicate,
/// their counts differ, or an AUROC is undefined.
pub fn paired_replicates(
    a: &[&[f32]],
    b: &[&[f32]],
    labels: &[bool],
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<Paired> {
    use rayon::prelude::*;
    if a.is_empty() || a.len() != b.len() {
        return None;
    }
    let (ra, rb) = (rank_each(a, labels), rank_each(b, labels));
    let all: Vec<usize> = (0..a.len()).collect();
    let ones = vec![1; labels.len()];
    let (auroc_a, auroc_b) = (mean_over(&ra, &all, &ones), mean_over(&rb, &all, &ones));
    if !(auroc_a.is_finite() && auroc_b.is_finite()) {
        return None;
    }
    let diffs: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map_init(Vec::new, |w, k| {
            ra[0].resample(&mut resample_rng(seed, k), w);
            let draw = replicate_draw(a.len(), seed, k);
            mean_over(&ra, &draw, w) - mean_over(&rb, &draw, w)
        })
        .collect();
    let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let delong = match (a, b) {
        ([a], [b]) => Some(delong(&wide(a), &wide(b), labels)?),
        _ => None,
    };
    Some(Paired {
        auroc_a,
        auroc_b,
        diff: auroc_a - auroc_b,
        p_bootstrap: two_sided_p(&diffs),
        ci: percentile_interval(diffs, level)?,
        delong,
    })
}

/// One observation of a two-source comparison over a common image set: which of the set's images have a
/// defined label, those labels, and each source's replicates' scores on them.
pub struct ObservationArms<'a> {
    /// Indices (into the common image set) of the images scored for this observation.
    pub images: &'a [u32],
    /// Their labels.
    pub labels: &'a [bool],
    /// Source A's scores per replicate.
    pub a: Vec<&'a [f32]>,
    /// Source B's scores per replicate.
    pub b: Vec<&'a [f32]>,
}

/// The overall effect of one source against another: the mean over observations of their AUROC differences.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// Observations averaged.
    pub observations: usize,
    /// Mean AUROC(a) − AUROC(b) over the observations.
    #[serde(deserialize_with = "f64_or_nan")]
    pub diff: f64,
    /// Bootstrap percentile interval (images resampled as wholes, with all their labels; replicates by index).
    #[serde(deserialize_with = "pair_or_nan")]
    pub ci: (f64, f64),
    /// Two-sided bootstrap p-value.
    #[serde(deserialize_with = "f64_or_nan")]
    pub p_bootstrap: f64,
}

/// The mean AUROC difference over `obs` with its bootstrap interval: each resample draws `n_images` images of the
/// common set with replacement (an image brings every observation's label, so the observations' correlation is
/// kept) and the replicate indices; a resample in which some observation has one class only is left out. `None`
/// without observations.
pub fn overall_effect(
    obs: &[ObservationArms],
    n_images: usize,
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<Effect> {
    use rayon::prelude::*;
    let reps = obs.first()?.a.len();
    if obs.iter().any(|o| o.a.len() != reps || o.b.len() != reps) || reps == 0 {
        return None;
    }
    let ranked: Vec<(Vec<Ranked>, Vec<Ranked>)> = obs
        .iter()
        .map(|o| (rank_each(&o.a, o.labels), rank_each(&o.b, o.labels)))
        .collect();
    let diff_under = |draw: &[usize], image_w: Option<&[u32]>, w: &mut Vec<u32>| -> f64 {
        let mut sum = 0.0;
        for (o, (ra, rb)) in obs.iter().zip(&ranked) {
            w.clear();
            match image_w {
                Some(iw) => w.extend(o.images.iter().map(|&i| iw[i as usize])),
                None => w.resize(o.labels.len(), 1),
            }
            sum += mean_over(ra, draw, w) - mean_over(rb, draw, w);
        }
        sum / obs.len() as f64
    };
    let all: Vec<usize> = (0..reps).collect();
    let diff = diff_under(&all, None, &mut Vec::new());
    if !diff.is_finite() {
        return None;
    }
    let diffs: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(iw, w), k| {
                image_weights(seed ^ 0x4f56_4552_414c_4c00, k, n_images, iw);
                diff_under(&replicate_draw(reps, seed, k), Some(iw), w)
            },
        )
        .collect();
    Some(Effect {
        observations: obs.len(),
        diff,
        p_bootstrap: two_sided_p(&diffs),
        ci: percentile_interval(diffs, level)?,
    })
}

/// Holm's step-down adjustment of a family of p-values (Holm 1979): the k-th smallest of m is multiplied by
/// m − k + 1, kept at least as large as the one before, and capped at 1. NaN p-values (tests without a result) are
/// not in the family and stay NaN.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    order.sort_by(|&x, &y| p[x].total_cmp(&p[y]));
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
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
        let d = p.delong.unwrap();
        assert_eq!((d.z, d.p), (0.0, 1.0));
    }

    #[test]
    fn holm_steps_down_and_keeps_order() {
        // m = 4 finite p-values: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → 0.06 (monotone).
        let adj = holm(&[0.01, 0.04, f64::NAN, 0.03, 0.005]);
        let want = [0.03, 0.06, f64::NAN, 0.06, 0.02];
        for (g, w) in adj.iter().zip(want) {
            assert!(g.is_nan() && w.is_nan() || (g - w).abs() < 1e-12, "{adj:?}");
        }
        // Never below an earlier adjusted value: 0.5·2 = 1 then max(1, 0.9·1).
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert_eq!(holm(&[0.2, 0.01]), vec![0.2, 0.02]);
        assert!(holm(&[]).is_empty());
    }

    /// Labels and two score sets of 200 images: `good` separates the classes better than `weak`.
    fn two_classifiers(shift: f32) -> (Vec<bool>, Vec<f32>, Vec<f32>) {
        let labels: Vec<bool> = (0..200).map(|i| i % 3 == 0).collect();
        let noise = |i: usize, k: usize| ((i * k + 7) % 97) as f32 / 97.0;
        let good = (0..200)
            .map(|i| noise(i, 31) + if labels[i] { 0.6 + shift } else { 0.0 })
            .collect();
        let weak = (0..200)
            .map(|i| noise(i, 53) + if labels[i] { 0.2 } else { 0.0 })
            .collect();
        (labels, good, weak)
    }

    #[test]
    fn identical_replicates_give_the_one_level_bootstrap() {
        let (y, good, weak) = two_classifiers(0.0);
        let one = paired(&good, &weak, &y, 300, 0.95, 5).unwrap();
        let three = paired_replicates(
            &[good.as_slice(); 3],
            &[weak.as_slice(); 3],
            &y,
            300,
            0.95,
            5,
        )
        .unwrap();
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(
            close(three.diff, one.diff)
                && close(three.ci.0, one.ci.0)
                && close(three.ci.1, one.ci.1)
        );
        assert_eq!(three.p_bootstrap, one.p_bootstrap);
        assert!(one.delong.is_some() && three.delong.is_none());
        // Unequal replicate counts are not paired.
        assert!(
            paired_replicates(&[good.as_slice()], &[weak.as_slice(); 2], &y, 10, 0.95, 5).is_none()
        );
    }

    #[test]
    fn replicate_spread_widens_the_interval_and_the_mean_is_over_replicates() {
        let (y, good, weak) = two_classifiers(0.0);
        let (_, better, _) = two_classifiers(0.3);
        let single = paired(&good, &weak, &y, 400, 0.95, 2).unwrap();
        let two = paired_replicates(
            &[good.as_slice(), &better],
            &[weak.as_slice(), &weak],
            &y,
            400,
            0.95,
            2,
        )
        .unwrap();
        let a1 = Ranked::new(&better, &y).weighted_auroc(&[1; 200]).unwrap();
        assert!((two.auroc_a - (single.auroc_a + a1) / 2.0).abs() < 1e-12);
        let width = |p: &Paired| p.ci.1 - p.ci.0;
        assert!(width(&two) > width(&single), "{two:?} vs {single:?}");
        // Draws are with replacement, seeded, and all indices in range.
        let d = replicate_draw(5, 1, 3);
        assert_eq!(d, replicate_draw(5, 1, 3));
        assert!(d.len() == 5 && d.iter().all(|&r| r < 5));
        assert_eq!(replicate_draw(1, 1, 3), vec![0]);
    }

    #[test]
    fn one_source_over_replicates_is_the_one_level_interval_for_one_and_wider_for_spread() {
        let (y, good, weak) = two_classifiers(0.0);
        let (_, better, _) = two_classifiers(0.3);
        let one = super::super::bootstrap::auroc_ci(&good, &y, 300, 0.95, 9).unwrap();
        assert_eq!(replicates_auroc_ci(&[&good], &y, 300, 0.95, 9), Some(one));
        // Identical replicates: the same point and the same interval.
        let same = replicates_auroc_ci(&[good.as_slice(); 2], &y, 300, 0.95, 9).unwrap();
        assert!(
            (same.0 - one.0).abs() < 1e-12 && same.1 == one.1,
            "{same:?} vs {one:?}"
        );
        // Replicates that differ: the mean of their AUROCs, and an interval that holds the spread.
        let spread =
            replicates_auroc_ci(&[good.as_slice(), &weak, &better], &y, 300, 0.95, 9).unwrap();
        let aurocs: Vec<f64> = [&good, &weak, &better]
            .iter()
            .map(|s| Ranked::new(s, &y).weighted_auroc(&[1; 200]).unwrap())
            .collect();
        assert!((spread.0 - aurocs.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        let width = |c: (f64, f64)| c.1 - c.0;
        assert!(
            width(spread.1) > 2.0 * width(one.1),
            "{spread:?} vs {one:?}"
        );
        assert!(replicates_auroc_ci(&[], &y, 10, 0.95, 9).is_none());
    }

    #[test]
    fn the_overall_effect_is_the_mean_difference_over_observations() {
        let (y, good, weak) = two_classifiers(0.0);
        let images: Vec<u32> = (0..200).collect();
        // Observation 2 labels only the first 150 images, with the classifiers swapped.
        let (y2, idx2) = (y[..150].to_vec(), images[..150].to_vec());
        let arms = [
            ObservationArms {
                images: &images,
                labels: &y,
                a: vec![&good[..]],
                b: vec![&weak[..]],
            },
            ObservationArms {
                images: &idx2,
                labels: &y2,
                a: vec![&weak[..150]],
                b: vec![&good[..150]],
            },
        ];
        let e = overall_effect(&arms, 200, 300, 0.95, 4).unwrap();
        let d1 = paired(&good, &weak, &y, 10, 0.95, 4).unwrap().diff;
        let d2 = paired(&weak[..150], &good[..150], &y2, 10, 0.95, 4)
            .unwrap()
            .diff;
        assert!((e.diff - (d1 + d2) / 2.0).abs() < 1e-12, "{e:?}");
        assert!(e.ci.0 <= e.diff && e.diff <= e.ci.1, "{e:?}");
        assert_eq!(e.observations, 2);
        // Only observation 1: a clear effect with a small p-value; it is seeded.
        let e1 = overall_effect(&arms[..1], 200, 300, 0.95, 4).unwrap();
        assert!(e1.ci.0 > 0.0 && e1.p_bootstrap < 0.01, "{e1:?}");
        assert_eq!(e1, overall_effect(&arms[..1], 200, 300, 0.95, 4).unwrap());
        assert!(overall_effect(&[], 200, 10, 0.95, 4).is_none());
    }
}
