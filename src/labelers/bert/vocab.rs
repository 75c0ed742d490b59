//! A deterministic WordPiece vocabulary trainer. The `tokenizers` crate's trainer breaks ties between equally
//! frequent merges by the order of a hash map, so one corpus gives a different vocabulary from run to run — and
//! with it different BERT weights and labels. This one learns the same kind of vocabulary (BPE merges over words,
//! continuation pieces marked `##`, as Hugging Face's WordPiece trainer does) with every tie broken by the pieces'
//! text, so the vocabulary is a function of the word counts alone; `tokenizers` still does the encoding.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

/// The continuation-piece prefix.
pub const PREFIX: &str = "##";

type Pair = (u32, u32);

/// A candidate merge: its count when queued, and its pieces' text for a total order.
#[derive(PartialEq, Eq)]
struct Candidate {
    count: u64,
    text: Reverse<(String, String)>,
    pair: Pair,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Most frequent first; among equals, the pair whose texts sort first.
        (self.count, &self.text).cmp(&(other.count, &other.text))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Learns a vocabulary of at most `vocab_size` pieces from `words` (word → count; words as the pre-tokenizer
/// gives them): `special` first, then every character that occurs (word-initial as itself, inside words as
/// `##c`), in text order, then the merged pieces in the order they were learned, until the vocabulary is full or
/// the best merge occurs fewer than `min_frequency` times. Returns the pieces in id order.
pub fn learn(
    words: &BTreeMap<String, u64>,
    vocab_size: usize,
    min_frequency: u64,
    special: &[&str],
) -> Vec<String> {
    let mut pieces: Vec<String> = special.iter().map(|s| s.to_string()).collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    for (i, p) in pieces.iter().enumerate() {
        ids.insert(p.clone(), i as u32);
    }
    let piece = |i: usize, c: char| {
        if i == 0 {
            c.to_string()
        } else {
            format!("{PREFIX}{c}")
        }
    };
    let alphabet: BTreeSet<String> = words
        .keys()
        .flat_map(|w| w.chars().enumerate().map(|(i, c)| piece(i, c)))
        .collect();
    for a in alphabet {
        if !ids.contains_key(&a) {
            ids.insert(a.clone(), pieces.len() as u32);
            pieces.push(a);
        }
    }
    // Each word as a sequence of piece ids, with its count.
    let mut seqs: Vec<(Vec<u32>, u64)> = words
        .iter()
        .map(|(w, &n)| {
            let s = w
                .chars()
                .enumerate()
                .map(|(i, c)| ids[&piece(i, c)])
                .collect();
            (s, n)
        })
        .collect();
    let mut counts: HashMap<Pair, u64> = HashMap::new();
    let mut at: HashMap<Pair, HashSet<usize>> = HashMap::new();
    for (k, (s, n)) in seqs.iter().enumerate() {
        for w in s.windows(2) {
            *counts.entry((w[0], w[1])).or_default() += n;
            at.entry((w[0], w[1])).or_default().insert(k);
        }
    }
    let candidate = |pair: Pair, count: u64, pieces: &[String]| Candidate {
        count,
        text: Reverse((
            pieces[pair.0 as usize].clone(),
            pieces[pair.1 as usize].clone(),
        )),
        pair,
    };
    let mut queue: BinaryHeap<Candidate> = counts
        .iter()
        .map(|(&p, &c)| candidate(p, c, &pieces))
        .collect();
    while pieces.len() < vocab_size {
        let Some(top) = queue.pop() else { break };
        let now = counts.get(&top.pair).copied().unwrap_or(0);
        if now != top.count {
            // Stale: the count fell since it was queued.
            if now > 0 {
                queue.push(candidate(top.pair, now, &pieces));
            }
            continue;
        }
        if now < min_frequency.max(1) {
            break;
        }
        let (a, b) = top.pair;
        let merged = format!(
            "{}{}",
            pieces[a as usize],
            pieces[b as usize].trim_start_matches(PREFIX)
        );
        let new = match ids.get(&merged) {
            Some(&id) => id,
            None => {
                let id = pieces.len() as u32;
                ids.insert(merged.clone(), id);
                pieces.push(merged);
                id
            }
        };
        let mut words_at: Vec<usize> = at
            .remove(&top.pair)
            .unwrap_or_default()
            .into_iter()
            .collect();
        words_at.sort_unstable();
        let mut grown: BTreeSet<Pair> = BTreeSet::new();
        for k in words_at {
            let (s, n) = &mut seqs[k];
            let n = *n;
            for w in s.windows(2) {
                if let Some(c) = counts.get_mut(&(w[0], w[1])) {
                    *c -= n;
                }
            }
            let mut out = Vec::with_capacity(s.len());
            let mut i = 0;
            while i < s.len() {
                if i + 1 < s.len() && (s[i], s[i + 1]) == (a, b) {
                    out.push(new);
                    i += 2;
                } else {
                    out.push(s[i]);
                    i += 1;
                }
            }
            *s = out;
            for w in s.windows(2) {
                let p = (w[0], w[1]);
                *counts.entry(p).or_default() += n;
                at.entry(p).or_default().insert(k);
                grown.insert(p);
            }
        }
        counts.retain(|_, c| *c > 0);
        for p in grown {
            if let Some(&c) = counts.get(&p) {
                queue.push(candidate(p, c, &pieces));
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(w, n)| (w.to_string(), *n)).collect()
    }

    #[test]
    fn merges_follow_counts_and_ties_break_by_text() {
        let w = words(&[("ab", 3), ("cd", 3), ("abcd", 1)]);
        let v = learn(&w, 100, 1, &["[UNK]"]);
        // Alphabet in text order: word-initial a, c; inner ##b, ##c, ##d.
        assert_eq!(v[..6], ["[UNK]", "##b", "##c", "##d", "a", "c"]);
        // a ##b occurs 4 times (ab, abcd), c ##d 3; then (ab, ##c) and (##c, ##d) tie at 1 and ##c ##d sorts
        // first; then ab ##cd.
        assert_eq!(v[6..], ["ab", "cd", "##cd", "abcd"]);
        // A full vocabulary stops early; min_frequency stops rare merges.
        assert_eq!(learn(&w, 7, 1, &["[UNK]"]).len(), 7);
        assert_eq!(learn(&w, 100, 3, &["[UNK]"])[6..], ["ab", "cd"]);
    }

    #[test]
    fn the_vocabulary_is_a_function_of_the_counts() {
        let text = "small left pneumothorax no pleural effusion mild pulmonary edema pneumonia \
                    atelectasis at the left base stable cardiomegaly no pneumothorax";
        let mut w = BTreeMap::new();
        for (i, t) in text.split(' ').enumerate() {
            *w.entry(t.to_string()).or_insert(0) += 1 + (i % 3) as u64;
        }
        let first = learn(&w, 80, 1, &["[PAD]"]);
        for _ in 0..5 {
            assert_eq!(learn(&w, 80, 1, &["[PAD]"]), first);
        }
        assert!(first.iter().any(|p| p == "pneumothorax"), "{first:?}");
    }
}
