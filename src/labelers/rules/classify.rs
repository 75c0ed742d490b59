//! Classifying a mention as positive, negative or uncertain. The mechanism sits behind [`MentionClassifier`] so a
//! dependency-graph classifier can replace it; the built-in [`CueScopeClassifier`] finds cue phrases
//! (`cues.txt`) and gives each a scope over the sentence's tokens, bounded by terminators ("but", "however",
//! ";", ...), by the start of a new clause (a verb that is not part of the cue), by the sentence, and by a window.

use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{Error, Result};
use crate::labelers::rules::lexicon::Mention;
use crate::labelers::rules::text::{Sentence, Token, TokenKind};
use crate::observations::{Label, Observation};

/// Classifies one mention in its sentence.
pub trait MentionClassifier: Send + Sync {
    /// `text` is the cleaned (lower-cased) report; `sentence` holds the mention.
    fn classify(&self, text: &str, sentence: &Sentence, mention: &Mention) -> Label;
}

/// The built-in cue lexicon.
pub const BUILTIN_CUES: &str = include_str!("cues.txt");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PreUncertainty,
    Negation,
    Uncertainty,
    Pseudo,
    Terminator,
    Verb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Forward,
    Backward,
    Both,
    None,
}

/// Words a forward or backward scope may span, and the window of a `both` cue.
const SCOPE_WINDOW: usize = 12;
const BOTH_WINDOW: usize = 4;

/// Cue phrases with scope rules.
pub struct CueScopeClassifier {
    /// Per unique phrase: every (kind, direction) it is listed under.
    roles: Vec<Vec<(Kind, Dir)>>,
    automaton: AhoCorasick,
    /// The one-word verbs and copulas.
    verbs: std::collections::HashSet<String>,
}

/// A cue found in a sentence: its token range and roles.
struct Found<'a> {
    first: usize,
    last: usize,
    roles: &'a [(Kind, Dir)],
}

impl<'a> Found<'a> {
    fn has(&self, kind: Kind) -> bool {
        self.roles.iter().any(|(k, _)| *k == kind)
    }
}

impl CueScopeClassifier {
    /// Builds the classifier from cue-lexicon text (format in `cues.txt`); `origin` names it in errors.
    pub fn new(text: &str, origin: &Path) -> Result<Self> {
        let mut phrases: Vec<String> = Vec::new();
        let mut roles: Vec<Vec<(Kind, Dir)>> = Vec::new();
        let mut current: Option<(Kind, Dir)> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let lineno = i as u64 + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let mut words = head.split_whitespace();
                let kind = match words.next() {
                    Some("pre_uncertainty") => Kind::PreUncertainty,
                    Some("negation") => Kind::Negation,
                    Some("uncertainty") => Kind::Uncertainty,
                    Some("pseudo") => Kind::Pseudo,
                    Some("terminator") => Kind::Terminator,
                    Some("verb") => Kind::Verb,
                    _ => {
                        return Err(Error::record(
                            origin,
                            lineno,
                            format!("unknown cue section [{head}]"),
                        ));
                    }
                };
                let dir = match words.next() {
                    Some("forward") => Dir::Forward,
                    Some("backward") => Dir::Backward,
                    Some("both") => Dir::Both,
                    None => Dir::None,
                    Some(d) => {
                        return Err(Error::record(
                            origin,
                            lineno,
                            format!("unknown direction '{d}'"),
                        ));
                    }
                };
                current = Some((kind, dir));
                continue;
            }
            let role =
                current.ok_or_else(|| Error::record(origin, lineno, "cue before any [section]"))?;
            let phrase = line.to_ascii_lowercase();
            match phrases.iter().position(|p| *p == phrase) {
                Some(k) => roles[k].push(role),
                None => {
                    phrases.push(phrase);
                    roles.push(vec![role]);
                }
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&phrases)
            .map_err(|e| Error::Input(format!("cue lexicon: {e}")))?;
        let verbs = phrases
            .iter()
            .zip(&roles)
            .filter(|(p, r)| !p.contains(' ') && r.iter().any(|(k, _)| *k == Kind::Verb))
            .map(|(p, _)| p.clone())
            .collect();
        Ok(CueScopeClassifier {
            roles,
            automaton,
            verbs,
        })
    }

    /// The built-in cues.
    pub fn builtin() -> Self {
        Self::new(BUILTIN_CUES, Path::new("builtin cues")).expect("builtin cues compile")
    }

    /// Cues in the sentence, longest first and not overlapping, as token ranges.
    fn find<'a>(&'a self, text: &str, s: &Sentence) -> Vec<Found<'a>> {
        let b = text.as_bytes();
        let alnum = |i: usize| b[i].is_ascii_alphanumeric();
        let mut out = Vec::new();
        for m in self.automaton.find_iter(&text[s.start..s.end]) {
            let (ms, me) = (s.start + m.start(), s.start + m.end());
            // Whole words only (punctuation cues carry their own boundaries).
            if (alnum(ms) && ms > 0 && alnum(ms - 1))
                || (alnum(me - 1) && me < b.len() && alnum(me))
            {
                continue;
            }
            let first = s.tokens.iter().position(|t| t.end > ms);
            let last = s.tokens.iter().rposition(|t| t.start < me);
            if let (Some(first), Some(last)) = (first, last) {
                out.push(Found {
                    first,
                    last,
                    roles: &self.roles[m.pattern().as_usize()],
                });
            }
        }
        out
    }
}

fn is_word(t: &Token) -> bool {
    t.kind == TokenKind::Word
}

/// Whether tokens strictly between `from` and `to` (exclusive, in either order) let a scope through: no
/// terminator, no verb except those directly next to the cue at `cue_side`, and at most `window` words.
fn passes(
    tokens: &[Token],
    stops: &[Option<Kind>],
    from: usize,
    to: usize,
    cue_side: usize,
    window: usize,
) -> bool {
    let (lo, hi) = if from < to {
        (from + 1, to)
    } else {
        (to + 1, from)
    };
    if lo >= hi {
        return true;
    }
    // Verbs adjacent to the cue belong to it ("heart size IS normal", "no effusion IS seen").
    let mut adjacent = vec![false; hi - lo];
    if cue_side == from {
        let range: Box<dyn Iterator<Item = usize>> = if from < to {
            Box::new(lo..hi)
        } else {
            Box::new((lo..hi).rev())
        };
        for i in range {
            if stops[i] == Some(Kind::Verb) {
                adjacent[i - lo] = true;
            } else {
                break;
            }
        }
    }
    let mut words = 0;
    for i in lo..hi {
        match stops[i] {
            Some(Kind::Terminator) => return false,
            Some(Kind::Verb) if !adjacent[i - lo] => return false,
            _ => {}
        }
        words += is_word(&tokens[i]) as usize;
    }
    words <= window
}

impl CueScopeClassifier {
    fn in_scope(
        &self,
        s: &Sentence,
        stops: &[Option<Kind>],
        cue: &Found,
        dir: Dir,
        first: usize,
        last: usize,
    ) -> bool {
        let t = &s.tokens;
        let forward =
            |window| first > cue.last && passes(t, stops, cue.last, first, cue.last, window);
        let backward =
            |window| last < cue.first && passes(t, stops, cue.first, last, cue.first, window);
        match dir {
            Dir::Forward => forward(SCOPE_WINDOW),
            Dir::Backward => backward(SCOPE_WINDOW),
            Dir::Both => forward(BOTH_WINDOW) || backward(BOTH_WINDOW),
            Dir::None => false,
        }
    }
}

/// Words that say something of an organ's size.
const ENLARGED: &[&str] = &[
    "enlarg",
    "large",
    "big",
    "increas",
    "promin",
    "cardiomegal",
    "widen",
    "globular",
    "magnif",
    "size",
    "upper limit",
    "normal",
    "unremarkable",
    "abnormal",
    "stable",
    "unchanged",
];

/// A Cardiomegaly or Enlarged Cardiomediastinum mention that only names the organ ("the heart", "mediastinum").
fn bare_organ(obs: Observation, mention: &str) -> bool {
    matches!(
        obs,
        Observation::Cardiomegaly | Observation::EnlargedCardiomediastinum
    ) && !["enlarg", "cardiomegal", "widen", "size"]
        .iter()
        .any(|w| mention.contains(w))
}

/// Oedema-like phrases the original labeler always reads as uncertain.
const ALWAYS_UNCERTAIN: &[&str] = &[
    "vascular congestion",
    "pulmonary congestion",
    "indistinctness",
    "vascular prominence",
];

impl MentionClassifier for CueScopeClassifier {
    fn classify(&self, text: &str, s: &Sentence, mention: &Mention) -> Label {
        let Some(first) = s.tokens.iter().position(|t| t.end > mention.start) else {
            return Label::Positive;
        };
        let last = s
            .tokens
            .iter()
            .rposition(|t| t.start < mention.end)
            .unwrap_or(first)
            .max(first);
        let found = self.find(text, s);
        // A mention's trailing copula ("heart is") belongs to the clause: a cue that starts there ("is not
        // enlarged") still speaks of the mention.
        let t = &s.tokens[last];
        let last = if last > first && self.verbs.contains(&text[t.start..t.end]) {
            last - 1
        } else {
            last
        };
        // Per token: terminator or verb (used to bound scopes).
        let mut stops: Vec<Option<Kind>> = vec![None; s.tokens.len()];
        for f in &found {
            let kind = if f.has(Kind::Terminator) {
                Some(Kind::Terminator)
            } else if f.has(Kind::Verb) {
                Some(Kind::Verb)
            } else {
                None
            };
            if kind.is_some() {
                for st in &mut stops[f.first..=f.last] {
                    *st = kind;
                }
            }
        }
        // Cues overlapping the mention are part of its own words, not modifiers of it.
        let outside = |f: &Found| f.last < first || f.first > last;
        for (kind, label) in [
            (Kind::PreUncertainty, Label::Uncertain),
            (Kind::Negation, Label::Negative),
            (Kind::Uncertainty, Label::Uncertain),
        ] {
            for f in found.iter().filter(|f| outside(f) && !f.has(Kind::Pseudo)) {
                for &(k, dir) in f.roles {
                    if k == kind && self.in_scope(s, &stops, f, dir, first, last) {
                        return label;
                    }
                }
            }
        }
        let mtext = &text[mention.start..mention.end];
        let sentence = &text[s.start..s.end];
        // The heart or mediastinum named without anything said of its size ("the heart and lungs have [stayed the
        // same] in the interval", "the mediastinum is stable") is no mention of enlargement.
        if bare_organ(mention.observation, mtext) && !ENLARGED.iter().any(|w| sentence.contains(w))
        {
            return Label::Blank;
        }
        if mention.observation == Observation::Edema
            && ALWAYS_UNCERTAIN.iter().any(|p| mtext.starts_with(p))
        {
            return Label::Uncertain;
        }
        // "Stable cardiomediastinal silhouette" says nothing about enlargement.
        if (mtext.contains("silhouette")
            || mtext.contains("contour")
            || mtext.contains("cardiomediastin"))
            && ["stable", "unchanged", "not changed", "similar"]
                .iter()
                .any(|w| sentence.contains(w))
            && !sentence.contains("enlarg")
            && !sentence.contains("widen")
        {
            return Label::Uncertain;
        }
        Label::Positive
    }
}
