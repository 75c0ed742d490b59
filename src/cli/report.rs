//! `chexlab report`: the report files of an evaluated run.

use anyhow::Result;
use clap::Args;

use chexlab::data::Split;

/// Arguments of `chexlab report`.
#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    run: super::RunDirArgs,
    /// The evaluated split.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    split: Split,
}

impl ReportArgs {
    /// Writes the report and prints its headline.
    pub fn run(self) -> Result<()> {
        let (cfg, run) = self.run.load()?;
        let r = chexlab::eval::report::write_report(&run, self.split, &cfg.report_study())?;
        println!("{}", r.headline);
        println!(
            "report: {} (and {}; {} plot files in {})",
            r.markdown.display(),
            r.html.display(),
            r.plots.len(),
            run.plots().display()
        );
        Ok(())
    }
}
