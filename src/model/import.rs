//! Loads torchvision DenseNet weights (a `state_dict` saved with `torch.save`, or safetensors) into [`DenseNet`].
//!
//! torchvision keys are renamed to this crate's module paths (`features.denseblock2.denselayer3.conv1.weight` →
//! `blocks.1.layers.2.conv1.weight`), old-style keys (`...denselayer1.norm.1.weight`, as in the checkpoints published
//! before torchvision 0.2) are accepted, a `module.` prefix (a model saved from `DataParallel`) is dropped, a
//! 3-channel stem is summed into a 1-channel one (a grey image replicated to RGB gives the same first activation), and
//! a head of another size is left at its fresh initialisation ("replaced"). Anything else that does not fit — a
//! missing key, an unexpected key, a shape mismatch — is an error that lists every offending key.

use std::path::Path;

use burn::store::bridge;
use burn::store::{
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::TensorData;

use crate::error::{Error, Result};
use crate::model::DenseNet;

pub(crate) type PackTensor = burn::store::burn_pack::Tensor;

/// What an import did besides loading matching tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportReport {
    /// Tensors loaded into the model.
    pub loaded: usize,
    /// The stem was summed from 3 input channels to 1.
    pub stem_summed: bool,
    /// The checkpoint's head had another number of outputs; the model keeps its freshly initialised head.
    pub head_replaced: Option<(usize, usize)>,
}

/// Maps one torchvision DenseNet key to this crate's module path; `None` for keys with no counterpart.
pub fn map_key(key: &str) -> Option<String> {
    let key = key.strip_prefix("module.").unwrap_or(key);
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    if let Some(rest) = key.strip_prefix("classifier.") {
        return Some(format!("classifier.{rest}"));
    }
    let rest = key.strip_prefix("features.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let index = |s: &str, prefix: &str| -> Option<usize> {
        s.strip_prefix(prefix)?
            .parse::<usize>()
            .ok()?
            .checked_sub(1)
    };
    match parts.as_slice() {
        [m @ ("conv0" | "norm0" | "norm5"), p] => Some(format!("{m}.{p}")),
        [block, layer, tail @ ..] if block.starts_with("denseblock") => {
            let b = index(block, "denseblock")?;
            let l = index(layer, "denselayer")?;
            let tail = match tail {
                // Old-style `norm.1.weight` → `norm1.weight`.
                [m @ ("norm" | "conv"), n @ ("1" | "2"), p] => format!("{m}{n}.{p}"),
                [m @ ("norm1" | "conv1" | "norm2" | "conv2"), p] => format!("{m}.{p}"),
                _ => return None,
            };
            Some(format!("blocks.{b}.layers.{l}.{tail}"))
        }
        [t, m @ ("norm" | "conv"), p] if t.starts_with("transition") => {
            Some(format!("transitions.{}.{m}.{p}", index(t, "transition")?))
        }
        _ => None,
    }
}

/// Reads every tensor of a PyTorch (`.pth`, `.pt`, `.bin`) or safetensors file, keyed by name.
pub(crate) fn read_tensors(path: &Path) -> Result<Vec<PackTensor>> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    let safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let tensors = if safetensors {
        SafetensorsStore::from_file(path)
            .get_all_tensors()
            .map(|m| m.values().cloned().collect())
            .map_err(|e| Error::format(path, format!("not a readable safetensors file: {e}")))?
    } else {
        // Keep indices as written: the store would otherwise renumber `norm.1` (old torchvision keys) to `norm.0`.
        PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_tensors()
            .map(|m| m.values().cloned().collect())
            .map_err(|e| Error::format(path, format!("not a readable PyTorch state dict: {e}")))?
    };
    Ok(tensors)
}

/// Loads torchvision DenseNet weights from `path` into `model` (see the module docs for what is adapted).
pub fn load_torchvision(model: DenseNet, path: &Path) -> Result<(DenseNet, ImportReport)> {
    let mut report = ImportReport::default();
    let stem_channels = model.conv0.weight.dims()[1];
    let head = model.classifier.weight.dims(); // Burn stores [in, out]
    let mut unexpected = Vec::new();
    let mut tensors = Vec::new();
    for t in read_tensors(path)? {
        let Some(name) = map_key(&t.name) else {
            if !t.name.ends_with("num_batches_tracked") {
                unexpected.push(t.name.clone());
            }
            continue;
        };
        let dims: Vec<usize> = t.shape.to_vec();
        if name == "conv0.weight" && stem_channels == 1 && dims.get(1) == Some(&3) {
            let data =
                bridge::to_data(&t).map_err(|e| Error::format(path, format!("{}: {e}", t.name)))?;
            tensors.push(bridge::from_data(sum_channels(&data, &dims)?, name, None));
            report.stem_summed = true;
            continue;
        }
        if name.starts_with("classifier.") && dims.first() != Some(&head[1]) {
            report.head_replaced = Some((dims[0], head[1]));
            continue;
        }
        let mut t = t;
        t.name = name;
        tensors.push(t);
    }
    let skip_head = report.head_replaced.is_some();
    let (model, loaded) = apply_all(
        model,
        tensors,
        unexpected,
        path,
        "the configured DenseNet",
        |k| skip_head && k.starts_with("classifier."),
    )?;
    report.loaded = loaded;
    Ok((model, report))
}

/// Applies PyTorch-named `tensors` (already renamed to `model`'s paths) to `model`, or fails listing every missing
/// key (except those `may_miss` accepts), every unexpected key (`unexpected` plus the model's unused ones) and every
/// shape mismatch: a partial load is never silent. Returns the model and the number of tensors loaded.
pub(crate) fn apply_all<M: ModuleSnapshot>(
    mut model: M,
    tensors: Vec<PackTensor>,
    mut unexpected: Vec<String>,
    path: &Path,
    what: &str,
    may_miss: impl Fn(&str) -> bool,
) -> Result<(M, usize)> {
    let result = model.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !may_miss(k))
        .collect();
    unexpected.extend(result.unused.iter().cloned());
    let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
    if !missing.is_empty() || !unexpected.is_empty() || !errors.is_empty() {
        let mut msg = format!("does not fit {what}:");
        for (kind, list) in [
            ("missing", &missing),
            ("unexpected", &unexpected),
            ("mismatched", &errors),
        ] {
            if !list.is_empty() {
                msg.push_str(&format!("\n  {kind} ({}): {}", list.len(), list.join(", ")));
            }
        }
        return Err(Error::format(path, msg));
    }
    Ok((model, result.applied.len()))
}

/// Sums a `[out, 3, k, k]` convolution weight over its input channels into `[out, 1, k, k]`.
fn sum_channels(data: &TensorData, dims: &[usize]) -> Result<TensorData> {
    let v: Vec<f32> = data
        .clone()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::model("reading the stem weight", e))?;
    let (out, cin, plane) = (dims[0], dims[1], dims[2] * dims[3]);
    let mut summed = vec![0f32; out * plane];
    for o in 0..out {
        for c in 0..cin {
            let src = &v[(o * cin + c) * plane..][..plane];
            for (d, s) in summed[o * plane..][..plane].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
    Ok(TensorData::new(summed, [out, 1, dims[2], dims[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_torchvision_key_kind() {
        let cases = [
            ("features.conv0.weight", Some("conv0.weight")),
            ("features.norm0.running_var", Some("norm0.running_var")),
            ("features.norm5.bias", Some("norm5.bias")),
            (
                "features.denseblock2.denselayer3.conv1.weight",
                Some("blocks.1.layers.2.conv1.weight"),
            ),
            (
                "module.features.denseblock1.denselayer1.norm.2.running_mean",
                Some("blocks.0.layers.0.norm2.running_mean"),
            ),
            (
                "features.transition3.conv.weight",
                Some("transitions.2.conv.weight"),
            ),
            ("classifier.bias", Some("classifier.bias")),
            ("features.norm0.num_batches_tracked", None),
            ("features.denseblock0.denselayer1.conv1.weight", None),
            ("fc.weight", None),
        ];
        for (k, want) in cases {
            assert_eq!(map_key(k).as_deref(), want, "{k}");
        }
    }
}
