//! Classifying a mention as positive, negative or uncertain. The mechanism sits behind [`MentionClassifier`] so a
//! dependency-graph classifier can replace it; the built-in [`CueScopeClassifier`] finds cue phrases
//! (`cues.txt`) and gives each a scope over the sentence's tokens, bounded by terminators ("but", "however",
//! ";", ...), by the start of a new clause (a verb that is not part of the cue), by the sentence, and by a window.

use std::path::Path;

use std::cell::OnceCell;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{Error, Result};
use crate::labelers::rules::lexicon::Mention;
use crate::labelers::rules::text::{Sentence, Token, TokenKind};
use crate::observations::{Label, Observation};

/// Classifies one mention in its sentence.
pub trait MentionClassifier: Send + Sync {
    /// `text` is the cleaned (lower-cased) report; `sentence` holds the mention.
    fn classify(&self, text: &str, sentence: &Sentence, mention: &Mention) -> Label;

    /// Every mention of one sentence, in order; a classifier that prepares per sentence overrides it so a long
    /// sentence with many mentions costs linear time, not quadratic.
    fn classify_all(&self, text: &str, sentence: &Sentence, mentions: &[Mention]) -> Vec<Label> {
        mentions
            .iter()
            .map(|m| self.classify(text, sentence, m))
            .collect()
    }
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
    /// A word a verb's run may hold without starting a new clause ("is NOW normal", "are GROSSLY unremarkable").
    Light,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Forward,
    Backward,
    Both,
    /// The whole sentence ("in the appropriate clinical setting, this is compatible with pneumonia").
    Sentence,
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
                    Some("light") => Kind::Light,
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
                    Some("sentence") => Dir::Sentence,
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
            // Tokens are ordered and disjoint: the first ending after the cue's start, the last starting before
            // its end.
            let first = s.tokens.partition_point(|t| t.end <= ms);
            let last = s.tokens.partition_point(|t| t.start < me).checked_sub(1);
            if let (true, Some(last)) = (first < s.tokens.len(), last) {
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

/// A sentence's cues and what bounds their scopes, computed once for all the mentions in it. Counts are prefix
/// sums over the tokens, so a scope check costs the same whatever the sentence's length.
struct Scene<'a> {
    /// Cues in the sentence, in order, not overlapping.
    found: Vec<Found<'a>>,
    /// `at[i]`: counts over the first `i` tokens, and the verb runs at token `i`.
    at: Vec<Counts>,
    /// The sentence's text, for the checks a few mentions need.
    sentence: &'a str,
    /// The kinds of the cues whose scope is the whole sentence.
    whole: Vec<Kind>,
    /// It says something of an organ's size ([`ENLARGED`]), computed when first asked.
    sizes: OnceCell<bool>,
    /// It calls something stable and says nothing is enlarged, computed when first asked: once a sentence, not
    /// once a mention (a long sentence of many heart mentions was quadratic).
    stable: OnceCell<bool>,
}

/// Prefix counts at one token position.
#[derive(Clone, Copy, Default)]
struct Counts {
    words: usize,
    terminators: usize,
    verbs: usize,
    /// The run of verbs starting at this token going forward, and ending at it going backward.
    verbs_after: usize,
    verbs_before: usize,
}

impl<'a> Scene<'a> {
    fn new(c: &'a CueScopeClassifier, text: &'a str, s: &Sentence) -> Self {
        let found = c.find(text, s);
        let n = s.tokens.len();
        let mut stops: Vec<Option<Kind>> = vec![None; n];
        for f in &found {
            let kind = if f.has(Kind::Terminator) {
                Some(Kind::Terminator)
            } else if f.has(Kind::Verb) {
                Some(Kind::Verb)
            } else if f.has(Kind::Light) {
                Some(Kind::Light)
            } else {
                None
            };
            if kind.is_some() {
                for st in &mut stops[f.first..=f.last] {
                    *st = kind;
                }
            }
        }
        let mut at = vec![Counts::default(); n + 1];
        // A run is verbs with light words among them; it counts its verbs.
        let run = |stop: Option<Kind>, next: usize| match stop {
            Some(Kind::Verb) => next + 1,
            Some(Kind::Light) => next,
            _ => 0,
        };
        for i in 0..n {
            let verb = stops[i] == Some(Kind::Verb);
            at[i + 1].words = at[i].words + usize::from(is_word(&s.tokens[i]));
            at[i + 1].terminators =
                at[i].terminators + usize::from(stops[i] == Some(Kind::Terminator));
            at[i + 1].verbs = at[i].verbs + usize::from(verb);
            at[i].verbs_before = run(stops[i], if i > 0 { at[i - 1].verbs_before } else { 0 });
        }
        for i in (0..n).rev() {
            at[i].verbs_after = run(stops[i], at[i + 1].verbs_after);
        }
        let whole = found
            .iter()
            .filter(|f| !f.has(Kind::Pseudo))
            .flat_map(|f| f.roles.iter())
            .filter(|(_, d)| *d == Dir::Sentence)
            .map(|(k, _)| *k)
            .collect();
        Scene {
            whole,
            found,
            at,
            sentence: &text[s.start..s.end],
            sizes: OnceCell::new(),
            stable: OnceCell::new(),
        }
    }

    fn sizes(&self) -> bool {
        *self
            .sizes
            .get_or_init(|| ENLARGED.iter().any(|w| self.sentence.contains(w)))
    }

    fn stable(&self) -> bool {
        *self.stable.get_or_init(|| {
            ["stable", "unchanged", "not changed", "similar"]
                .iter()
                .any(|w| self.sentence.contains(w))
                && !["enlarg", "widen"]
                    .iter()
                    .any(|w| self.sentence.contains(w))
        })
    }

    /// Whether tokens strictly between `from` and `to` (either order) let a scope through: no terminator, no
    /// verb except those directly next to the cue at `from`, and at most `window` words.
    fn passes(&self, from: usize, to: usize, window: usize) -> bool {
        let (lo, hi) = if from < to {
            (from + 1, to)
        } else {
            (to + 1, from)
        };
        if lo >= hi {
            return true;
        }
        let (l, h) = (&self.at[lo], &self.at[hi]);
        if h.words - l.words > window || h.terminators > l.terminators {
            return false;
        }
        // Verbs adjacent to the cue belong to it ("heart size IS normal", "no effusion IS seen").
        let adjacent = if from < to {
            l.verbs_after
        } else {
            self.at[hi - 1].verbs_before
        };
        h.verbs - l.verbs <= adjacent.min(hi - lo)
    }

    fn in_scope(&self, cue: &Found, dir: Dir, first: usize, last: usize) -> bool {
        let forward = |window| first > cue.last && self.passes(cue.last, first, window);
        let backward = |window| last < cue.first && self.passes(cue.first, last, window);
        match dir {
            Dir::Forward => forward(SCOPE_WINDOW),
            Dir::Backward => backward(SCOPE_WINDOW),
            Dir::Both => forward(BOTH_WINDOW) || backward(BOTH_WINDOW),
            // Checked once per sentence (`Scene::whole`), not per cue.
            Dir::Sentence | Dir::None => false,
        }
    }

    /// The cues that can reach tokens `first..=last`: within the scope window's words on either side, and not
    /// past a terminator. At most a window's worth, however long the sentence.
    fn near(&self, first: usize, last: usize) -> impl Iterator<Item = &Found<'a>> {
        let before = self.found.partition_point(|f| f.last < first);
        let after = self.found.partition_point(|f| f.first <= last);
        let reach = move |f: &&Found| {
            // Tokens strictly between the cue and the mention.
            let (lo, hi) = if f.last < first {
                (f.last + 1, first)
            } else {
                (last + 1, f.first)
            };
            let (l, h) = (&self.at[lo], &self.at[hi]);
            h.words - l.words <= SCOPE_WINDOW && h.terminators == l.terminators
        };
        let back = self.found[..before].iter().rev().take_while(reach);
        let ahead = self.found[after..].iter().take_while(reach);
        back.chain(ahead)
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

/// Words of a mention that say an organ is large ("cardiomegaly", "enlarged heart").
const SAYS_LARGE: &[&str] = &["enlarg", "cardiomegal", "widen"];

/// A Cardiomegaly or Enlarged Cardiomediastinum mention that only names the organ ("the heart", "mediastinum").
fn bare_organ(obs: Observation, mention: &str) -> bool {
    matches!(
        obs,
        Observation::Cardiomegaly | Observation::EnlargedCardiomediastinum
    ) && !SAYS_LARGE.iter().any(|w| mention.contains(w))
        && !mention.contains("size")
}

/// Oedema-like phrases the original labeler always reads as uncertain.
const ALWAYS_UNCERTAIN: &[&str] = &[
    "vascular congestion",
    "pulmonary congestion",
    "indistinctness",
    "vascular prominence",
];

impl CueScopeClassifier {
    /// The label of `mention` in the sentence `scene` describes.
    fn label(&self, text: &str, s: &Sentence, scene: &Scene, mention: &Mention) -> Label {
        let first = s.tokens.partition_point(|t| t.end <= mention.start);
        if first == s.tokens.len() {
            return Label::Positive;
        }
        let last = s
            .tokens
            .partition_point(|t| t.start < mention.end)
            .saturating_sub(1)
            .max(first);
        // A mention's trailing copula ("heart is") belongs to the clause: a cue that starts there ("is not
        // enlarged") still speaks of the mention.
        let t = &s.tokens[last];
        let last = if last > first && self.verbs.contains(&text[t.start..t.end]) {
            last - 1
        } else {
            last
        };
        // Cues overlapping the mention are part of its own words, not modifiers of it.
        for (kind, label) in [
            (Kind::PreUncertainty, Label::Uncertain),
            (Kind::Negation, Label::Negative),
            (Kind::Uncertainty, Label::Uncertain),
        ] {
            if scene.whole.contains(&kind) {
                return label;
            }
            for f in scene.near(first, last).filter(|f| !f.has(Kind::Pseudo)) {
                for &(k, dir) in f.roles {
                    if k == kind && scene.in_scope(f, dir, first, last) {
                        return label;
                    }
                }
            }
        }
        let mtext = &text[mention.start..mention.end];
        // The heart or mediastinum named without anything said of its size ("the heart and lungs have [stayed the
        // same] in the interval", "the mediastinum is stable") is no mention of enlargement.
        if bare_organ(mention.observation, mtext) && !scene.sizes() {
            return Label::Blank;
        }
        if mention.observation == Observation::Edema
            && ALWAYS_UNCERTAIN.iter().any(|p| mtext.starts_with(p))
        {
            return Label::Uncertain;
        }
        // "Stable cardiomediastinal silhouette", "heart size is unchanged": the original reads an organ's size
        // called stable as uncertain, since it says nothing of what the size is. A bare "mediastinum" is not in
        // its list of such organs (NegBio's MIMIC-CXR branch: "heart and mediastinum are stable" leaves the
        // mediastinum positive).
        if (mention.observation == Observation::Cardiomegaly
            || ["silhouette", "contour", "cardiomediastin"]
                .iter()
                .any(|w| mtext.contains(w)))
            && !SAYS_LARGE.iter().any(|w| mtext.contains(w))
            && scene.stable()
        {
            return Label::Uncertain;
        }
        Label::Positive
    }
}

impl MentionClassifier for CueScopeClassifier {
    fn classify(&self, text: &str, s: &Sentence, mention: &Mention) -> Label {
        self.label(text, s, &Scene::new(self, text, s), mention)
    }

    fn classify_all(&self, text: &str, s: &Sentence, mentions: &[Mention]) -> Vec<Label> {
        let scene = Scene::new(self, text, s);
        mentions
            .iter()
            .map(|m| self.label(text, s, &scene, m))
            .collect()
    }
}
