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
