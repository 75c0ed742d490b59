//! How the simulated radiologists write: the report style knob (`dataset.report_style`) and the voices behind it.
//!
//! `textbook` is the plain language the world spoke first (lists of "No X.", "There is Y."), which simple rules read
//! almost perfectly. The realistic styles add the constructions real reports use and simple rules misread: negated
//! copulas ("the heart is not enlarged"), "upper limits of normal", several organs called normal at once, findings
//! described as not changed ("no change in the small effusion" — still present), contrasts ("no pneumothorax, but
//! ..."), wider hedges, abbreviations, de-identification tokens and notifications, clinical-history text repeated in
//! the impression, and misspellings. Each realistic style is one radiologist's habits; `mixed` (the default) draws a
//! radiologist per study. `dataset.report_difficulty` scales how often the hard constructions appear (0: never,
//! 1: the calibrated default, up to 2).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The report style of a synthetic world.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReportStyle {
    /// The plain language simple rules read almost perfectly.
    Textbook,
    /// Short impressions: fragments, abbreviations, comparisons in a word.
    Terse,
    /// Full sentences: negated copulas, organ-by-organ normal statements, hedges, comparisons, history text.
    Narrative,
    /// Structured lines ("Heart: enlarged.", "Pneumothorax: none.").
    Templated,
    /// Each study by one of the three realistic radiologists, drawn per study.
    #[default]
    Mixed,
}

/// Probabilities of each hard construction, per opportunity to use it. All zero for `textbook`, where no random
/// draw is made for them, so a textbook world is the world the earlier generator wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Voice {
    /// A pertinent negative as a negated copula or other non-"no" wording ("Pneumothorax is not seen.").
    pub copula: f64,
    /// A normal heart as "at the upper limits of normal" / "top normal", or several organs normal at once.
    pub organ_normal: f64,
    /// A reported finding described as not changed ("No change in the left effusion.").
    pub negated_change: f64,
    /// A pertinent negative and a finding in one sentence ("No pneumothorax, but small left effusion.").
    pub contrast: f64,
    /// A hedge in wider wording ("X is not excluded.", "could reflect X").
    pub hedge_wording: f64,
    /// A device or finding abbreviated ("ET tube", "NG tube").
    pub abbreviation: f64,
    /// De-identification tokens: "Compared to ___," and notification sentences.
    pub deid: f64,
    /// The clinical question repeated at the head of the impression (text that states nothing about the image).
    pub history: f64,
    /// A finding's name misspelled (replaces the rates' typo probability when larger).
    pub typo: f64,
    /// Structured "Organ: finding." lines.
    pub structured: f64,
    /// A resolved finding described as no longer seen.
    pub no_longer: f64,
}

impl Voice {
    /// The voice of one realistic radiologist, its probabilities scaled by `difficulty` (capped at 0.95).
    fn scaled(self, difficulty: f64) -> Voice {
        let s = |p: f64| (p * difficulty).clamp(0.0, 0.95);
        Voice {
            copula: s(self.copula),
            organ_normal: s(self.organ_normal),
            negated_change: s(self.negated_change),
            contrast: s(self.contrast),
            hedge_wording: s(self.hedge_wording),
            abbreviation: s(self.abbreviation),
            deid: s(self.deid),
            history: s(self.history),
            typo: s(self.typo),
            structured: s(self.structured),
            no_longer: s(self.no_longer),
        }
    }
}

const TERSE: Voice = Voice {
    copula: 0.15,
    organ_normal: 0.2,
    negated_change: 0.3,
    contrast: 0.3,
    hedge_wording: 0.3,
    abbreviation: 0.5,
    deid: 0.15,
    history: 0.0,
    typo: 0.08,
    structured: 0.0,
    no_longer: 0.3,
};

const NARRATIVE: Voice = Voice {
    copula: 0.5,
    organ_normal: 0.45,
    negated_change: 0.35,
    contrast: 0.35,
    hedge_wording: 0.5,
    abbreviation: 0.15,
    deid: 0.35,
    history: 0.2,
    typo: 0.05,
    structured: 0.0,
    no_longer: 0.5,
};

const TEMPLATED: Voice = Voice {
    copula: 0.3,
    organ_normal: 0.4,
    negated_change: 0.2,
    contrast: 0.15,
    hedge_wording: 0.2,
    abbreviation: 0.3,
    deid: 0.1,
    history: 0.1,
    typo: 0.04,
    structured: 0.4,
    no_longer: 0.3,
};

impl ReportStyle {
    /// The voice a study of this style is written in (a `mixed` world draws the radiologist from `rng`).
    pub fn voice(self, difficulty: f64, rng: &mut impl Rng) -> Voice {
        let v = match self {
            ReportStyle::Textbook => return Voice::default(),
            ReportStyle::Terse => TERSE,
            ReportStyle::Narrative => NARRATIVE,
            ReportStyle::Templated => TEMPLATED,
            ReportStyle::Mixed => match rng.random_range(0..20) {
                0..7 => TERSE,
                7..15 => NARRATIVE,
                _ => TEMPLATED,
            },
        };
        v.scaled(difficulty)
    }
}

/// The style of a world whose manifest predates styles.
pub(crate) fn textbook() -> ReportStyle {
    ReportStyle::Textbook
}

/// The calibrated report difficulty, the default wherever one is not given.
pub const DEFAULT_DIFFICULTY: f64 = 1.0;

pub(crate) fn default_difficulty() -> f64 {
    DEFAULT_DIFFICULTY
}

/// Refuses a report difficulty outside 0..=2, naming the setting `key`.
pub fn check_difficulty(key: &str, difficulty: f64) -> crate::error::Result<()> {
    if (0.0..=2.0).contains(&difficulty) {
        Ok(())
    } else {
        Err(crate::error::Error::Config(format!(
            "{key} {difficulty} must be within 0..=2"
        )))
    }
}

/// `p` is drawn only when it is positive, so a zero-probability construction leaves the random stream untouched.
pub fn chance(rng: &mut impl Rng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn textbook_draws_nothing_and_difficulty_scales_every_construction() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let before = rng.clone().random::<u64>();
        assert_eq!(ReportStyle::Textbook.voice(1.0, &mut rng), Voice::default());
        assert!(!chance(&mut rng, 0.0));
        assert_eq!(rng.random::<u64>(), before, "textbook consumed a draw");
        let none = ReportStyle::Narrative.voice(0.0, &mut rng);
        assert_eq!(none, Voice::default());
        let hard = ReportStyle::Narrative.voice(2.0, &mut rng);
        assert_eq!(hard.copula, 0.95);
        assert_eq!(hard.deid, 0.7);
    }
}
