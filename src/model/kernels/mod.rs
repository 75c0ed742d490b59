//! CPU kernels for the DenseNet's costliest operations on Flex, as Burn backend extensions with their own
//! backward passes: convolution as GEMMs ([`conv2d`]) and batch norm fused with the ReLU that always follows it
//! ([`norm_relu`]). Each entry point takes a module and a tensor, and falls back to Burn's own operations on
//! other devices (CUDA keeps its kernels) and dtypes (bf16 mixed precision).

mod conv;
mod norm;

pub use conv::conv2d;
pub use norm::norm_relu;

use std::borrow::Cow;

use burn::backend::DispatchDevice;
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape, Tensor};

#[cfg(test)]
thread_local! {
    /// Set by tests that compare against Burn's own operations on Flex: the kernels step aside on this thread.
    pub(crate) static BURN_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether `x` lives on Flex (directly or under autodiff): the only backend these kernels are written for.
fn on_flex<const D: usize>(x: &Tensor<D>) -> bool {
    #[cfg(test)]
    if BURN_ONLY.get() {
        return false;
    }
    match x.device().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(ad) => matches!(ad.clone().inner(), DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Contiguous fp32 values of a Flex tensor (copied only when it is a strided view).
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(
            t.to_contiguous()
                .as_slice::<f32>()
                .expect("contiguous f32")
                .to_vec(),
        ),
    }
}

/// A contiguous fp32 Flex tensor.
fn tensor<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(v),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    )
}

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let s = t.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// Test inputs and comparisons shared by the kernels' tests.
#[cfg(test)]
mod testing {
    use burn::tensor::{Device, Tensor, TensorData};
    use rand::{Rng, SeedableRng};

    /// Values uniform in `lo..1` from a ChaCha stream of `seed`.
    pub fn random<const D: usize>(
        shape: [usize; D],
        seed: u64,
        lo: f32,
        device: &Device,
    ) -> Tensor<D> {
        let rng = &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.random_range(lo..1.0))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// The largest absolute difference is at most `tolerance` times the reference's largest magnitude (at least 1).
    pub fn close<const D: usize>(got: Tensor<D>, want: Tensor<D>, tolerance: f32, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let (g, w) = (
            got.into_data().try_to_vec::<f32>().unwrap(),
            want.into_data().try_to_vec::<f32>().unwrap(),
        );
        let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = g
            .iter()
            .zip(&w)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= tolerance * scale,
            "{what}: differs from Burn's own operations by {diff} (scale {scale})"
        );
    }
}
