//! `chexlab synth`: generate a synthetic world, or a contact sheet of it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use chexlab::config::ImageFormat;
use chexlab::data::synth::{self, ReportStyle, SynthConfig};

/// Arguments of `chexlab synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Output directory (optional with --preview).
    #[arg(long, required_unless_present = "preview")]
    out: Option<PathBuf>,
    /// Number of studies.
    #[arg(long, default_value_t = 3000)]
    studies: u64,
    /// Image size in pixels (16..=512).
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image encoding.
    #[arg(long, value_enum, default_value_t = ImageFormat::Png)]
    format: ImageFormat,
    /// How the simulated radiologists write.
    #[arg(long, value_enum, default_value_t = ReportStyle::default())]
    report_style: ReportStyle,
    /// How often the realistic styles use the constructions simple rules misread (0..=2).
    #[arg(long, default_value_t = synth::style::DEFAULT_DIFFICULTY)]
    report_difficulty: f64,
    /// Write a contact sheet of examples per observation to this PNG.
    #[arg(long)]
    preview: Option<PathBuf>,
}

impl SynthArgs {
    /// Generates the world and/or the contact sheet.
    pub fn run(self) -> Result<()> {
        let cfg = SynthConfig {
            studies: self.studies,
            image_size: self.image_size,
            seed: self.seed,
            format: self.format,
            report_style: self.report_style,
            report_difficulty: self.report_difficulty,
            ..SynthConfig::default()
        };
        if let Some(sheet) = self.preview {
            let legend = synth::preview(&sheet, &cfg, 8)?;
            println!(
                "contact sheet: {} (rows listed in {})",
                sheet.display(),
                legend.display()
            );
        }
        if let Some(out) = self.out {
            let t = std::time::Instant::now();
            let s = synth::generate(&out, &cfg)?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "synthetic world: {} studies ({} train / {} validate / {} test), {} patients, {} images in {} \
                 ({secs:.1} s, {:.0} studies/s)",
                s.studies,
                s.train,
                s.validate,
                s.test,
                s.patients,
                s.images,
                out.display(),
                s.studies as f64 / secs.max(1e-9)
            );
        }
        Ok(())
    }
}
