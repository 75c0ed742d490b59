//! `chexlab shard`: join images with label sources into Parquet shards, from a config or from flags.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use chexlab::data::OnBadRecord;
use chexlab::shard::writer::{LabelInput, SplitPlan};

/// Arguments of `chexlab shard`.
#[derive(Args)]
pub struct ShardArgs {
    /// Experiment config: shards its dataset and sources into RUN_DIR/shards.
    #[arg(long, short, conflicts_with_all = ["dataset", "labels", "out"])]
    config: Option<PathBuf>,
    /// Override a config key.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    overrides: Vec<String>,
    /// Dataset directory: MIMIC-CXR-JPG layout (real or synthetic) or CheXpert (train.csv, valid.csv).
    #[arg(long, required_unless_present = "config")]
    dataset: Option<PathBuf>,
    /// A label source: NAME=FILE, FILE a labeled CSV with an id column — Path (images, as in train_cheXbert.csv),
    /// Study or study_id (patient00001/study1, or MIMIC's digits) — or NAME=@dataset for the dataset's own labels.
    /// Repeat for each source.
    #[arg(long = "labels", value_name = "NAME=FILE", value_parser = parse_label_source)]
    labels: Vec<(String, LabelInput)>,
    /// Fraction of the training patients held out as the validation split.
    #[arg(long, default_value_t = 0.0)]
    holdout: f64,
    /// Use the dataset's validation split as the test split.
    #[arg(long)]
    valid_as_test: bool,
    /// CheXpert's test set: its labels (groundtruth.csv, by Study; or by image Path), images under DATASET/test/.
    #[arg(long)]
    test_labels: Option<PathBuf>,
    /// Largest image width or height accepted (every image is decoded once while its shard is written).
    #[arg(long, default_value_t = chexlab::shard::DEFAULT_MAX_IMAGE_SIDE)]
    max_image_side: u32,
    /// Output directory.
    #[arg(long, required_unless_present = "config")]
    out: Option<PathBuf>,
    /// Side of the pre-resized images.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// Store the original encoded image bytes instead of pre-resized pixels.
    #[arg(long)]
    encoded: bool,
    /// Target shard size in MB.
    #[arg(long, default_value_t = 256.0)]
    target_mb: f64,
    /// Shuffle seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What to do with malformed records.
    #[arg(long, value_enum, default_value_t = OnBadRecord::Fail)]
    on_bad_record: OnBadRecord,
    /// Keep shards of an earlier run only when their whole file's SHA-256 matches (by default: their size and
    /// footer checksums; pages are checked whenever they are read).
    #[arg(long)]
    verify: bool,
}

/// `NAME=FILE` or `NAME=@dataset`.
fn parse_label_source(s: &str) -> Result<(String, LabelInput)> {
    let (name, file) = s.split_once('=').context("expected NAME=FILE")?;
    let input = match file {
        "@dataset" => LabelInput::Dataset,
        f => LabelInput::Csv(PathBuf::from(f)),
    };
    Ok((name.to_string(), input))
}

impl ShardArgs {
    /// Writes the shards and summarises them.
    pub fn run(self) -> Result<()> {
        let (spec, out) = match &self.config {
            Some(path) => {
                let cfg = chexlab::config::Config::load(path, &self.overrides)?;
                (cfg.shard_spec()?, cfg.run().shards())
            }
            None => {
                let spec = chexlab::shard::ShardSpec {
                    dataset: self.dataset.expect("required by clap"),
                    sources: self.labels,
                    target_mb: self.target_mb,
                    pre_resize: !self.encoded,
                    image_size: self.image_size,
                    seed: self.seed,
                    on_bad_record: self.on_bad_record,
                    splits: SplitPlan {
                        holdout_fraction: self.holdout,
                        valid_as_test: self.valid_as_test,
                        test_labels: self.test_labels,
                    },
                    max_image_side: self.max_image_side,
                };
                (spec, self.out.expect("required by clap"))
            }
        };
        let t = std::time::Instant::now();
        let index = chexlab::shard::writer::write_shards_verifying(
            &spec,
            &out,
            self.verify,
            Some(&super::stop_flag()),
        )?;
        let rows: u64 = index.splits.values().sum();
        println!(
            "{} shards, {rows} images ({}) with sources {} in {} ({:.1} s)",
            index.shards.len(),
            index
                .splits
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            index.sources.join(", "),
            out.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
