//! The mention lexicon: phrases per observation, compiled into one multi-pattern automaton.

use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{Error, Result};
use crate::observations::Observation;

/// chexlab's built-in lexicon (`lexicon.txt`, format documented there).
pub const BUILTIN: &str = include_str!("lexicon.txt");

/// One lexicon entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phrase {
    /// The observation the phrase names.
    pub observation: Observation,
    /// Lower case, `_` already turned into spaces.
    pub text: String,
    /// Must end at a word boundary.
    pub whole_word: bool,
    /// An unmention: drops mentions it contains.
    pub unmention: bool,
}

/// Parses lexicon text. `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Vec<Phrase>> {
    let mut out = Vec::new();
    let mut current: Option<Observation> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = i as u64 + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(Observation::from_name(name).ok_or_else(|| {
                Error::record(origin, lineno, format!("unknown observation '{name}'"))
            })?);
            continue;
        }
        let (unmention, phrase) = match line.split_at(1) {
            ("+", rest) => (false, rest.trim_start()),
            ("-", rest) => (true, rest.trim_start()),
            _ => {
                return Err(Error::record(
                    origin,
                    lineno,
                    format!("expected '+ phrase' or '- phrase', found '{line}'"),
                ));
            }
        };
        let observation = current.ok_or_else(|| {
            Error::record(origin, lineno, "phrase before any [Observation] section")
        })?;
        let (phrase, whole_word) = match phrase.strip_suffix('$') {
            Some(p) => (p, true),
            None => (phrase, false),
        };
        if phrase.trim_matches('_').is_empty() {
            return Err(Error::record(origin, lineno, "empty phrase"));
        }
        out.push(Phrase {
            observation,
            text: phrase.replace('_', " ").to_ascii_lowercase(),
            whole_word,
            unmention,
        });
    }
    Ok(out)
}

/// A mention found in a text: byte span in the (lower-cased) text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mention {
    /// The observation.
    pub observation: Observation,
    /// Byte offset of the match.
    pub start: usize,
    /// Byte offset after it.
    pub end: usize,
}

/// The compiled lexicon.
pub struct Lexicon {
    phrases: Vec<Phrase>,
    automaton: AhoCorasick,
    /// Bytes of the longest phrase: how far before a mention an unmention containing it can start.
    longest: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

impl Lexicon {
    /// Compiles phrases.
    pub fn new(phrases: Vec<Phrase>) -> Result<Lexicon> {
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(phrases.iter().map(|p| p.text.as_bytes()))
            .map_err(|e| Error::Input(format!("lexicon: {e}")))?;
        let longest = phrases.iter().map(|p| p.text.len()).max().unwrap_or(0);
        Ok(Lexicon {
            phrases,
            automaton,
            longest,
        })
    }

    /// The built-in lexicon.
    pub fn builtin() -> Lexicon {
        Lexicon::new(parse(BUILTIN, Path::new("builtin lexicon")).expect("builtin lexicon parses"))
            .expect("builtin lexicon compiles")
    }

    /// The built-in lexicon extended with a file's phrases, or replaced by them when the file's first
    /// non-comment line is `!replace`.
    pub fn with_file(path: &Path) -> Result<Lexicon> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let replace = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l == "!replace");
        let body: String = text
            .lines()
            .filter(|l| l.trim() != "!replace")
            .collect::<Vec<_>>()
            .join("\n");
        let mut phrases = if replace {
            Vec::new()
        } else {
            parse(BUILTIN, Path::new("builtin lexicon"))?
        };
        phrases.extend(parse(&body, path)?);
        Lexicon::new(phrases)
    }

    /// Every phrase.
    pub fn phrases(&self) -> &[Phrase] {
        &self.phrases
    }

    /// Mentions in `lower` (already ASCII-lower-cased), in order of start; unmentioned ones removed.
    pub fn mentions(&self, lower: &str) -> Vec<Mention> {
        let bytes = lower.as_bytes();
        let mut found: Vec<(usize, usize, usize)> = Vec::new();
        for m in self.automaton.find_overlapping_iter(lower) {
            let p = &self.phrases[m.pattern().as_usize()];
            let (s, e) = (m.start(), m.end());
            // Starts at a word boundary (a phrase that itself starts with a space carries its own boundary).
            let starts_ok = p.text.starts_with(' ') || s == 0 || !is_word(bytes[s - 1]);
            let ends_ok = !p.whole_word || e == bytes.len() || !is_word(bytes[e]);
            if starts_ok && ends_ok {
                found.push((m.pattern().as_usize(), s, e));
            }
        }
        // Unmentions by start: one that contains a mention starts at most the longest phrase before it, so each
        // mention looks at a bounded number of them (linear in the report, whatever its length).
        let mut unmentions: Vec<(usize, usize, Observation)> = found
            .iter()
            .filter(|(i, _, _)| self.phrases[*i].unmention)
            .map(|&(i, s, e)| (s, e, self.phrases[i].observation))
            .collect();
        unmentions.sort_unstable_by_key(|u| (u.0, u.1));
        let longest = self.longest;
        let unmentioned = |o: Observation, s: usize, e: usize| {
            let from = unmentions.partition_point(|u| u.0 + longest < s);
            unmentions[from..]
                .iter()
                .take_while(|u| u.0 <= s)
                .any(|&(us, ue, uo)| uo == o && us <= s && e <= ue)
        };
        let mut out: Vec<Mention> = found
            .iter()
            .filter(|(i, _, _)| !self.phrases[*i].unmention)
            .filter(|&&(i, s, e)| !unmentioned(self.phrases[i].observation, s, e))
            .map(|&(i, s, e)| {
                // Edge spaces belong to the phrase's boundary, not to the mention.
                let t = &self.phrases[i].text;
                let lead = t.len() - t.trim_start().len();
                let trail = t.len() - t.trim_end().len();
                Mention {
                    observation: self.phrases[i].observation,
                    start: s + lead,
                    end: e - trail,
                }
            })
            .collect();
        out.sort_by_key(|m| (m.start, m.end, m.observation));
        // The same observation matched twice at the same place by nested phrases counts once.
        out.dedup_by(|b, a| a.observation == b.observation && b.start < a.end);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::Observation::*;

    fn obs(text: &str) -> Vec<Observation> {
        Lexicon::builtin()
            .mentions(&text.to_ascii_lowercase())
            .into_iter()
            .map(|m| m.observation)
            .collect()
    }

    #[test]
    fn prefix_whole_word_and_boundaries() {
        assert_eq!(obs("Bibasilar atelectatic changes"), vec![Atelectasis]);
        assert_eq!(obs("left pleural effusions"), vec![PleuralEffusion]);
        assert!(obs("massive").is_empty(), "unmention 'massive'");
        assert_eq!(obs("a mass in the left lung"), vec![LungLesion]);
        assert!(obs("midline").is_empty(), "line only as a word");
        let picc = obs("PICC line in place");
        assert!(
            !picc.is_empty() && picc.iter().all(|o| *o == SupportDevices),
            "{picc:?}"
        );
        assert!(!obs("plate-like atelectasis").contains(&SupportDevices));
        assert!(obs("pericardial effusion").is_empty());
        assert_eq!(obs("bronchopneumonia"), vec![Pneumonia]);
    }

    #[test]
    fn overlapping_observations_are_all_reported() {
        // As in the original labeler, a nodular opacity is both a lesion and an opacity.
        let o = obs("nodular opacity");
        assert!(o.contains(&LungLesion) && o.contains(&LungOpacity), "{o:?}");
        // Heart failure is an oedema mention; its bearing on Cardiomegaly is an aggregation rule.
        assert_eq!(obs("CHF"), vec![Edema]);
    }

    /// Every phrase of the original labeler's mention lists (shared reference data) is recognised as a mention
    /// of the same observation.
    #[test]
    fn recognises_every_reference_mention_phrase() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/chexpert-labeler/phrases/mention");
        if !dir.is_dir() {
            eprintln!("skipping: reference data not found at {}", dir.display());
            return;
        }
        let lex = Lexicon::builtin();
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            let o = Observation::from_name(&stem).unwrap();
            for phrase in std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let text = format!("x {} x", phrase.replace('_', " ").trim()).to_ascii_lowercase();
                let found: Vec<_> = lex
                    .mentions(&text)
                    .into_iter()
                    .map(|m| m.observation)
                    .collect();
                assert!(
                    found.contains(&o),
                    "{stem}: '{phrase}' not recognised (found {found:?})"
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn lexicon_errors_name_the_line() {
        let err = parse("[Edema]\n+ ok\n* bad\n", Path::new("my.lex"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.lex: line 3"), "{err}");
        let err = parse("[Lung]\n", Path::new("my.lex"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown observation 'Lung'"), "{err}");
    }
}
