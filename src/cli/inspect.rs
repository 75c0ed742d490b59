//! `chexlab inspect`: what a dataset, label CSV, reports CSV, shard directory or run directory holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use chexlab::data::OnBadRecord;

/// Arguments of `chexlab inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// Path to inspect.
    path: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Verify checksums where the content has them (shard directories).
    #[arg(long)]
    verify: bool,
    /// What to do with malformed records.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Fail)]
    on_bad_record: OnBadRecord,
}

impl InspectArgs {
    /// Prints the summary.
    pub fn run(self) -> Result<()> {
        if self.path.join(chexlab::shard::INDEX).is_file() {
            let set = chexlab::shard::ShardSet::open(&self.path)?;
            if self.verify {
                set.verify()?;
            }
            if self.json {
                println!("{}", serde_json::to_string_pretty(&set.index)?);
            } else {
                print!("{}", chexlab::inspect::shard_summary(&set, self.verify));
            }
            return Ok(());
        }
        let found = chexlab::inspect::inspect(&self.path, self.on_bad_record)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            print!("{found}");
        }
        Ok(())
    }
}
