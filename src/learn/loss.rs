//! Multi-label BCE-with-logits with per-source uncertainty policies.
//!
//! Targets are built per observation from a label source's value: positive → 1, negative or blank (not mentioned)
//! → 0, uncertain → per the policy: `ignore` masks the entry out of the loss, `zeros` → 0, `ones` → 1.

use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};

use crate::observations::UncertaintyPolicy;
use crate::observations::{Label, LabelRow, Observation};

/// Targets and mask (`[batch × observations]`, row-major) for one batch of label rows.
pub fn targets(
    rows: &[LabelRow],
    observations: &[Observation],
    policy: UncertaintyPolicy,
) -> (Vec<f32>, Vec<f32>) {
    let n = rows.len() * observations.len();
    let (mut y, mut mask) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for row in rows {
        for &o in observations {
            let (t, m) = match row.get(o) {
                Label::Positive => (1.0, 1.0),
                Label::Negative | Label::Blank => (0.0, 1.0),
                Label::Uncertain => match policy {
                    UncertaintyPolicy::Ignore => (0.0, 0.0),
                    UncertaintyPolicy::Zeros => (0.0, 1.0),
                    UncertaintyPolicy::Ones => (1.0, 1.0),
                },
            };
            y.push(t);
            mask.push(m);
        }
    }
    (y, mask)
}

/// Mean BCE-with-logits over the unmasked entries (0 when every entry is masked), computed in fp32 whatever the
/// logits' dtype.
///
/// Uses the stable form `max(x, 0) − x·y + log(1 + e^{−|x|})`.
pub fn bce_with_logits(logits: Tensor<2>, y: &[f32], mask: &[f32], device: &Device) -> Tensor<1> {
    let dims = logits.dims();
    let logits = logits.cast(FloatDType::F32);
    let f32_on = (device, DType::F32);
    let y = Tensor::<2>::from_data(TensorData::new(y.to_vec(), dims), f32_on);
    let m = Tensor::<2>::from_data(TensorData::new(mask.to_vec(), dims), f32_on);
    let count = mask.iter().sum::<f32>().max(1.0);
    let per = relu(logits.clone()) - logits.clone() * y + logits.abs().neg().exp().log1p();
    (per * m).sum().div_scalar(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::Label::*;

    fn row(values: &[(Observation, Label)]) -> LabelRow {
        let mut r = LabelRow::default();
        for &(o, l) in values {
            r.set(o, l);
        }
        r
    }

    #[test]
    fn policies_set_targets_and_masks() {
        let obs = [
            Observation::Edema,
            Observation::Cardiomegaly,
            Observation::Atelectasis,
        ];
        let rows = [row(&[
            (Observation::Edema, Uncertain),
            (Observation::Cardiomegaly, Positive),
        ])];
        let (y, m) = targets(&rows, &obs, UncertaintyPolicy::Ignore);
        assert_eq!((y, m), (vec![0.0, 1.0, 0.0], vec![0.0, 1.0, 1.0]));
        let (y, m) = targets(&rows, &obs, UncertaintyPolicy::Zeros);
        assert_eq!((y, m), (vec![0.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]));
        let (y, m) = targets(&rows, &obs, UncertaintyPolicy::Ones);
        assert_eq!((y, m), (vec![1.0, 1.0, 0.0], vec![1.0, 1.0, 1.0]));
    }

    #[test]
    fn masked_entries_do_not_change_the_loss() {
        let dev = Device::flex();
        let logits = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [1, 3]), &dev);
        let y = [1.0, 0.0, 1.0];
        let mask = [1.0, 1.0, 0.0];
        // The masked third logit may be anything.
        let a = bce_with_logits(logits(vec![0.5, -2.0, 9.0]), &y, &mask, &dev);
        let b = bce_with_logits(logits(vec![0.5, -2.0, -30.0]), &y, &mask, &dev);
        let (a, b) = (a.into_scalar::<f32>(), b.into_scalar::<f32>());
        let want = ((1.0 + (-0.5f32).exp()).ln() + (1.0 + (-2.0f32).exp()).ln()) / 2.0;
        assert!(
            (a - want).abs() < 1e-6 && (b - want).abs() < 1e-6,
            "{a} {b} {want}"
        );
        // Large logits stay finite.
        let c = bce_with_logits(
            logits(vec![100.0, -100.0, 0.0]),
            &[0.0, 1.0, 0.0],
            &[1.0; 3],
            &dev,
        );
        assert!((c.into_scalar::<f32>() - (200.0 + 2f32.ln()) / 3.0).abs() < 1e-3);
    }
}
