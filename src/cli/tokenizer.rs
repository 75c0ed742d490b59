//! `chexlab tokenizer train`: a domain WordPiece vocabulary for the BERT labelers.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use chexlab::data::OnBadRecord;
use chexlab::labelers::bert::tokenizer::ReportTokenizer;

/// Arguments of `chexlab tokenizer`.
#[derive(Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    action: TokenizerAction,
}

#[derive(Subcommand)]
enum TokenizerAction {
    /// Train a WordPiece vocabulary (uncased BERT rules) on a report corpus.
    Train {
        /// Reports CSV in the labeler input format.
        #[arg(long)]
        reports: PathBuf,
        /// Output `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
        /// Vocabulary size.
        #[arg(long, default_value_t = 3000)]
        vocab_size: usize,
        /// Words seen fewer times are left to sub-words.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
    },
}

impl TokenizerArgs {
    /// Trains and saves the vocabulary.
    pub fn run(self) -> Result<()> {
        let TokenizerAction::Train {
            reports,
            out,
            vocab_size,
            min_frequency,
        } = self.action;
        chexlab::io::refuse_overwrite(&out, &[&reports])?;
        // Streamed: only the word counts stay in memory.
        let (mut n, mut bad) = (0u64, None);
        let texts = chexlab::labelers::format::read_reports(&reports, OnBadRecord::Fail)?
            .map_while(|row| match row {
                Ok(r) => {
                    n += 1;
                    Some(r.text)
                }
                Err(e) => {
                    bad = Some(e);
                    None
                }
            });
        let tok = ReportTokenizer::train(texts, vocab_size, min_frequency)?;
        if let Some(e) = bad {
            return Err(e.into());
        }
        tok.save(&out)?;
        println!(
            "trained a {}-token vocabulary on {n} reports into {}",
            tok.vocab_size(),
            out.display()
        );
        Ok(())
    }
}
