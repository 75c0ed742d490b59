//! Gradients as one flat `f32` buffer: what global-norm clipping, gradient accumulation and the data-parallel
//! all-reduce work on. The layout (parameter order, offsets, shapes) follows the module's visiting order, which is
//! the same on every rank; BatchNorm running statistics have no gradient and are not part of it.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

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

    /// Whether the model has no trainable parameter with a gradient.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

struct Flatten<'a> {
    grads: &'a GradientsParams,
    layout: GradLayout,
    buf: Vec<f32>,
}

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

/// Copies every gradient of `grads` into one buffer, in `module`'s visiting order.
pub fn flatten<M: Module>(grads: &GradientsParams, module: &M) -> (GradLayout, Vec<f32>) {
    let mut f = Flatten {
        grads,
        layout: GradLayout::default(),
        buf: Vec::new(),
    };
    module.visit(&mut f);
    (f.layout, f.buf)
}

struct Unflatten<'a> {
    index: HashMap<ParamId, (usize, &'a [usize])>,
    buf: &'a [f32],
    device: &'a Device,
    out: GradientsParams,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(&(offset, shape)) = self.index.get(&param.id) {
            let n: usize = shape.iter().product();
            let data = TensorData::new(self.buf[offset..offset + n].to_vec(), shape.to_vec());
            self.out
                .register::<D>(param.id, Tensor::from_data(data, self.device));
        }
    }
}

/// Builds gradients for `module` from a flat buffer laid out by `layout`.
pub fn unflatten<M: Module>(
    layout: &GradLayout,
    buf: &[f32],
    module: &M,
    device: &Device,
) -> GradientsParams {
    assert_eq!(buf.len(), layout.len, "flat gradient length");
    let mut u = Unflatten {
        index: layout
            .entries
            .iter()
            .map(|(id, off, shape)| (*id, (*off, shape.as_slice())))
            .collect(),
        buf,
        device,
        out: GradientsParams::new(),
    };
    module.visit(&mut u);
    u.out
}

/// L2 norm of a flat gradient.
pub fn norm(buf: &[f32]) -> f64 {
    buf.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales `buf` so its L2 norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_norm(buf: &mut [f32], max_norm: f64) -> f64 {
    let n = norm(buf);
    if n > max_norm && n > 0.0 {
        let s = (max_norm / n) as f32;
        buf.iter_mut().for_each(|x| *x *= s);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_the_norm() {
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_norm(&mut g, 10.0), 5.0);
        assert_eq!(g, vec![3.0, 4.0]);
        clip_norm(&mut g, 1.0);
        assert!((norm(&g) - 1.0).abs() < 1e-6);
    }
}
