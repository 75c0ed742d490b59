//! One training step (forward, BCE, backward, flat gradient, Adam) of the classifiers chexlab trains on CPU:
//! - `small_64px_b16`: the demo's small DenseNet (growth 12, blocks 2-2-2, 16 stem features), 1×64×64, batch 16;
//! - `densenet121_224px_b8`: DenseNet-121, 1×224×224, batch 8.
//!
//! Both with 14 outputs. Threads: the global pool (`RAYON_NUM_THREADS`). `benches/compare_torch.py` runs this
//! bench and the same steps in PyTorch on the same number of threads, and prints the ratios.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use burn::tensor::Device;
use chexlab::config::{OptimizerConfig, Precision};
use chexlab::model::{DenseNet, DenseNetConfig};
use chexlab::train::bench::model_config;
use chexlab::train::{apply, gradients, optimizer};

struct Case {
    name: &'static str,
    cfg: DenseNetConfig,
    size: usize,
    batch: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "small_64px_b16",
            cfg: model_config(chexlab::model::Arch::Small).expect("known arch"),
            size: 64,
            batch: 16,
        },
        Case {
            name: "densenet121_224px_b8",
            cfg: model_config(chexlab::model::Arch::Densenet121).expect("known arch"),
            size: 224,
            batch: 8,
        },
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let only = std::env::var("CHEXLAB_BENCH_CASE").ok();
    for case in cases() {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        let inner = Device::flex();
        let ad = inner.clone().autodiff();
        ad.seed(1);
        let mut model: Option<DenseNet> = Some(case.cfg.init(&ad));
        let mut optim = optimizer(&OptimizerConfig::default());
        let n = case.batch * case.size * case.size;
        // Deterministic pseudo-images and labels.
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
            .collect();
        let y: Vec<f32> = (0..case.batch * 14)
            .map(|i| (i % 3 == 0) as u8 as f32)
            .collect();
        let mask = vec![1.0f32; y.len()];
        let shape = [case.batch, 1, case.size, case.size];
        group.throughput(Throughput::Elements(case.batch as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| {
                let m = model.take().expect("model");
                let (layout, flat) =
                    gradients(&m, x.clone(), shape, &y, &mask, &ad, Precision::F32);
                let _ = chexlab::train::grads::norm_tensor(&flat, layout.len());
                model = Some(apply(m, &mut optim, &layout, &flat, 1e-4));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
