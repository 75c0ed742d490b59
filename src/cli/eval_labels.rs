//! `chexlab eval-labels`: predicted labels against truth labels.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use chexlab::config::UncertaintyPolicy;

/// Arguments of `chexlab eval-labels`.
#[derive(Args)]
pub struct EvalLabelsArgs {
    /// Predicted labels CSV.
    #[arg(long)]
    pred: PathBuf,
    /// Truth labels CSV.
    #[arg(long)]
    truth: PathBuf,
    /// Write the metrics as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Against binary image truth: how uncertain predictions count (zeros: negative, ones: positive).
    #[arg(long, default_value = "zeros",
          value_parser = PossibleValuesParser::new(["zeros", "ones"])
              .map(|s| if s == "ones" { UncertaintyPolicy::Ones } else { UncertaintyPolicy::Zeros }))]
    uncertain: UncertaintyPolicy,
}

impl EvalLabelsArgs {
    /// Prints the metrics, and writes them as JSON when asked.
    pub fn run(self) -> Result<()> {
        if let Some(out) = &self.out {
            chexlab::io::refuse_overwrite(out, &[&self.pred, &self.truth])?;
        }
        let m = chexlab::labelers::metrics::evaluate(&self.pred, &self.truth, self.uncertain)?;
        print!("{m}");
        if let Some(out) = self.out {
            chexlab::io::write_atomic(&out, serde_json::to_string_pretty(&m)?.as_bytes())?;
        }
        Ok(())
    }
}
