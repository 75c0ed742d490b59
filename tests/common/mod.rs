//! Fixtures shared by the training tests: a small synthetic world with its shards, and a study config over them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chexlab::config::ImageFormat;
use chexlab::data::OnBadRecord;
use chexlab::data::synth::{self, SynthConfig};
use chexlab::shard::{ShardSpec, write_shards};

/// A synthetic world of `studies` studies at 32 px under `dir/world`, sharded into `dir/run/shards` with the given
/// label sources (name, path relative to the world). Returns the world's path.
pub fn world_and_shards(dir: &Path, studies: u64, sources: &[(&str, &str)]) -> PathBuf {
    let world = dir.join("world");
    let cfg = SynthConfig {
        studies,
        seed: 3,
        image_size: 32,
        format: ImageFormat::Png,
        ..SynthConfig::default()
    };
    synth::generate(&world, &cfg).unwrap();
    let spec = ShardSpec {
        dataset: world.clone(),
        sources: sources
            .iter()
            .map(|(name, file)| (name.to_string(), world.join(file).into()))
            .collect(),
        target_mb: 1.0,
        pre_resize: true,
        image_size: 32,
        seed: 5,
        on_bad_record: OnBadRecord::Fail,
        splits: Default::default(),
        max_image_side: chexlab::shard::DEFAULT_MAX_IMAGE_SIDE,
    };
    write_shards(&spec, &dir.join("run/shards")).unwrap();
    world
}

/// A 200-study world sharded with its truth labels, and `dir/study.toml` training a tiny DenseNet on them with
/// the given `[schedule]` lines. Returns the config's path.
pub fn study(dir: &Path, schedule: &str) -> PathBuf {
    let world = world_and_shards(dir, 200, &[("truth", "truth/image_labels.csv")]);
    let text = format!(
        r#"seed = 5
run_dir = "{run}"
[dataset]
kind = "synthetic"
root = "{world}"
image_size = 32
[[sources]]
name = "truth"
kind = "truth"
[shard]
target_mb = 1.0
[model]
arch = "small"
growth_rate = 4
block_config = [1, 1]
init_features = 8
image_size = 32
observations = ["Cardiomegaly", "Pleural Effusion", "Edema"]
[optimizer]
lr = 1e-3
[schedule]
batch_size = 8
{schedule}
"#,
        run = dir.join("run").display(),
        world = world.display()
    );
    let path = dir.join("study.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `dir/replicates.toml`: two label sources (the world's image truth and its report truth) × two replicates on
/// a 200-study world, one epoch each.
pub fn replicate_study(dir: &Path) -> PathBuf {
    // The one-source study's config, then the shards again with both sources.
    let base = std::fs::read_to_string(study(dir, "epochs = 1\nvalid_every = 100")).unwrap();
    std::fs::remove_dir_all(dir.join("run/shards")).unwrap();
    let world = world_and_shards(
        dir,
        200,
        &[
            ("truth", "truth/image_labels.csv"),
            ("report", "truth/report_labels.csv"),
        ],
    );
    let text = base.replace(
        "[shard]",
        &format!(
            "[[sources]]\nname = \"report\"\nkind = \"external\"\npath = \"{}\"\n[study]\nreplicates = 2\n\
             [evaluation]\nbootstrap = 50\n[shard]",
            world.join("truth/report_labels.csv").display()
        ),
    );
    let path = dir.join("replicates.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts that two weight vectors agree to `rel` × their largest magnitude.
pub fn assert_close(a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= rel * scale,
        "max |difference| {worst} (largest value {scale})"
    );
}

/// Runs the `chexlab` binary in `cwd`; returns its exit code and its stdout and stderr together.
pub fn chexlab(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// Runs the `chexlab` binary in `cwd`, asserts it succeeded, and returns its stdout and stderr together.
pub fn chexlab_ok(args: &[&str], cwd: &Path) -> String {
    let (code, text) = chexlab(args, cwd);
    assert_eq!(code, Some(0), "chexlab {args:?} failed:\n{text}");
    text
}
