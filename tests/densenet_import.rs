//! torchvision DenseNet weights load into chexlab's DenseNet and give PyTorch's logits.
//! Fixture: `tests/fixtures/densenet/make_fixture.py` (random-weight reduced torchvision DenseNet, eval mode).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use chexlab::model::import::load_torchvision;
use chexlab::model::{DenseNet, DenseNetConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/densenet")
        .join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn tiny(in_channels: usize, num_classes: usize) -> DenseNet {
    DenseNetConfig {
        growth_rate: 4,
        block_config: vec![2, 2, 2],
        num_init_features: 8,
        bn_size: 2,
        in_channels,
        num_classes,
    }
    .init(&Device::flex())
}

fn logits(model: &DenseNet, input: Vec<f32>, shape: [usize; 4]) -> Vec<f32> {
    let x = Tensor::<4>::from_data(TensorData::new(input, shape), &Device::flex());
    model.forward(x).into_data().try_to_vec::<f32>().unwrap()
}

/// max |a - b| / max |b|: the relative error of a whole logit vector.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn shape4(v: &serde_json::Value) -> [usize; 4] {
    let s: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [s[0], s[1], s[2], s[3]]
}

#[test]
fn pth_safetensors_and_legacy_keys_match_pytorch_logits() {
    let e = expected();
    let want = floats(&e["logits_rgb"]);
    for file in ["tiny.pth", "tiny_legacy.pth", "tiny.safetensors"] {
        let (model, report) = load_torchvision(tiny(3, 5), &fixture(file)).unwrap();
        // 97 state-dict entries minus 16 num_batches_tracked.
        assert_eq!(report.loaded, 81, "{file}");
        assert!(!report.stem_summed && report.head_replaced.is_none());
        let got = logits(&model, floats(&e["rgb"]), shape4(&e["rgb_shape"]));
        let err = rel_err(&got, &want);
        assert!(
            err < 1e-4,
            "{file}: relative error {err}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn grey_stem_is_the_summed_rgb_stem() {
    let e = expected();
    let (model, report) = load_torchvision(tiny(1, 5), &fixture("tiny.pth")).unwrap();
    assert!(report.stem_summed);
    let got = logits(&model, floats(&e["grey"]), shape4(&e["grey_shape"]));
    let err = rel_err(&got, &floats(&e["logits_grey"]));
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn head_of_another_size_is_replaced_and_reported() {
    let (model, report) = load_torchvision(tiny(1, 14), &fixture("tiny.pth")).unwrap();
    assert_eq!(report.head_replaced, Some((5, 14)));
    assert_eq!(model.classifier.weight.dims(), [16, 14]);
}

#[test]
fn wrong_architecture_is_an_error_listing_keys() {
    // One more dense layer per block: the checkpoint lacks its keys.
    let model = DenseNetConfig {
        growth_rate: 4,
        block_config: vec![2, 3, 2],
        num_init_features: 8,
        bn_size: 2,
        in_channels: 3,
        num_classes: 5,
    }
    .init(&Device::flex());
    let err = load_torchvision(model, &fixture("tiny.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tiny.pth"), "{err}");
    assert!(err.contains("blocks.1.layers.2.conv1.weight"), "{err}");
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let err = load_torchvision(tiny(3, 5), Path::new("/nonexistent/w.pth"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/w.pth"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"this is not a checkpoint").unwrap();
    let err = load_torchvision(tiny(3, 5), &bad).unwrap_err().to_string();
    assert!(err.contains("bad.pth"), "{err}");
}
