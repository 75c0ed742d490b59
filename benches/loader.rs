//! Shard reader throughput: images/s delivered by `ShardSet::read` (projection + row selection + label decode)
//! for pre-resized 64 px and 224 px shards, reading one rank's shuffled assignment in batches of 64.
//! `benches/loader_peer.py` reads the same shards with pyarrow for a reference ratio.
//!
//! The shards are written once under `target/bench-shards/` (synthetic world, 2,000 studies).

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chexlab::config::ImageFormat;
use chexlab::data::synth::{SynthConfig, generate};
use chexlab::data::{OnBadRecord, Split};
use chexlab::shard::{ShardSet, ShardSpec, write_shards};

/// Builds (once) a world and its shards at `size` px.
pub fn shards(size: u32) -> PathBuf {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-shards");
    let world = base.join("world");
    if !world.join("synth.json").is_file() {
        let cfg = SynthConfig {
            studies: 2000,
            seed: 5,
            image_size: 256,
            format: ImageFormat::Png,
            ..SynthConfig::default()
        };
        generate(&world, &cfg).expect("world");
    }
    let out = base.join(format!("s{size}"));
    if !out.join("index.json").is_file() {
        let spec = ShardSpec {
            dataset: world.clone(),
            sources: vec![("truth".into(), world.join("truth/image_labels.csv"))],
            target_mb: 64.0,
            pre_resize: true,
            image_size: size,
            seed: 1,
            on_bad_record: OnBadRecord::Fail,
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
        let set = ShardSet::open(&shards(size)).expect("open");
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
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
