//! The dose–response of a study: classifier AUROC against label quality. Sources whose labels were corrupted at
//! known rates from one base (and the base) trace the curve of *random* label errors; a least-squares line through
//! their (label F1, mean test AUROC) points gives the slope — AUROC per 0.1 label F1 — and every other source (a
//! real labeler) is placed against it: its residual says whether its errors cost more (negative) or less
//! (positive) AUROC than random errors that leave the same label F1.
//!
//! Intervals come from a bootstrap over test images (each resample draws whole images, with all their labels, and
//! every source's replicate indices), refitting the line in every resample. Label F1 is held fixed: it is measured
//! on every study of the dataset, not on the test images.

use serde::{Deserialize, Serialize};

use super::bootstrap::{Ranked, percentile_interval};
use super::compare::{f64_or_nan, mean_over, pair_or_nan, rank_each, replicate_draw};

/// One observation of one source on the common image set: the images with a defined label (indices into the set),
/// their labels, and each replicate's scores on them.
pub struct ObservationScores<'a> {
    /// Indices (into the common image set) of the images scored for this observation.
    pub images: &'a [u32],
    /// Their labels.
    pub labels: &'a [bool],
    /// The source's scores per replicate.
    pub replicates: Vec<&'a [f32]>,
}

/// A source of the dose–response: its label F1, whether it is on the curve of random errors, and its scores.
pub struct DoseSource<'a> {
    /// The label source.
    pub name: String,
    /// Its labels' F1 against the image truth.
    pub label_f1: f64,
    /// Corrupted from a base at known rates, or the base itself.
    pub on_curve: bool,
    /// Its scores, per observation.
    pub observations: Vec<ObservationScores<'a>>,
}

/// A source's place in the dose–response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DosePoint {
    /// The label source.
    pub source: String,
    /// Its labels' mean positive F1 against the image truth.
    pub label_f1: f64,
    /// Its mean test AUROC over observations (and replicates).
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean_auroc: f64,
    /// On the curve of random errors (a corrupted source or its base).
    pub on_curve: bool,
    /// The line's AUROC at its label F1.
    #[serde(deserialize_with = "f64_or_nan")]
    pub expected: f64,
    /// `mean_auroc − expected`: below 0, its label errors cost more than random ones of the same F1.
    #[serde(deserialize_with = "f64_or_nan")]
    pub residual: f64,
    /// Bootstrap percentile interval of the residual.
    #[serde(deserialize_with = "pair_or_nan")]
    pub residual_ci: (f64, f64),
}

/// The fitted dose–response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoseResponse {
    /// Test images every source scored.
    pub images: usize,
    /// The line through the curve's points.
    #[serde(flatten)]
    pub line: Line,
    /// Every source, by label F1.
    pub points: Vec<DosePoint>,
    /// The same fit for each observation alone: its AUROC against its labels' F1.
    #[serde(default)]
    pub per_observation: Vec<ObservationDose>,
}

/// A fitted dose–response line: mean test AUROC = intercept + slope × label F1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The line's AUROC at label F1 0.
    #[serde(deserialize_with = "f64_or_nan")]
    pub intercept: f64,
    /// AUROC per unit of label F1 (per 0.1: a tenth of it).
    #[serde(deserialize_with = "f64_or_nan")]
    pub slope: f64,
    /// Bootstrap percentile interval of the slope.
    #[serde(deserialize_with = "pair_or_nan")]
    pub slope_ci: (f64, f64),
}

/// One observation's dose–response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservationDose {
    /// The observation.
    pub observation: String,
    /// Its line.
    #[serde(flatten)]
    pub line: Line,
}

/// A source's scores ranked once per observation and replicate, for mean AUROCs under resampled images.
struct RankedSource<'a> {
    observations: &'a [ObservationScores<'a>],
    ranked: Vec<Vec<Ranked>>,
}

impl<'a> RankedSource<'a> {
    fn new(observations: &'a [ObservationScores<'a>]) -> Self {
        let ranked = observations
            .iter()
            .map(|o| rank_each(&o.replicates, o.labels))
            .collect();
        RankedSource {
            observations,
            ranked,
        }
    }

    /// The mean over observations of the mean AUROC over replicates, under image weights `iw` (None: every image
    /// once) and resample `k`'s replicate draws (None: every replicate once); NaN when an AUROC is undefined.
    fn mean(&self, iw: Option<&[u32]>, k: Option<u32>, seed: u64, w: &mut Vec<u32>) -> f64 {
        let mut sum = 0.0;
        for (o, reps) in self.observations.iter().zip(&self.ranked) {
            w.clear();
            match iw {
                Some(iw) => w.extend(o.images.iter().map(|&i| iw[i as usize])),
                None => w.resize(o.labels.len(), 1),
            }
            let draw: Vec<usize> = match k {
                Some(k) => replicate_draw(reps.len(), seed, k),
                None => (0..reps.len()).collect(),
            };
            sum += mean_over(reps, &draw, w);
        }
        sum / self.observations.len() as f64
    }
}

/// Resample `k`'s image weights for the dose–response (a stream of its own).
fn image_weights(seed: u64, k: u32, n_images: usize, iw: &mut Vec<u32>) {
    super::bootstrap::image_weights(seed ^ 0x444f_5345_5245_5350, k, n_images, iw);
}

/// One source's mean AUROC over its observations and replicates, with a bootstrap percentile interval that draws
/// whole images of the common set and the replicate indices in each resample (a resample in which an observation
/// has one class only is left out). `None` without observations or when an AUROC is undefined.
pub fn mean_auroc_ci(
    observations: &[ObservationScores],
    n_images: usize,
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<(f64, (f64, f64))> {
    use rayon::prelude::*;
    if observations.is_empty() || observations.iter().any(|o| o.replicates.is_empty()) {
        return None;
    }
    let r = RankedSource::new(observations);
    let point = r.mean(None, None, seed, &mut Vec::new());
    if !point.is_finite() {
        return None;
    }
    let stats: Vec<f64> = (0..resamples)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(iw, w), k| {
                image_weights(seed, k, n_images, iw);
                r.mean(Some(iw), Some(k), seed, w)
            },
        )
        .collect();
    Some((point, percentile_interval(stats, level)?))
}

/// Least-squares line `(intercept, slope)` through `points`; `None` with fewer than two distinct x.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if points.len() < 2 || sxx <= 1e-12 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Fits the dose–response of `sources` on a common set of `n_images` test images, with `resamples` bootstrap
/// resamples at `level`. `None` when the curve has fewer than two distinct label F1 values or an AUROC is
/// undefined.
pub fn dose_response(
    sources: &[DoseSource],
    n_images: usize,
    resamples: u32,
    level: f64,
    seed: u64,
) -> Option<DoseResponse> {
    use rayon::prelude::*;
    let ranked: Vec<RankedSource> = sources
        .iter()
        .map(|s| RankedSource::new(&s.observations))
        .collect();
    let means = |iw: Option<&[u32]>, k: Option<u32>, w: &mut Vec<u32>| -> Vec<f64> {
        ranked.iter().map(|r| r.mean(iw, k, seed, w)).collect()
    };
    let fit = |y: &[f64]| -> Option<(f64, f64)> {
        let pts: Vec<(f64, f64)> = sources
            .iter()
            .zip(y)
            .filter(|(s, _)| s.on_curve)
            .map(|(s, &y)| (s.label_f1, y))
            .collect();
        if pts.iter().any(|p| !p.1.is_finite()) {
            return None;
        }
        fit_line(&pts)
    };
    let point = means(None, None, &mut Vec::new());
    let (intercept, slope) = fit(&point)?;
    // Per resample: the slope, then every source's residual.
    let draws: Vec<Option<(f64, Vec<f64>)>> = (0..resamples)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(iw, w), k| {
                image_weights(seed, k, n_images, iw);
                let y = means(Some(iw), Some(k), w);
                let (a, b) = fit(&y)?;
                let res = sources
                    .iter()
                    .zip(&y)
                    .map(|(s, &y)| y - (a + b * s.label_f1))
                    .collect();
                Some((b, res))
            },
        )
        .collect();
    let kept: Vec<&(f64, Vec<f64>)> = draws.iter().flatten().collect();
    let slope_ci = percentile_interval(kept.iter().map(|d| d.0).collect(), level)?;
    let mut points: Vec<DosePoint> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let expected = intercept + slope * s.label_f1;
            DosePoint {
                source: s.name.clone(),
                label_f1: s.label_f1,
                mean_auroc: point[i],
                on_curve: s.on_curve,
                expected,
                residual: point[i] - expected,
                residual_ci: percentile_interval(kept.iter().map(|d| d.1[i]).collect(), level)
                    .unwrap_or((f64::NAN, f64::NAN)),
            }
        })
        .collect();
    points.sort_by(|a, b| a.label_f1.total_cmp(&b.label_f1));
    Some(DoseResponse {
        images: n_images,
        line: Line {
            intercept,
            slope,
            slope_ci,
        },
        points,
        per_observation: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_exact_points_is_found() {
        let (a, b) = fit_line(&[(0.5, 0.7), (0.75, 0.8), (1.0, 0.9)]).unwrap();
        assert!(
            (a - 0.5).abs() < 1e-12 && (b - 0.4).abs() < 1e-12,
            "{a} {b}"
        );
        assert!(fit_line(&[(0.5, 0.7), (0.5, 0.8)]).is_none());
        assert!(fit_line(&[(0.5, 0.7)]).is_none());
    }

    /// 300 images, one observation; scores that separate the classes by `signal`.
    fn scores(signal: f32, noise: usize) -> Vec<f32> {
        (0..300)
            .map(|i| ((i * noise + 3) % 101) as f32 / 101.0 + if i % 4 == 0 { signal } else { 0.0 })
            .collect()
    }

    /// One observation's scores on all of `images`.
    fn one_observation<'a>(
        images: &'a [u32],
        labels: &'a [bool],
        replicates: Vec<&'a [f32]>,
    ) -> Vec<ObservationScores<'a>> {
        vec![ObservationScores {
            images,
            labels,
            replicates,
        }]
    }

    #[test]
    fn a_sources_mean_auroc_interval_holds_its_replicates_spread() {
        let labels: Vec<bool> = (0..300).map(|i| i % 4 == 0).collect();
        let images: Vec<u32> = (0..300).collect();
        let (good, weak) = (scores(0.6, 7), scores(0.2, 11));
        let auroc = |s: &[f32]| Ranked::new(s, &labels).weighted_auroc(&[1; 300]).unwrap();
        let one = mean_auroc_ci(
            &one_observation(&images, &labels, vec![&good]),
            300,
            300,
            0.95,
            2,
        )
        .unwrap();
        assert!((one.0 - auroc(&good)).abs() < 1e-12);
        assert!(one.1.0 < one.0 && one.0 < one.1.1, "{one:?}");
        let both = one_observation(&images, &labels, vec![&good, &weak]);
        let two = mean_auroc_ci(&both, 300, 300, 0.95, 2).unwrap();
        assert!((two.0 - (auroc(&good) + auroc(&weak)) / 2.0).abs() < 1e-12);
        assert!(two.1.1 - two.1.0 > one.1.1 - one.1.0, "{two:?} vs {one:?}");
        assert_eq!(mean_auroc_ci(&both, 300, 300, 0.95, 2), Some(two));
        assert!(mean_auroc_ci(&[], 300, 10, 0.95, 2).is_none());
    }

    #[test]
    fn the_curve_gives_the_slope_and_places_the_other_sources() {
        let labels: Vec<bool> = (0..300).map(|i| i % 4 == 0).collect();
        let images: Vec<u32> = (0..300).collect();
        // The curve: label F1 1.0, 0.8, 0.6 with falling separation; a labeler at F1 0.8 that does worse.
        let curve = [
            (1.0, scores(0.6, 7)),
            (0.8, scores(0.4, 11)),
            (0.6, scores(0.2, 13)),
        ];
        let labeler = scores(0.1, 17);
        let mut sources: Vec<DoseSource> = curve
            .iter()
            .enumerate()
            .map(|(i, (f1, s))| DoseSource {
                name: format!("c{i}"),
                label_f1: *f1,
                on_curve: true,
                observations: vec![ObservationScores {
                    images: &images,
                    labels: &labels,
                    replicates: vec![s],
                }],
            })
            .collect();
        sources.push(DoseSource {
            name: "labeler".into(),
            label_f1: 0.8,
            on_curve: false,
            observations: vec![ObservationScores {
                images: &images,
                labels: &labels,
                replicates: vec![&labeler],
            }],
        });
        let d = dose_response(&sources, 300, 300, 0.95, 1).unwrap();
        let auroc = |s: &[f32]| Ranked::new(s, &labels).weighted_auroc(&[1; 300]).unwrap();
        let ys: Vec<(f64, f64)> = curve.iter().map(|(f, s)| (*f, auroc(s))).collect();
        let (a, b) = fit_line(&ys).unwrap();
        let line = d.line;
        assert!((line.slope - b).abs() < 1e-12 && (line.intercept - a).abs() < 1e-12);
        assert!(
            line.slope > 0.0 && line.slope_ci.0 < line.slope && line.slope < line.slope_ci.1,
            "{d:?}"
        );
        // Sorted by label F1; the labeler sits below the curve, its interval too.
        assert_eq!(d.points.first().unwrap().label_f1, 0.6);
        let l = d.points.iter().find(|p| p.source == "labeler").unwrap();
        assert!((l.residual - (auroc(&labeler) - (a + b * 0.8))).abs() < 1e-12);
        assert!(l.residual < 0.0 && l.residual_ci.1 < 0.0, "{l:?}");
        // Seeded.
        assert_eq!(dose_response(&sources, 300, 300, 0.95, 1), Some(d));
        // One distinct label F1 on the curve: no line.
        for s in &mut sources[..3] {
            s.label_f1 = 0.9;
        }
        assert!(dose_response(&sources, 300, 50, 0.95, 1).is_none());
    }
}
