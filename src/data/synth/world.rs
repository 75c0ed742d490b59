//! What is really in each synthetic study: the findings on the image, drawn from a correlated prior whose marginals
//! are set to CheXpert-like prevalences, each positive finding with a severity and a side.

use rand::Rng;

use crate::observations::{N_OBS, Observation, Observation::*};

/// Side of a lateralised finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The patient's left.
    Left,
    /// The patient's right.
    Right,
    /// Both sides.
    Both,
}

/// The truth of one study.
#[derive(Clone, Debug, PartialEq)]
pub struct Findings {
    /// Present on the image, per observation (canonical order). No Finding is derived.
    pub present: [bool; N_OBS],
    /// Severity in (0, 1] of each present finding (0 when absent). Low severity = faint on the image.
    pub severity: [f32; N_OBS],
    /// Side of each lateralised finding.
    pub side: [Side; N_OBS],
    /// Intensive-care setting (portable AP films, more devices and fluid).
    pub icu: bool,
    /// Age in years.
    pub age: u32,
    /// Sex.
    pub female: bool,
}

impl Findings {
    /// Whether an observation is present (No Finding: nothing but support devices).
    pub fn has(&self, o: Observation) -> bool {
        self.present[o.index()]
    }

    /// Severity of an observation (0 when absent).
    pub fn severity(&self, o: Observation) -> f32 {
        self.severity[o.index()]
    }
}

/// Latent causes shared by several observations; each is a Bernoulli draw with probability `q` (ICU-adjusted).
struct Latent {
    q_icu: f64,
    q_ward: f64,
    /// (observation, probability that this cause produces it).
    effects: &'static [(Observation, f64)],
}

const LATENTS: &[Latent] = &[
    // Heart failure: enlarged heart, oedema and effusions together.
    Latent {
        q_icu: 0.30,
        q_ward: 0.12,
        effects: &[
            (Cardiomegaly, 0.55),
            (Edema, 0.65),
            (PleuralEffusion, 0.55),
            (EnlargedCardiomediastinum, 0.15),
        ],
    },
    // Infection: pneumonia with consolidation.
    Latent {
        q_icu: 0.12,
        q_ward: 0.06,
        effects: &[(Pneumonia, 0.45), (Consolidation, 0.55), (Atelectasis, 0.2)],
    },
    // Post-operative / ventilated: lines and tubes, basal collapse, effusions.
    Latent {
        q_icu: 0.75,
        q_ward: 0.15,
        effects: &[
            (SupportDevices, 0.95),
            (Atelectasis, 0.3),
            (PleuralEffusion, 0.25),
            (Pneumothorax, 0.08),
        ],
    },
];

/// Share of studies from an intensive-care setting.
pub const ICU_SHARE: f64 = 0.35;

/// Default marginal prevalences (positive on the image), close to CheXpert's training set, in canonical order.
/// No Finding's entry is ignored (it is derived); Lung Opacity's is its own share before its children imply it.
pub const DEFAULT_PRIORS: [f64; N_OBS] = [
    0.0,  // No Finding (derived)
    0.06, // Enlarged Cardiomediastinum
    0.14, // Cardiomegaly
    0.05, // Lung Lesion
    0.10, // Lung Opacity (own; children add to it)
    0.18, // Edema
    0.08, // Consolidation
    0.04, // Pneumonia
    0.16, // Atelectasis
    0.07, // Pneumothorax
    0.26, // Pleural Effusion
    0.02, // Pleural Other
    0.03, // Fracture
    0.45, // Support Devices
];

/// Observations whose presence implies Lung Opacity.
pub const OPACITY_CHILDREN: [Observation; 5] =
    [LungLesion, Edema, Consolidation, Pneumonia, Atelectasis];

/// Observations drawn with a side.
fn lateral(o: Observation) -> bool {
    matches!(
        o,
        LungLesion
            | LungOpacity
            | Consolidation
            | Pneumonia
            | Atelectasis
            | Pneumothorax
            | PleuralEffusion
            | PleuralOther
            | Fracture
    )
}

/// The correlated prior: latent causes plus a residual per observation chosen so that each marginal equals its
/// target: P(o) = 1 − (1 − b_o) · Π_k (1 − c_ok q_k), solved for b_o with q_k the ICU-mixed latent rate.
#[derive(Clone, Debug)]
pub struct Prior {
    /// Target marginal prevalence per observation (canonical order).
    pub targets: [f64; N_OBS],
    residual: [f64; N_OBS],
}

impl Prior {
    /// A prior with the given marginal targets (canonical order).
    pub fn new(targets: [f64; N_OBS]) -> Prior {
        let mut residual = [0.0; N_OBS];
        for o in crate::observations::OBSERVATIONS {
            // E[Π_k (1 − c_ok z_k)], mixing the ICU and ward settings (latents are independent within each).
            let keep_in = |icu: bool| -> f64 {
                LATENTS
                    .iter()
                    .flat_map(|l| {
                        l.effects
                            .iter()
                            .map(move |&(e, c)| (e, c, if icu { l.q_icu } else { l.q_ward }))
                    })
                    .filter(|&(e, _, _)| e == o)
                    .map(|(_, c, q)| 1.0 - c * q)
                    .product()
            };
            let keep = ICU_SHARE * keep_in(true) + (1.0 - ICU_SHARE) * keep_in(false);
            let t = targets[o.index()];
            residual[o.index()] = (1.0 - (1.0 - t) / keep).clamp(0.0, 1.0);
        }
        Prior { targets, residual }
    }

    /// Draws one study's truth.
    pub fn sample(&self, rng: &mut impl Rng) -> Findings {
        let icu = rng.random_bool(ICU_SHARE);
        let mut present = [false; N_OBS];
        for l in LATENTS {
            if rng.random_bool(if icu { l.q_icu } else { l.q_ward }) {
                for &(o, c) in l.effects {
                    present[o.index()] |= rng.random_bool(c);
                }
            }
        }
        for o in crate::observations::OBSERVATIONS {
            present[o.index()] |= rng.random_bool(self.residual[o.index()]);
        }
        present[NoFinding.index()] = false;
        if OPACITY_CHILDREN.iter().any(|c| present[c.index()]) {
            present[LungOpacity.index()] = true;
        }
        let mut severity = [0.0f32; N_OBS];
        let mut side = [Side::Both; N_OBS];
        for o in crate::observations::OBSERVATIONS {
            if !present[o.index()] {
                continue;
            }
            // Skewed toward mild: many findings are subtle, as on real films.
            severity[o.index()] = (0.05 + 0.95 * rng.random::<f32>().powf(1.3)).min(1.0);
            if lateral(o) {
                let bilateral = matches!(o, PleuralEffusion | LungOpacity | Atelectasis)
                    && rng.random_bool(0.35);
                side[o.index()] = if bilateral {
                    Side::Both
                } else if rng.random_bool(0.5) {
                    Side::Left
                } else {
                    Side::Right
                };
            }
        }
        // Children's opacity carries their severity when Lung Opacity has none of its own.
        if present[LungOpacity.index()] {
            let child = OPACITY_CHILDREN
                .iter()
                .map(|c| severity[c.index()])
                .fold(0.0, f32::max);
            severity[LungOpacity.index()] = severity[LungOpacity.index()].max(child);
        }
        present[NoFinding.index()] = !crate::observations::OBSERVATIONS
            .iter()
            .any(|o| *o != NoFinding && *o != SupportDevices && present[o.index()]);
        if present[NoFinding.index()] {
            severity[NoFinding.index()] = 1.0;
        }
        let age = rng.random_range(18..=95);
        Findings {
            present,
            severity,
            side,
            icu,
            age,
            female: rng.random_bool(0.45),
        }
    }
}

impl Default for Prior {
    fn default() -> Self {
        Prior::new(DEFAULT_PRIORS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn marginals_match_targets_and_structure_holds() {
        let prior = Prior::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = 20_000;
        let mut counts = [0usize; N_OBS];
        let mut chf_pairs = 0usize;
        for _ in 0..n {
            let f = prior.sample(&mut rng);
            for o in crate::observations::OBSERVATIONS {
                counts[o.index()] += f.has(o) as usize;
                assert_eq!(f.severity(o) > 0.0, f.has(o), "{o}");
            }
            if OPACITY_CHILDREN.iter().any(|c| f.has(*c)) {
                assert!(f.has(LungOpacity));
            }
            let other = crate::observations::OBSERVATIONS
                .iter()
                .any(|o| !matches!(o, NoFinding | SupportDevices) && f.has(*o));
            assert_eq!(f.has(NoFinding), !other);
            chf_pairs += (f.has(Edema) && f.has(Cardiomegaly)) as usize;
        }
        for o in crate::observations::OBSERVATIONS {
            if matches!(o, NoFinding | LungOpacity) {
                continue;
            }
            let got = counts[o.index()] as f64 / n as f64;
            assert!(
                (got - DEFAULT_PRIORS[o.index()]).abs() < 0.015,
                "{o}: {got} vs {}",
                DEFAULT_PRIORS[o.index()]
            );
        }
        // Edema and cardiomegaly co-occur more than independence would give.
        let pe = counts[Edema.index()] as f64 / n as f64;
        let pc = counts[Cardiomegaly.index()] as f64 / n as f64;
        assert!(chf_pairs as f64 / n as f64 > 1.5 * pe * pc);
    }
}
