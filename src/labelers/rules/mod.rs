//! The CheXpert-style rule labeler, in the original's three stages: mention extraction (lexicon, with
//! unmentions), classification of each mention (pre-negation uncertainty, negation, post-negation uncertainty,
//! behind [`MentionClassifier`]), and aggregation per report with the original's rules.

pub(crate) mod classify;
pub(crate) mod lexicon;
pub(crate) mod text;

use std::path::Path;

use crate::error::Result;
use crate::observations::{Label, LabelRow, Observation};
pub use classify::{CueScopeClassifier, MentionClassifier};
pub use lexicon::{Lexicon, Mention};

/// A mention with its classification, for explanations and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The observation mentioned.
    pub observation: Observation,
    /// The matched text.
    pub text: String,
    /// What the mention says.
    pub label: Label,
}

/// The rule labeler.
pub struct RuleLabeler {
    lexicon: Lexicon,
    classifier: Box<dyn MentionClassifier>,
}

impl Default for RuleLabeler {
    fn default() -> Self {
        RuleLabeler {
            lexicon: Lexicon::builtin(),
            classifier: Box::new(CueScopeClassifier::builtin()),
        }
    }
}

impl RuleLabeler {
    /// A labeler with a custom lexicon and classifier.
    pub fn new(lexicon: Lexicon, classifier: Box<dyn MentionClassifier>) -> Self {
        RuleLabeler {
            lexicon,
            classifier,
        }
    }

    /// The built-in lexicon extended (or replaced) by a lexicon file.
    pub fn with_lexicon_file(path: &Path) -> Result<Self> {
        Ok(RuleLabeler {
            lexicon: Lexicon::with_file(path)?,
            classifier: Box::new(CueScopeClassifier::builtin()),
        })
    }

    /// Every mention of a report with its label.
    pub fn mentions(&self, report: &str) -> Vec<Classified> {
        let cleaned = text::clean(report);
        let sentences = text::sentences(report, &cleaned);
        // Mentions come in order of start: group each sentence's, so the classifier prepares a sentence once.
        let mut groups: Vec<(usize, Vec<Mention>)> = Vec::new();
        for m in self.lexicon.mentions(&cleaned) {
            // Sentences are ordered and disjoint: the last one starting at or before the mention holds it.
            let k = sentences.partition_point(|s| s.start <= m.start);
            let Some(k) = k.checked_sub(1).filter(|&k| m.start < sentences[k].end) else {
                continue;
            };
            match groups.last_mut() {
                Some((g, ms)) if *g == k => ms.push(m),
                _ => groups.push((k, vec![m])),
            }
        }
        let mut out = Vec::new();
        for (k, ms) in groups {
            let labels = self.classifier.classify_all(&cleaned, &sentences[k], &ms);
            out.extend(ms.iter().zip(labels).map(|(m, label)| Classified {
                observation: m.observation,
                text: cleaned[m.start..m.end].to_string(),
                label,
            }));
        }
        out
    }

    /// Labels one report.
    pub fn label(&self, report: &str) -> LabelRow {
        aggregate(&self.mentions(report))
    }
}

/// The original labeler's aggregation ([`LabelRow::aggregate`]), plus its one special case: a positive or
/// uncertain "heart failure"/"chf" also makes Cardiomegaly uncertain.
pub fn aggregate(mentions: &[Classified]) -> LabelRow {
    let chf = mentions.iter().filter(|m| {
        matches!(m.label, Label::Positive | Label::Uncertain)
            && (m.text == "chf" || m.text == "heart failure")
    });
    LabelRow::aggregate(
        mentions
            .iter()
            .map(|m| (m.observation, m.label))
            .chain(chf.map(|_| (Observation::Cardiomegaly, Label::Uncertain))),
    )
}
