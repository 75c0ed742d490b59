//! Shard reader throughput, in images/s:
//! - `read_*`: `ShardSet::read` (projection + row selection + label decode) of one rank's shuffled assignment,
//!   in random batches of 64 and as one whole epoch, for pre-resized 64 px and 224 px shards, each also without
//!   page checksums (`_unchecked`: the cost of checking is the ratio);
//! - `batch16_*`: what the training loader does per batch of 16 (`shard::load_batch`: read, decode encoded shards,
//!   augment, normalise and stack), for pre-resized 64 px and 224 px shards and for JPEG-bytes shards decoded
//!   and resized to 224 px.
//!
//! `python3 benches/loader_peer.py` runs this bench and `benches/train_step.rs`, reads the same shards with
//! pyarrow, and prints the ratios. The shards are written once under `target/bench-shards/` (synthetic world,
//! 2,000 studies, 256 px JPEG).

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chexlab::config::ImageFormat;
use chexlab::data::augment::AugmentConfig;
use chexlab::data::synth::{SynthConfig, generate};
use chexlab::data::{OnBadRecord, Split};
use chexlab::shard::{BatchPos, load_batch};
use chexlab::shard::{ShardSet, ShardSpec, write_shards};

/// Builds (once) a world and its shards at `size` px (`encoded`: the original JPEG bytes).
pub fn shards(size: u32, encoded: bool) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-shards");
    let world = base.join("world-jpeg");
    if !world.join("synth.json").is_file() {
        let cfg = SynthConfig {
            studies: 2000,
            seed: 5,
            image_size: 256,
            format: ImageFormat::Jpeg,
            ..SynthConfig::default()
        };
        generate(&world, &cfg).expect("world");
    }
    let out = base.join(if encoded {
        "jpeg".to_string()
    } else {
        format!("s{size}")
    });
    if !out.join("index.json").is_file() {
        let spec = ShardSpec {
            dataset: world.clone(),
            sources: vec![("truth".into(), world.join("truth/image_labels.csv").into())],
            target_mb: 64.0,
            pre_resize: !encoded,
            image_size: size,
            seed: 1,
            on_bad_record: OnBadRecord::Fail,
            splits: Default::default(),
            max_image_side: chexlab::shard::DEFAULT_MAX_IMAGE_SIDE,
        };
        write_shards(&spec, &out).expect("shards");
    }
    out
}

fn bench(c: &mut Criterion) {
    chexlab::progress::set_enabled(false);
    let mut group = c.benchmark_group("loader");
    group.sample_size(10);
    for size in [64u32, 224] {
        let set = ShardSet::open(&shards(size, false)).expect("open");
        let rows = set.assignment(Split::Train, 0, 1, 0, 7);
        group.throughput(Throughput::Elements(rows.len() as u64));
        group.bench_function(format!("read_{size}px_batches_of_64"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for batch in rows.chunks(64) {
                    n += set.read(batch, "truth").expect("read").len();
                }
                n
            })
        });
        group.bench_function(format!("read_{size}px_whole_epoch"), |b| {
            b.iter(|| set.read(&rows, "truth").expect("read").len())
        });
        // The peer: the same reads without page checksums, for the cost of checking.
        let unchecked = set.clone().without_page_checks();
        group.bench_function(format!("read_{size}px_batches_of_64_unchecked"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for batch in rows.chunks(64) {
                    n += unchecked.read(batch, "truth").expect("read").len();
                }
                n
            })
        });
        group.bench_function(format!("read_{size}px_whole_epoch_unchecked"), |b| {
            b.iter(|| unchecked.read(&rows, "truth").expect("read").len())
        });
    }
    let augment = AugmentConfig {
        enabled: true,
        ..AugmentConfig::default()
    };
    for (name, size, encoded) in [
        ("batch16_64px_augment", 64usize, false),
        ("batch16_224px_augment", 224, false),
        ("batch16_jpeg_to_224px_augment", 224, true),
    ] {
        let set = ShardSet::open(&shards(size as u32, encoded)).expect("open");
        // 40 batches of one rank's shuffled assignment: enough to touch every shard.
        let rows = set.assignment(Split::Train, 0, 1, 0, 7);
        let batches: Vec<_> = rows.chunks_exact(16).take(40).collect();
        group.throughput(Throughput::Elements(16 * batches.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for (k, rows) in batches.iter().enumerate() {
                    let pos = BatchPos {
                        seed: 7,
                        epoch: 0,
                        batch: k,
                        rank: 0,
                    };
                    n += load_batch(&set, rows, "truth", size, 1, &augment, pos)
                        .expect("batch")
                        .n;
                }
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
