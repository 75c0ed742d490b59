//! WordPiece tokenization of reports (uncased BERT rules) through the `tokenizers` crate.
//!
//! A tokenizer comes from a `tokenizer.json` (Hugging Face's format) or a BERT `vocab.txt`, or is trained on a
//! report corpus ([`ReportTokenizer::train`], deterministic: [`super::vocab`]): general vocabularies shred radiology words ("pneumothorax" →
//! `p ##ne ##um ##otho ##ra ##x`), a domain one keeps them whole and shortens every sequence.
//!
//! Sequences are `[CLS] tokens [SEP]`, at most `max_len` (512) ids: a longer report keeps its first `max_len - 1`
//! ids and ends with `[SEP]`, as CheXbert does; [`Encoded::truncated`] tells, and callers count it. Padding and
//! truncation settings inside a `tokenizer.json` are switched off: batching pads to the longest sequence of a batch.

use std::path::{Path, PathBuf};

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// BERT's special tokens, in the order a trained vocabulary gets them.
pub const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Maximum sequence length of BERT models (their position embeddings).
pub const MAX_LEN: usize = 512;

/// One encoded report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// `[CLS] ... [SEP]` token ids.
    pub ids: Vec<u32>,
    /// The report was longer than the maximum and was cut.
    pub truncated: bool,
}

/// A padded batch: ids and mask, row-major `[rows, len]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded {
    /// Token ids, `[rows × len]` row-major.
    pub ids: Vec<i64>,
    /// 1 for tokens, 0 for padding.
    pub mask: Vec<f32>,
    /// Sequences.
    pub rows: usize,
    /// Padded length.
    pub len: usize,
}

/// Tokenizer of reports.
#[derive(Clone)]
pub struct ReportTokenizer {
    inner: Tokenizer,
    sep: u32,
    pad: u32,
    max_len: usize,
}

fn tok_err(path: &Path, e: impl Into<tokenizers::Error>) -> Error {
    Error::tokenizer(path, e.into())
}

impl ReportTokenizer {
    fn wrap(mut inner: Tokenizer, path: &Path) -> Result<Self> {
        inner.with_truncation(None).map_err(|e| tok_err(path, e))?;
        inner.with_padding(None);
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| tok_err(path, format!("vocabulary has no {t} token")))
        };
        let (sep, pad) = (id("[SEP]")?, id("[PAD]")?);
        id("[CLS]")?;
        Ok(ReportTokenizer {
            inner,
            sep,
            pad,
            max_len: MAX_LEN,
        })
    }

    /// The uncased BERT pipeline (clean text, split CJK, strip accents, lowercase; whitespace and punctuation split;
    /// `[CLS] $A [SEP]`) around a WordPiece model.
    fn bert_pipeline(model: WordPiece) -> Tokenizer {
        let mut t = Tokenizer::new(model);
        t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
        t.with_pre_tokenizer(Some(BertPreTokenizer));
        t.with_decoder(Some(WordPieceDecoder::default()));
        t
    }

    fn add_processor(t: &mut Tokenizer) -> std::result::Result<(), String> {
        let id = |s: &str| {
            t.token_to_id(s)
                .ok_or(format!("vocabulary has no {s} token"))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        t.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        Ok(())
    }

    /// Loads a `tokenizer.json`, a `vocab.txt`, or a directory holding one of them (`tokenizer.json` preferred).
    pub fn from_path(path: &Path) -> Result<Self> {
        let file: PathBuf = if path.is_dir() {
            ["tokenizer.json", "vocab.txt"]
                .iter()
                .map(|f| path.join(f))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    Error::format(path, "no tokenizer.json or vocab.txt in this directory")
                })?
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            return Err(Error::io(
                &file,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer not found"),
            ));
        }
        if file.extension().is_some_and(|e| e == "json") {
            let t = Tokenizer::from_file(&file).map_err(|e| tok_err(&file, e))?;
            return Self::wrap(t, &file);
        }
        let model = WordPiece::from_file(&file.to_string_lossy())
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| tok_err(&file, e))?;
        let mut t = Self::bert_pipeline(model);
        Self::add_processor(&mut t).map_err(|e| tok_err(&file, e))?;
        Self::wrap(t, &file)
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json`.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let here = Path::new("<tokenizer.json bytes>");
        Self::wrap(
            Tokenizer::from_bytes(bytes).map_err(|e| tok_err(here, e))?,
            here,
        )
    }

    /// Trains a WordPiece vocabulary of at most `vocab_size` entries on `reports` (merges seen fewer than
    /// `min_frequency` times are not learned), deterministically ([`super::vocab`]): the same reports give the
    /// same `tokenizer.json`, byte for byte.
    pub fn train<I, S>(reports: I, vocab_size: usize, min_frequency: u64) -> Result<Self>
    where
        I: Iterator<Item = S>,
        S: AsRef<str>,
    {
        use tokenizers::{
            Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
        };
        let here = Path::new("<report corpus>");
        // The words exactly as the encoding pipeline will see them.
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut words: std::collections::BTreeMap<String, u64> = Default::default();
        for r in reports {
            let mut n = tokenizers::NormalizedString::from(r.as_ref());
            normalizer.normalize(&mut n).map_err(|e| tok_err(here, e))?;
            let mut p = PreTokenizedString::from(n);
            BertPreTokenizer
                .pre_tokenize(&mut p)
                .map_err(|e| tok_err(here, e))?;
            for (w, _, _) in p.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *words.entry(w.to_string()).or_default() += 1;
            }
        }
        let pieces = super::vocab::learn(&words, vocab_size, min_frequency, &SPECIAL);
        let vocab: ahash::AHashMap<String, u32> = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i as u32))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix(super::vocab::PREFIX.into())
            .build()
            .map_err(|e| tok_err(here, e))?;
        let mut t = Self::bert_pipeline(model);
        t.add_special_tokens(&SPECIAL.map(|s| AddedToken::from(s, true)));
        Self::add_processor(&mut t).map_err(|e| tok_err(here, e))?;
        Self::wrap(t, here)
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|e| tok_err(Path::new("<tokenizer.json>"), e))
    }

    /// Writes `tokenizer.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, self.to_json()?.as_bytes())
    }

    /// Vocabulary size (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Maximum sequence length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Sets the maximum sequence length (at most the model's position embeddings; at least 2).
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(2);
        self
    }

    /// The token strings of `text` (with `[CLS]`/`[SEP]`), for inspection.
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err(Path::new("<report>"), e))?;
        Ok(e.get_tokens().to_vec())
    }

    /// Encodes one report.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err(Path::new("<report>"), e))?;
        let mut ids = e.get_ids().to_vec();
        let truncated = ids.len() > self.max_len;
        if truncated {
            ids.truncate(self.max_len - 1);
            ids.push(self.sep);
        }
        Ok(Encoded { ids, truncated })
    }

    /// Pads `rows` to the longest one.
    pub fn pad(&self, rows: &[&Encoded]) -> Padded {
        let len = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in rows {
            ids.extend(r.ids.iter().map(|&i| i64::from(i)));
            ids.extend(std::iter::repeat_n(i64::from(self.pad), len - r.ids.len()));
            mask.extend(std::iter::repeat_n(1.0, r.ids.len()));
            mask.extend(std::iter::repeat_n(0.0, len - r.ids.len()));
        }
        Padded {
            ids,
            mask,
            rows: rows.len(),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let mut v = Vec::new();
        for i in 0..50 {
            v.push(format!(
                "Small left pneumothorax. No pleural effusion. Cardiomegaly is stable ({i})."
            ));
            v.push(
                "Moderate pulmonary edema versus atelectasis; the pneumothorax has resolved."
                    .to_string(),
            );
        }
        v
    }

    #[test]
    fn trained_vocabulary_keeps_domain_words_whole_and_round_trips() {
        let t = ReportTokenizer::train(corpus().into_iter(), 300, 2).unwrap();
        let tokens = t.tokens("Pneumothorax; EDEMA.").unwrap();
        assert_eq!(
            tokens,
            ["[CLS]", "pneumothorax", ";", "edema", ".", "[SEP]"]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        t.save(&path).unwrap();
        let back = ReportTokenizer::from_path(dir.path()).unwrap();
        let text = "Stable cardiomegaly; no pneumothorax.";
        assert_eq!(back.encode(text).unwrap(), t.encode(text).unwrap());
        assert_eq!(back.vocab_size(), t.vocab_size());
    }

    #[test]
    fn long_reports_keep_the_first_ids_and_end_with_sep() {
        let t = ReportTokenizer::train(corpus().into_iter(), 300, 2).unwrap();
        let full = t
            .clone()
            .with_max_len(1000)
            .encode("no pleural effusion no pleural effusion no")
            .unwrap();
        let t = t.with_max_len(8);
        let e = t
            .encode("no pleural effusion no pleural effusion no")
            .unwrap();
        assert!(e.truncated && !full.truncated);
        assert_eq!(e.ids.len(), 8);
        assert_eq!(e.ids[..7], full.ids[..7]);
        assert_eq!(e.ids[7], t.sep);
        let short = t.encode("edema").unwrap();
        let p = t.pad(&[&e, &short]);
        assert_eq!((p.rows, p.len), (2, 8));
        assert_eq!(p.mask[8..], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(p.ids[11], i64::from(t.pad));
    }
}
