//! Evaluation statistics at CheXpert-test-set scale and beyond: a stratified bootstrap AUROC interval (1,000
//! resamples) and a paired comparison (1,000 paired resamples + DeLong) for one observation over 100,000 images,
//! on all cores. A full table is 14 observations × this.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

use chexlab::eval::bootstrap::auroc_ci;
use chexlab::eval::compare::paired;

fn bench(c: &mut Criterion) {
    let n = 100_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let labels: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.15).collect();
    let a: Vec<f32> = labels
        .iter()
        .map(|&l| rng.random::<f32>() + if l { 0.4 } else { 0.0 })
        .collect();
    let b: Vec<f32> = labels
        .iter()
        .map(|&l| rng.random::<f32>() + if l { 0.3 } else { 0.0 })
        .collect();
    let mut group = c.benchmark_group("bootstrap_100k");
    group.sample_size(10);
    group.bench_function("auroc_ci_1000", |bch| {
        bch.iter(|| auroc_ci(&a, &labels, 1000, 0.95, 7).unwrap())
    });
    group.bench_function("paired_1000_delong", |bch| {
        bch.iter(|| paired(&a, &b, &labels, 1000, 0.95, 7).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
