//! Gradients as one flat `f32` buffer: what global-norm clipping, gradient accumulation and the data-parallel
//! all-reduce work on. The layout (parameter order, offsets, shapes) follows the module's visiting order, which is
//! the same on every rank; BatchNorm running statistics have no gradient and are not part of it. The buffer is
//! a tensor on the device the gradients were computed on ([`flatten_tensor`]): on a GPU it never leaves the
//! device, and NCCL reduces it in place.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{FloatDType, Tensor};

/// Where each trainable parameter's gradient sits in the flat buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GradLayout {
    entries: Vec<(ParamId, usize, Vec<usize>)>,
    len: usize,
}

impl GradLayout {
    /// Number of `f32` values in the flat buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of values of each parameter's gradient, in buffer order (to compare gradients tensor by tensor).
    pub fn tensor_lengths(&self) -> Vec<usize> {
        self.entries
            .iter()
            .map(|(_, _, shape)| shape.iter().product())
            .collect()
    }

    /// Whether the model has no trainable parameter with a gradient.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
struct Flatten<'a> {
    grads: &'a GradientsParams,
    layout: GradLayout,
    buf: Vec<f32>,
}

#[cfg(test)]
impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let shape = g.dims().to_vec();
            let v = g
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 gradient");
            self.layout.entries.push((param.id, self.buf.len(), shape));
            self.buf.extend_from_slice(&v);
            self.layout.len = self.buf.len();
        }
    }
}

/// Copies every gradient of `grads` into one host buffer, in `module`'s visiting order: the reference the tensor
/// path is tested against.
#[cfg(test)]
pub(crate) fn flatten<M: Module>(grads: &GradientsParams, module: &M) -> (GradLayout, Vec<f32>) {
    let mut f = Flatten {
        grads,
        layout: GradLayout::default(),
        buf: Vec::new(),
    };
    module.visit(&mut f);
    (f.layout, f.buf)
}

struct FlattenTensor<'a> {
    grads: &'a GradientsParams,
    layout: GradLayout,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for FlattenTensor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let shape = g.dims().to_vec();
            let n: usize = shape.iter().product();
            self.layout.entries.push((param.id, self.layout.len, shape));
            self.layout.len += n;
            self.parts.push(g.reshape([n]).cast(FloatDType::F32));
        }
    }
}

/// Concatenates every gradient of `grads` (in `module`'s visiting order, as fp32) and then `extra` (fp32, on the
/// gradients' device: the model's device without autodiff) into one tensor there; the layout covers the gradients
/// only, the extras follow at `layout.len()`.
pub fn flatten_tensor<M: Module>(
    grads: &GradientsParams,
    module: &M,
    extra: Tensor<1>,
) -> (GradLayout, Tensor<1>) {
    let mut f = FlattenTensor {
        grads,
        layout: GradLayout::default(),
        parts: Vec::new(),
    };
    module.visit(&mut f);
    let mut parts = f.parts;
    parts.push(extra);
    (f.layout, Tensor::cat(parts, 0))
}

/// Builds gradients for `module` from a flat tensor laid out by `layout` (values past `layout.len()` are ignored).
pub fn unflatten_tensor<M: Module>(
    layout: &GradLayout,
    flat: &Tensor<1>,
    module: &M,
) -> GradientsParams {
    struct Unflatten<'a> {
        index: HashMap<ParamId, (usize, &'a [usize])>,
        flat: &'a Tensor<1>,
        out: GradientsParams,
    }
    impl ModuleVisitor for Unflatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(&(offset, shape)) = self.index.get(&param.id) {
                let n: usize = shape.iter().product();
                let dims: [usize; D] = shape.try_into().expect("gradient rank");
                let g = self.flat.clone().slice(offset..offset + n).reshape(dims);
                self.out.register::<D>(param.id, g);
            }
        }
    }
    assert!(flat.dims()[0] >= layout.len, "flat gradient length");
    let mut u = Unflatten {
        index: layout
            .entries
            .iter()
            .map(|(id, off, shape)| (*id, (*off, shape.as_slice())))
            .collect(),
        flat,
        out: GradientsParams::new(),
    };
    module.visit(&mut u);
    u.out
}

/// L2 norm of the first `len` values of a flat gradient tensor (one scalar read back from the device).
pub fn norm_tensor(flat: &Tensor<1>, len: usize) -> f64 {
    if len == 0 {
        return 0.0;
    }
    let sq = flat.clone().slice(0..len).powi_scalar(2).sum();
    f64::from(sq.into_scalar::<f32>()).sqrt()
}

/// L2 norm of a host gradient buffer (tests).
#[cfg(test)]
pub(crate) fn norm(buf: &[f32]) -> f64 {
    buf.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn a_flat_tensor_round_trips_the_gradients_of_a_module() {
        use burn::nn::{Linear, LinearConfig};
        let ad = Device::flex().autodiff();
        let lin: Linear = LinearConfig::new(3, 2).init(&ad);
        let x = Tensor::<2>::from_data([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], &ad);
        let g = GradientsParams::from_grads(lin.forward(x).powi_scalar(2).sum().backward(), &lin);
        let (layout, host) = flatten(&g, &lin);
        let inner = ad.clone().inner();
        let extra = Tensor::from_data(TensorData::new(vec![7.0f32, 8.0], [2]), &inner);
        let (layout_t, flat) = flatten_tensor(&g, &lin, extra);
        assert_eq!(layout, layout_t);
        let v: Vec<f32> = flat.clone().into_data().try_to_vec().unwrap();
        assert_eq!(v.len(), host.len() + 2);
        assert_eq!(&v[..host.len()], &host[..]);
        assert_eq!(&v[host.len()..], &[7.0, 8.0]);
        assert!((norm_tensor(&flat, layout.len()) - norm(&host)).abs() < 1e-5 * norm(&host));
        // Back into gradients: the same values, parameter by parameter.
        let back = unflatten_tensor(&layout, &flat, &lin);
        let (_, again) = flatten(&back, &lin);
        assert_eq!(again, host);
    }
}
