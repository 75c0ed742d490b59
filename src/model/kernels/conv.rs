//! Convolution as im2col + GEMM on the CPU, forward and backward: the DenseNet's convolutions on Flex.
//!
//! Flex computes a convolution's input gradient as a transposed convolution and its weight gradient as a
//! convolution whose kernel is the whole output gradient, each with its own layout copies; here all three
//! products are single GEMMs per image on the NCHW buffers (a 1×1 stride-1 convolution needs no column buffer
//! at all), through a Burn backend extension with its own backward, so the model keeps one definition and
//! other backends (CUDA) keep their own convolution kernels.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::{dims4, on_flex, tensor, values};

/// Stride and zero padding of a square-kernel, ungrouped, undilated, bias-free convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Kernel side.
    pub kernel: usize,
    /// Stride on both axes.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
}

impl Geometry {
    /// The geometry of `conv` when this module can compute it (square kernel and stride, symmetric explicit
    /// padding, no groups, dilation or bias).
    pub fn of(conv: &Conv2d) -> Option<Geometry> {
        let [kh, kw] = conv.kernel_size;
        let [sh, sw] = conv.stride;
        let padding = match conv.padding {
            PaddingConfig2d::Valid => 0,
            PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => t,
            _ => return None,
        };
        (kh == kw && sh == sw && conv.dilation == [1, 1] && conv.groups == 1 && conv.bias.is_none())
            .then_some(Geometry {
                kernel: kh,
                stride: sh,
                padding,
            })
    }

    fn out(&self, side: usize) -> usize {
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}

/// `conv(x)` through [`GemmConv`] where the tensors live on Flex in fp32, through Burn's own convolution
/// otherwise (other devices, other dtypes, geometries [`Geometry::of`] refuses).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let w = conv.weight.val();
    match Geometry::of(conv) {
        Some(g) if on_flex(&x) && x.dtype() == DType::F32 && w.dtype() == DType::F32 => {
            let out = <Dispatch as GemmConv>::gemm_conv2d(
                x.into_dispatch(),
                w.into_dispatch(),
                g.kernel,
                g.stride,
                g.padding,
            );
            Tensor::from_dispatch(out)
        }
        _ => conv.forward(x),
    }
}

/// A convolution computed as GEMMs (see the module documentation); `kernel`, `stride` and `padding` as in
/// [`Geometry`].
#[backend_extension(Flex, Autodiff)]
pub trait GemmConv: Backend {
    /// `y = conv(x, weight)` for `x: [n, c, h, w]`, `weight: [o, c, kernel, kernel]`.
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;
}

impl GemmConv for Flex {
    fn gemm_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> FlexTensor {
        forward(&x, &weight, geometry(kernel, stride, padding))
    }
}

fn geometry(kernel: usize, stride: usize, padding: usize) -> Geometry {
    Geometry {
        kernel,
        stride,
        padding,
    }
}

impl<C: CheckpointStrategy> GemmConv for Autodiff<Flex, C> {
    fn gemm_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ConvBackward;

        impl Backward<Flex, 2> for ConvBackward {
            type State = (NodeId, NodeId, Geometry);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w] = ops.parents;
                let grad = grads.consume::<Flex>(&ops.node);
                let (xs, ws, g) = ops.state;
                let x = checkpointer.retrieve_node_output::<FlexTensor>(xs);
                let w = checkpointer.retrieve_node_output::<FlexTensor>(ws);
                if let Some(node) = node_w {
                    grads.register::<Flex>(node.id, weight_backward(&x, &grad, &w, g));
                }
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, input_backward(&w, &grad, &x, g));
                }
            }
        }

        let g = geometry(kernel, stride, padding);
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let xs = prep.checkpoint(&x);
                let ws = prep.checkpoint(&weight);
                let y = forward(x.primitive(), weight.primitive(), g);
                prep.finish((xs, ws, g), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive(), weight.primitive(), g)),
        }
    }
}

/// The problem sizes of one convolution.
#[derive(Clone, Copy)]
struct Sizes {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    ho: usize,
    wo: usize,
    g: Geometry,
}

impl Sizes {
    fn new(x: [usize; 4], w: [usize; 4], g: Geometry) -> Sizes {
        assert_eq!(
            x[1], w[1],
            "convolution: input has {} channels, weight expects {}",
            x[1], w[1]
        );
        assert!(
            w[2] == g.kernel && w[3] == g.kernel,
            "convolution: weight {w:?} is not {0}×{0}",
            g.kernel
        );
        assert!(
            x[2] + 2 * g.padding >= g.kernel && x[3] + 2 * g.padding >= g.kernel,
            "convolution: input {x:?} smaller than the kernel"
        );
        Sizes {
            n: x[0],
            c: x[1],
            h: x[2],
            w: x[3],
            o: w[0],
            ho: g.out(x[2]),
            wo: g.out(x[3]),
            g,
        }
    }

    /// Rows of the column matrix (`c · k · k`).
    fn rows(&self) -> usize {
        self.c * self.g.kernel * self.g.kernel
    }

    /// Output positions per image.
    fn positions(&self) -> usize {
        self.ho * self.wo
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each matrix given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    assert!(dst.len() >= m * n);
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts above keep every index the strides reach inside the three slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Writes image `x [c, h, w]`'s column matrix `[c·k·k, ho·wo]` into `cols`.
fn im2col(x: &[f32], s: &Sizes, cols: &mut [f32]) {
    let (k, st) = (s.g.kernel, s.g.stride);
    for row in 0..s.rows() {
        let (c, i, j) = (row / (k * k), (row / k) % k, row % k);
        let plane = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        let (lo, hi) = span(s, j);
        for (oy, seg) in cols[row * s.positions()..(row + 1) * s.positions()]
            .chunks_exact_mut(s.wo)
            .enumerate()
        {
            let Some(iy) = input_row(s, oy, i) else {
                seg.fill(0.0);
                continue;
            };
            let src = &plane[iy * s.w..(iy + 1) * s.w];
            seg[..lo].fill(0.0);
            seg[hi..].fill(0.0);
            if lo == hi {
                continue;
            }
            let first = lo * st + j - s.g.padding;
            if st == 1 {
                seg[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
            } else {
                for (v, x) in seg[lo..hi].iter_mut().zip(src[first..].iter().step_by(st)) {
                    *v = *x;
                }
            }
        }
    }
}

/// Adds column matrix `cols` back onto image `dx [c, h, w]` (the transpose of [`im2col`]).
fn col2im(cols: &[f32], s: &Sizes, dx: &mut [f32]) {
    let (k, st) = (s.g.kernel, s.g.stride);
    for row in 0..s.rows() {
        let (c, i, j) = (row / (k * k), (row / k) % k, row % k);
        let plane = &mut dx[c * s.h * s.w..(c + 1) * s.h * s.w];
        let (lo, hi) = span(s, j);
        for (oy, seg) in cols[row * s.positions()..(row + 1) * s.positions()]
            .chunks_exact(s.wo)
            .enumerate()
        {
            let Some(iy) = input_row(s, oy, i).filter(|_| lo < hi) else {
                continue;
            };
            let dst = &mut plane[iy * s.w..(iy + 1) * s.w];
            let first = lo * st + j - s.g.padding;
            for (d, v) in dst[first..].iter_mut().step_by(st).zip(&seg[lo..hi]) {
                *d += v;
            }
        }
    }
}

/// The input row that output row `oy` reads through kernel row `i`, if it is not padding.
fn input_row(s: &Sizes, oy: usize, i: usize) -> Option<usize> {
    (oy * s.g.stride + i)
        .checked_sub(s.g.padding)
        .filter(|&iy| iy < s.h)
}

/// The output columns `lo..hi` whose input column through kernel column `j` (`ox·stride + j − padding`) is
/// inside the image; those outside read padding.
fn span(s: &Sizes, j: usize) -> (usize, usize) {
    let (st, p) = (s.g.stride, s.g.padding);
    let lo = p.saturating_sub(j).div_ceil(st).min(s.wo);
    // Largest ox with ox·st + j − p ≤ w − 1.
    let hi = if s.w + p > j {
        ((s.w - 1 + p - j) / st + 1).min(s.wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// A column buffer per worker, or none for a pointwise convolution (its input is already the column matrix).
fn cols_buffer(s: &Sizes) -> Vec<f32> {
    if s.g.pointwise() {
        Vec::new()
    } else {
        vec![0.0; s.rows() * s.positions()]
    }
}

/// A zeroed `[n, plane]` buffer whose image planes `f(cols, image, plane)` fills, images in parallel, each worker
/// with its own column buffer.
fn per_image(
    s: &Sizes,
    plane: usize,
    f: impl Fn(&mut Vec<f32>, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; s.n * plane];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each_init(|| cols_buffer(s), |cols, (b, p)| f(cols, b, p));
    out
}

fn forward(x: &FlexTensor, weight: &FlexTensor, g: Geometry) -> FlexTensor {
    let s = Sizes::new(dims4(x), dims4(weight), g);
    let (xv, wv) = (values(x), values(weight));
    let (plane_in, plane_out) = (s.c * s.h * s.w, s.o * s.positions());
    let y = per_image(&s, plane_out, |cols, b, yb| {
        let xb = &xv[b * plane_in..(b + 1) * plane_in];
        let rhs = if s.g.pointwise() {
            xb
        } else {
            im2col(xb, &s, cols);
            cols
        };
        let sizes = (s.o, s.positions(), s.rows());
        gemm(
            sizes,
            yb,
            false,
            &wv,
            (s.rows(), 1),
            rhs,
            (s.positions(), 1),
        );
    });
    tensor(y, [s.n, s.o, s.ho, s.wo])
}

/// `dL/dx` from `dL/dy`: per image `Wᵀ · dy`, folded back by [`col2im`].
fn input_backward(weight: &FlexTensor, dy: &FlexTensor, x: &FlexTensor, g: Geometry) -> FlexTensor {
    let s = Sizes::new(dims4(x), dims4(weight), g);
    let (wv, dyv) = (values(weight), values(dy));
    let (plane_in, plane_out) = (s.c * s.h * s.w, s.o * s.positions());
    let dx = per_image(&s, plane_in, |cols, b, dxb| {
        let dyb = &dyv[b * plane_out..(b + 1) * plane_out];
        let sizes = (s.rows(), s.positions(), s.o);
        // Wᵀ: the weight `[o, rows]` read with swapped strides.
        let (wt, dys) = ((1, s.rows()), (s.positions(), 1));
        if s.g.pointwise() {
            gemm(sizes, dxb, false, &wv, wt, dyb, dys);
        } else {
            gemm(sizes, cols, false, &wv, wt, dyb, dys);
            col2im(cols, &s, dxb);
        }
    });
    tensor(dx, [s.n, s.c, s.h, s.w])
}

/// `dL/dW` from `dL/dy`: `Σ_images dy · colsᵀ`, summed in image order whatever the thread count (columns rebuilt
/// from `x`, not kept from the forward pass).
fn weight_backward(
    x: &FlexTensor,
    dy: &FlexTensor,
    weight: &FlexTensor,
    g: Geometry,
) -> FlexTensor {
    let s = Sizes::new(dims4(x), dims4(weight), g);
    let (xv, dyv) = (values(x), values(dy));
    let (plane_in, plane_out) = (s.c * s.h * s.w, s.o * s.positions());
    let mut dw = vec![0.0f32; s.o * s.rows()];
    let mut cols = cols_buffer(&s);
    for b in 0..s.n {
        let xb = &xv[b * plane_in..(b + 1) * plane_in];
        let rhs: &[f32] = if s.g.pointwise() {
            xb
        } else {
            im2col(xb, &s, &mut cols);
            &cols
        };
        let dyb = &dyv[b * plane_out..(b + 1) * plane_out];
        let sizes = (s.o, s.rows(), s.positions());
        gemm(
            sizes,
            &mut dw,
            b > 0,
            dyb,
            (s.positions(), 1),
            rhs,
            (1, s.positions()),
        );
    }
    tensor(dw, dims4(weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::testing::random;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Device;

    fn close(got: Tensor<4>, want: Tensor<4>, what: &str) {
        crate::model::kernels::testing::close(got, want, 2e-5, what);
    }

    fn conv(cin: usize, cout: usize, g: Geometry, bias: bool, device: &Device) -> Conv2d {
        let p = g.padding;
        Conv2dConfig::new([cin, cout], [g.kernel, g.kernel])
            .with_stride([g.stride, g.stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(bias)
            .init(device)
    }

    const GEOMETRIES: [Geometry; 7] = [
        Geometry {
            kernel: 1,
            stride: 1,
            padding: 0,
        },
        Geometry {
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        Geometry {
            kernel: 7,
            stride: 2,
            padding: 3,
        },
        Geometry {
            kernel: 3,
            stride: 2,
            padding: 0,
        },
        Geometry {
            kernel: 2,
            stride: 1,
            padding: 1,
        },
        // Output columns that read nothing but padding.
        Geometry {
            kernel: 1,
            stride: 1,
            padding: 2,
        },
        Geometry {
            kernel: 1,
            stride: 2,
            padding: 3,
        },
    ];

    #[test]
    fn forward_and_gradients_match_burns_convolution() {
        let dev = Device::flex().autodiff();
        for (i, &g) in GEOMETRIES.iter().enumerate() {
            let what = format!("{g:?}");
            let c = conv(3, 5, g, false, &dev);
            assert_eq!(Geometry::of(&c), Some(g));
            let x = random([2, 3, 11, 8], i as u64, -1.0, &dev).require_grad();
            assert!(on_flex(&x), "the test must exercise the GEMM path");
            let (ours, theirs) = (conv2d(&c, x.clone()), c.forward(x.clone()));
            let r = random(theirs.dims(), 100 + i as u64, -1.0, &dev);
            close(ours.clone(), theirs.clone(), &format!("{what} output"));
            let (go, gt) = (
                (ours * r.clone()).sum().backward(),
                (theirs * r).sum().backward(),
            );
            close(
                x.grad(&go).unwrap(),
                x.grad(&gt).unwrap(),
                &format!("{what} input gradient"),
            );
            let (wo, wt) = (c.weight.grad(&go).unwrap(), c.weight.grad(&gt).unwrap());
            close(wo, wt, &format!("{what} weight gradient"));
        }
    }

    #[test]
    fn inference_without_autodiff_matches_and_other_convolutions_fall_back() {
        let dev = Device::flex();
        for (i, &g) in GEOMETRIES.iter().enumerate() {
            let c = conv(4, 3, g, false, &dev);
            let x = random([3, 4, 9, 10], i as u64, -1.0, &dev);
            assert!(on_flex(&x));
            close(
                conv2d(&c, x.clone()),
                c.forward(x),
                &format!("{g:?} inference"),
            );
        }
        let g = GEOMETRIES[1];
        let with_bias = conv(4, 3, g, true, &dev);
        assert_eq!(Geometry::of(&with_bias), None);
        let grouped = Conv2dConfig::new([4, 4], [3, 3])
            .with_groups(2)
            .with_bias(false)
            .init(&dev);
        assert_eq!(Geometry::of(&grouped), None);
        let x = random([1, 4, 6, 6], 9, -1.0, &dev);
        close(
            conv2d(&with_bias, x.clone()),
            with_bias.forward(x.clone()),
            "bias fallback",
        );
        close(
            conv2d(&grouped, x.clone()),
            grouped.forward(x),
            "grouped fallback",
        );
    }

    #[test]
    fn a_strided_input_view_is_read_as_its_values() {
        let dev = Device::flex();
        let c = conv(3, 2, GEOMETRIES[1], false, &dev);
        // A transposed view: Flex keeps it strided, so the kernel must not read the buffer in storage order.
        let x = random([2, 3, 7, 5], 3, -1.0, &dev).swap_dims(2, 3);
        close(conv2d(&c, x.clone()), c.forward(x), "transposed input");
    }
}
