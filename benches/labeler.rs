//! Rule-labeler throughput (reports/s) on realistic reports from the synthetic world: one core, and all cores.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

use chexlab::data::synth::world::Prior;
use chexlab::data::synth::{SynthConfig, generate_study};
use chexlab::labelers::rules::RuleLabeler;

fn bench(c: &mut Criterion) {
    let cfg = SynthConfig {
        image_size: 16,
        ..SynthConfig::default()
    };
    let prior = Prior::new(cfg.priors);
    let reports: Vec<String> = (0..2000)
        .map(|i| generate_study(&cfg, &prior, i, i).report.impression)
        .collect();
    let labeler = RuleLabeler::default();
    let mut group = c.benchmark_group("rule_labeler");
    group.throughput(Throughput::Elements(reports.len() as u64));
    group.bench_function("one_core", |b| {
        b.iter(|| {
            reports
                .iter()
                .map(|r| labeler.label(r).0[2] as usize)
                .sum::<usize>()
        })
    });
    group.bench_function("all_cores", |b| {
        b.iter(|| {
            reports
                .par_iter()
                .map(|r| labeler.label(r).0[2] as usize)
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
