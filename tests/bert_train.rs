//! Training and running the BERT labelers: data-parallel equivalence, and `chexlab label train` / `chexlab label`
//! end to end on a tiny synthetic world.

mod common;
use common::chexlab_ok;

use std::process::Command;

use burn::tensor::Device;
use chexlab::comm::single::Single;
use chexlab::comm::threads::Threads;
use chexlab::config::OptimizerConfig;
use chexlab::labelers::bert::model::{BertConfig, BertLabeler, HeadKind};
use chexlab::labelers::bert::pipeline::seeded_labeler;
use chexlab::labelers::bert::tokenizer::{Encoded, ReportTokenizer};
use chexlab::labelers::bert::train::{Example, FitSettings, Target, fit};
use chexlab::model::state_values;

fn tiny_config(vocab: usize) -> BertConfig {
    let mut c = BertConfig::new(vocab, 16, 1, 2, 32);
    c.max_position_embeddings = 24;
    // Without dropout, two ranks with half the batch each take exactly the step of one rank with the whole batch.
    c.hidden_dropout_prob = 0.0;
    c.attention_probs_dropout_prob = 0.0;
    c
}

fn examples(tok: &ReportTokenizer) -> Vec<Example> {
    let texts = [
        "no pneumothorax .",
        "small left pleural effusion .",
        "cardiomegaly with mild edema .",
    ];
    (0..48)
        .map(|i| {
            let encoded: Encoded = tok.encode(texts[i % 3]).unwrap();
            let mut c = [0u8; 14];
            c[i % 13] = (1 + i % 3) as u8;
            Example {
                encoded,
                target: Target::Classes(c),
            }
        })
        .collect()
}

fn settings(batch: usize) -> FitSettings {
    FitSettings {
        epochs: 2,
        batch_size: batch,
        lr: 1e-3,
        warmup: 0.1,
        optimizer: OptimizerConfig::default(),
        seed: 9,
    }
}

fn train_on(
    comm: &dyn chexlab::comm::Communicator,
    tok: &ReportTokenizer,
    batch: usize,
) -> BertLabeler {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let model = seeded_labeler(
        &tiny_config(tok.vocab_size()),
        HeadKind::Chexbert,
        0.0,
        4,
        &ad,
    );
    fit(
        model,
        tok,
        &examples(tok),
        &settings(batch),
        comm,
        &ad,
        "test",
    )
    .unwrap()
    .0
}

#[test]
fn two_ranks_with_batch_b_match_one_rank_with_batch_2b() {
    let tok = ReportTokenizer::train(
        [
            "no pneumothorax.",
            "small left pleural effusion.",
            "cardiomegaly with mild edema.",
        ]
        .iter()
        .cycle()
        .take(30),
        80,
        1,
    )
    .unwrap();
    let one = state_values(&train_on(&Single, &tok, 8));
    let two: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = Threads::world(2)
            .into_iter()
            .map(|comm| {
                let tok = &tok;
                scope.spawn(move || state_values(&train_on(&comm, tok, 4)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(two[0], two[1], "the replicas diverged");
    let start = state_values(&seeded_labeler(
        &tiny_config(tok.vocab_size()),
        HeadKind::Chexbert,
        0.0,
        4,
        &Device::flex(),
    ));
    assert_ne!(start, one, "training changed nothing");
    common::assert_close(&one, &two[0], 1e-4);
}

#[test]
fn label_train_then_label_reports_with_both_bert_labelers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    chexlab_ok(
        &[
            "synth",
            "--out",
            "world",
            "--studies",
            "200",
            "--image-size",
            "32",
            "--seed",
            "3",
        ],
        dir,
    );
    let config = r#"seed = 5
run_dir = "run"
[dataset]
kind = "synthetic"
root = "world"
[[sources]]
name = "truth"
kind = "truth"
[bert]
vocab_size = 400
hidden = 32
layers = 1
heads = 2
intermediate = 64
max_len = 64
batch_size = 16
epochs = 2
finetune_epochs = 1
expert_studies = 40
teacher = "truth/image_labels.csv"
init_from = "labelers/chexbert"
"#;
    std::fs::write(dir.join("c.toml"), config).unwrap();
    let out = chexlab_ok(
        &["label", "train", "--labeler", "chexbert", "-c", "c.toml"],
        dir,
    );
    assert!(
        out.contains("chexpert (rules)") && out.contains("chexbert"),
        "{out}"
    );
    let model = dir.join("run/labelers/chexbert");
    for f in [
        "labeler.json",
        "tokenizer.json",
        "model.bin",
        "train_report.json",
    ] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("train_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["expert_reports"], 40);
    assert!(
        report["scores"][1]["report_weighted_f1"].as_f64().is_some(),
        "{report}"
    );

    chexlab_ok(
        &[
            "label",
            "--labeler",
            "chexbert",
            "--model",
            "run/labelers/chexbert",
            "--reports",
            "world/reports.csv",
            "--out",
            "cb.csv",
        ],
        dir,
    );
    let rows: Vec<String> = std::fs::read_to_string(dir.join("cb.csv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(
        rows[0].starts_with("study_id,Reports,No Finding"),
        "{}",
        rows[0]
    );

    // VisualCheXbert, here regressing the synthetic world's image truth as its teacher: 0/1 labels only.
    chexlab_ok(
        &[
            "label",
            "train",
            "--labeler",
            "visualchexbert",
            "-c",
            "c.toml",
        ],
        dir,
    );
    let meta =
        std::fs::read_to_string(dir.join("run/labelers/visualchexbert/labeler.json")).unwrap();
    assert!(meta.contains("calibration"), "{meta}");
    chexlab_ok(
        &[
            "label",
            "--labeler",
            "visualchexbert",
            "--model",
            "run/labelers/visualchexbert",
            "--reports",
            "world/reports.csv",
            "--out",
            "vc.csv",
        ],
        dir,
    );
    let mut r = csv::Reader::from_path(dir.join("vc.csv")).unwrap();
    let mut n = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        for cell in rec.iter().skip(2) {
            assert!(
                cell == "1.0" || cell == "0.0",
                "VisualCheXbert wrote '{cell}'"
            );
        }
        n += 1;
    }
    assert_eq!(n, 200);
    // The wrong head kind is refused by name.
    let o = Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args([
            "label",
            "--labeler",
            "chexbert",
            "--model",
            "run/labelers/visualchexbert",
            "--reports",
            "world/reports.csv",
            "--out",
            "x.csv",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Visualchexbert"));
}
