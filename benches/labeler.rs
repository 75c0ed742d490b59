//! Rule-labeler throughput (reports/s) on realistic reports from the synthetic world, one core and all cores; on
//! the real OpenI development reports when the reference data is beside the repository; and the time of one
//! report without sentence breaks at 25, 50, 100 and 200 kB, and one sentence of nothing but heart mentions at
//! 5 to 40 kB, which must grow linearly with their length.

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

    // Real reports: the OpenI development set (findings and impression), when present.
    let openi = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/openi/dev_reports.csv");
    if let Ok(mut r) = csv::Reader::from_path(&openi) {
        let header = r.headers().expect("header").clone();
        let col = |n: &str| header.iter().position(|h| h == n).expect("column");
        let (f, i) = (col("findings"), col("impression"));
        let real: Vec<String> = r
            .records()
            .map(|rec| {
                let rec = rec.expect("record");
                format!("{} {}", &rec[f], &rec[i])
            })
            .collect();
        let mut group = c.benchmark_group("rule_labeler_openi");
        group.throughput(Throughput::Elements(real.len() as u64));
        group.bench_function("one_core", |b| {
            b.iter(|| {
                real.iter()
                    .map(|r| labeler.label(r).0[2] as usize)
                    .sum::<usize>()
            })
        });
        group.finish();
    }

    // One report without a sentence break: words of the synthetic reports, punctuation removed.
    let words: String = reports
        .join(" ")
        .chars()
        .map(|c| if c.is_ascii_alphabetic() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut group = c.benchmark_group("rule_labeler_unpunctuated");
    group.sample_size(10);
    for kb in [25usize, 50, 100, 200] {
        let report: String = words.chars().cycle().take(kb * 1000).collect();
        group.throughput(Throughput::Bytes(report.len() as u64));
        group.bench_function(format!("{kb}_kB"), |b| {
            b.iter(|| labeler.label(&report).0[2] as usize)
        });
    }
    group.finish();

    // One sentence of many heart mentions, one of them called stable: every mention of an organ's size asks
    // what the sentence says of it (quadratic until those answers were kept per sentence; found by fuzzing).
    let unit = "the heart is stable no large heart is seen and the cardiac silhouette is ";
    let mut group = c.benchmark_group("rule_labeler_one_sentence_of_hearts");
    group.sample_size(10);
    for kb in [5usize, 10, 20, 40] {
        let report: String = unit.chars().cycle().take(kb * 1000).collect();
        group.throughput(Throughput::Bytes(report.len() as u64));
        group.bench_function(format!("{kb}_kB"), |b| {
            b.iter(|| labeler.label(&report).0[2] as usize)
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
