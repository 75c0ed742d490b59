//! Synthetic-world generation throughput (studies/s), files included: findings, report, rendering, PNG encoding
//! and writing, at 64 px (CPU runs) and 320 px (the study's protocol size).

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chexlab::config::ImageFormat;
use chexlab::data::synth::world::Prior;
use chexlab::data::synth::{SynthConfig, encode, generate, generate_study};
use rayon::prelude::*;

fn bench(c: &mut Criterion) {
    chexlab::progress::set_enabled(false);
    let mut group = c.benchmark_group("synth");
    group.sample_size(10);
    for (size, studies) in [(64u32, 2000u64), (320, 200)] {
        let cfg = SynthConfig {
            studies,
            image_size: size,
            seed: 1,
            format: ImageFormat::Png,
            ..SynthConfig::default()
        };
        group.throughput(Throughput::Elements(studies));
        // The generator's own cost on all cores (findings, report, render, PNG encode), without the file system.
        let prior = Prior::new(cfg.priors);
        group.bench_function(format!("png_{size}px_in_memory"), |b| {
            b.iter(|| {
                (0..studies)
                    .into_par_iter()
                    .map(|i| {
                        let s = generate_study(&cfg, &prior, i, i / 2);
                        let bytes: usize = s
                            .images
                            .iter()
                            .map(|im| encode(&im.pixels, size, cfg.format).expect("encode").len())
                            .sum();
                        bytes + s.report.text.len()
                    })
                    .sum::<usize>()
            })
        });
        // End to end, files and tables written (depends on the disk as much as on the generator).
        group.bench_function(format!("png_{size}px"), |b| {
            b.iter_with_large_drop(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                generate(dir.path(), &cfg).expect("generate");
                dir
            })
        });
    }
    // Peer in the same run: the file-system floor — the same directory tree and file sizes as a 64 px world,
    // with no generation at all. The end-to-end figure cannot beat it.
    let studies = 2000u64;
    group.throughput(Throughput::Elements(studies));
    group.bench_function("fs_floor_64px", |b| {
        b.iter_with_large_drop(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            (0..studies).into_par_iter().for_each(|i| {
                let study = dir.path().join(format!(
                    "files/p10/p{}/s{}",
                    10_000_000 + i / 2,
                    50_000_000 + i
                ));
                std::fs::create_dir_all(&study).expect("mkdir");
                std::fs::write(study.with_extension("txt"), [b'x'; 800]).expect("report");
                for k in 0..1 + (i % 5 < 2) as u64 {
                    std::fs::write(study.join(format!("{k}.png")), [b'x'; 2600]).expect("image");
                }
            });
            dir
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
