//! Batch norm fused with the ReLU after it, forward and backward, on Flex.
//!
//! Burn composes training batch norm out of generic operations (transposed copies for the per-channel means,
//! several full-size temporaries in the backward pass) and runs the ReLU as one more pass each way. Here the
//! statistics are one pass over the NCHW buffer, the normalisation and ReLU one more, and the backward two
//! (per-channel sums, then the input gradient), with no layout copies.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::{on_flex, tensor, values};

/// `relu(bn(x))`, with BatchNorm's semantics: in training (an autodiff device and the layer's `training` flag
/// on) it normalises with the batch's statistics and moves the running averages toward them by `momentum`;
/// otherwise it normalises with the running statistics. Fused on Flex in fp32, Burn's operations elsewhere.
pub fn norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let (gamma, beta) = (bn.gamma.val(), bn.beta.val());
    if !(on_flex(&x) && x.dtype() == DType::F32 && gamma.dtype() == DType::F32) {
        return relu(unfused(bn, x));
    }
    let train = x.device().is_autodiff() && bn.training.is_enabled();
    let stats: Tensor<2> = if train {
        let stats: Tensor<2> = Tensor::from_dispatch(<Dispatch as FusedNorm>::channel_stats(
            x.clone().detach().into_dispatch(),
        ));
        // As Burn's BatchNorm: running ← (1 − momentum)·running + momentum·batch (biased variance).
        let m = bn.momentum;
        let device = x.device();
        let update = |running: &burn::module::RunningState<Tensor<1>>, row: usize| {
            let batch = stats.clone().narrow(0, row, 1).reshape([-1]);
            let now = running.value_sync().to_device(&device);
            running.update(now.mul_scalar(1.0 - m).add(batch.mul_scalar(m)).detach());
        };
        update(&bn.running_mean, 0);
        update(&bn.running_var, 1);
        stats
    } else {
        let device = x.device();
        Tensor::stack(
            vec![
                bn.running_mean.value().to_device(&device),
                bn.running_var.value().to_device(&device),
            ],
            0,
        )
    };
    Tensor::from_dispatch(<Dispatch as FusedNorm>::norm_relu(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        stats.into_dispatch(),
        bn.epsilon,
        train,
    ))
}

/// BatchNorm in its own parameters' dtype, the result back in the input's: in a mixed-precision copy the
/// statistics and running averages stay fp32 (as under PyTorch's autocast). A no-op cast when the dtypes agree.
pub(crate) fn unfused(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let (dt, own) = (x.dtype(), bn.gamma.val().dtype());
    if dt == own {
        bn.forward(x)
    } else {
        bn.forward(x.cast(own)).cast(dt)
    }
}

/// Batch norm + ReLU on `[n, c, h, w]` tensors.
#[backend_extension(Flex, Autodiff)]
pub trait FusedNorm: Backend {
    /// Per-channel mean and biased variance of `x`, as rows of a `[2, c]` tensor (no gradient).
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `relu((x − mean) / √(var + epsilon) · gamma + beta)` with `stats = [mean; var]`; `batch`: the statistics
    /// are `x`'s own, so the input gradient includes their dependence on `x`.
    fn norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        batch: bool,
    ) -> FloatTensor<Self>;
}

impl FusedNorm for Flex {
    fn channel_stats(x: FlexTensor) -> FlexTensor {
        stats(&x)
    }

    fn norm_relu(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        stats: FlexTensor,
        epsilon: f64,
        _batch: bool,
    ) -> FlexTensor {
        forward(&x, &Affine::new(&gamma, &beta, &stats, epsilon))
    }
}

impl<C: CheckpointStrategy> FusedNorm for Autodiff<Flex, C> {
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(stats(&Self::inner(x)))
    }

    fn norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        epsilon: f64,
        batch: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct NormReluBackward;

        impl Backward<Flex, 3> for NormReluBackward {
            type State = ([NodeId; 4], f64, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<Flex>(&ops.node);
                let ([xs, gs, bs, ss], epsilon, batch) = ops.state;
                let x = checkpointer.retrieve_node_output::<FlexTensor>(xs);
                let gamma = checkpointer.retrieve_node_output::<FlexTensor>(gs);
                let beta = checkpointer.retrieve_node_output::<FlexTensor>(bs);
                let stats = checkpointer.retrieve_node_output::<FlexTensor>(ss);
                let a = Affine::new(&gamma, &beta, &stats, epsilon);
                let (dx, dgamma, dbeta) = backward(&x, &dy, &a, batch);
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, dx);
                }
                if let Some(node) = node_gamma {
                    grads.register::<Flex>(node.id, dgamma);
                }
                if let Some(node) = node_beta {
                    grads.register::<Flex>(node.id, dbeta);
                }
            }
        }

        let run = |x: &FlexTensor, g: &FlexTensor, b: &FlexTensor, s: &FlexTensor| {
            forward(x, &Affine::new(g, b, s, epsilon))
        };
        // The statistics are an input without a gradient: the batch-statistics term of the backward pass is in
        // `backward` itself.
        match NormReluBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ids = [
                    prep.checkpoint(&x),
                    prep.checkpoint(&gamma),
                    prep.checkpoint(&beta),
                    prep.checkpoint(&stats),
                ];
                let y = run(
                    x.primitive(),
                    gamma.primitive(),
                    beta.primitive(),
                    stats.primitive(),
                );
                prep.finish((ids, epsilon, batch), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(run(
                x.primitive(),
                gamma.primitive(),
                beta.primitive(),
                stats.primitive(),
            )),
        }
    }
}

/// Per-channel folds over an NCHW buffer of `[n, c, hw]`: `f(channel, plane, acc)` with `plane` the index range of
/// each image's plane of that channel, in image order; channels in parallel.
fn per_channel<T: Send>(
    [n, c, hw]: [usize; 3],
    init: impl Fn() -> T + Sync,
    f: impl Fn(usize, std::ops::Range<usize>, T) -> T + Sync,
) -> Vec<T> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            (0..n).fold(init(), |acc, b| {
                f(ch, (b * c + ch) * hw..(b * c + ch + 1) * hw, acc)
            })
        })
        .collect()
}

fn shape3(t: &FlexTensor) -> [usize; 3] {
    let s = t.layout().shape();
    assert_eq!(
        s.num_dims(),
        4,
        "batch norm: expected [n, c, h, w], got {s:?}"
    );
    [s[0], s[1], s[2] * s[3]]
}

/// Sum of a slice in f64, with independent partial sums so that the loop vectorises.
fn sum64(v: impl Iterator<Item = f64>) -> f64 {
    let mut lanes = [0.0f64; 8];
    for (i, x) in v.enumerate() {
        lanes[i % 8] += x;
    }
    lanes.iter().sum()
}

fn stats(x: &FlexTensor) -> FlexTensor {
    let [n, c, hw] = shape3(x);
    let xv = values(x);
    let count = (n * hw) as f64;
    let means: Vec<f64> = per_channel(
        [n, c, hw],
        || 0.0,
        |_, p, acc| acc + sum64(xv[p].iter().map(|&v| v as f64)),
    )
    .into_iter()
    .map(|s| s / count)
    .collect();
    // Two passes (mean, then squared deviations) rather than E[x²] − E[x]²: no cancellation.
    let vars = per_channel(
        [n, c, hw],
        || 0.0,
        |ch, p, acc| {
            let m = means[ch];
            acc + sum64(xv[p].iter().map(|&v| (v as f64 - m) * (v as f64 - m)))
        },
    );
    let mut out: Vec<f32> = means.iter().map(|&m| m as f32).collect();
    out.extend(vars.iter().map(|&v| (v / count) as f32));
    tensor(out, [2, c])
}

/// Per channel: `z = x·scale + shift` with `scale = γ/√(var + ε)`, `shift = β − mean·scale`.
struct Affine {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Affine {
    fn new(gamma: &FlexTensor, beta: &FlexTensor, stats: &FlexTensor, epsilon: f64) -> Affine {
        let (g, b, s) = (values(gamma), values(beta), values(stats));
        let c = g.len();
        assert!(
            b.len() == c && s.len() == 2 * c,
            "batch norm: {c} channels, beta {}, stats {}",
            b.len(),
            s.len()
        );
        let (mean, var) = s.split_at(c);
        let inv_std: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
            .collect();
        let scale: Vec<f32> = g.iter().zip(&inv_std).map(|(g, i)| g * i).collect();
        let shift = (0..c).map(|ch| b[ch] - mean[ch] * scale[ch]).collect();
        Affine {
            mean: mean.to_vec(),
            inv_std,
            scale,
            shift,
        }
    }
}

fn forward(x: &FlexTensor, a: &Affine) -> FlexTensor {
    let [n, c, hw] = shape3(x);
    let xv = values(x);
    let mut y = vec![0.0f32; xv.len()];
    y.par_chunks_mut(hw.max(1))
        .zip(xv.par_chunks(hw.max(1)))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            let (scale, shift) = (a.scale[plane % c], a.shift[plane % c]);
            for (y, &x) in yp.iter_mut().zip(xp) {
                *y = (x * scale + shift).max(0.0);
            }
        });
    tensor(y, dims(x, n, c))
}

fn dims(x: &FlexTensor, n: usize, c: usize) -> [usize; 4] {
    let s = x.layout().shape();
    [n, c, s[2], s[3]]
}

/// Gradients of [`forward`] for `x`, `gamma` and `beta`. With batch statistics
/// `dx = γ·inv_std/M · (M·dz − Σdz − x̂·Σ(dz·x̂))`, otherwise `dx = γ·inv_std·dz`, where `dz` is `dy` where the
/// ReLU passed and 0 elsewhere, `x̂ = (x − mean)·inv_std`, and `M = n·h·w`.
fn backward(
    x: &FlexTensor,
    dy: &FlexTensor,
    a: &Affine,
    batch: bool,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let [n, c, hw] = shape3(x);
    let (xv, dyv) = (values(x), values(dy));
    assert_eq!(
        xv.len(),
        dyv.len(),
        "batch norm: gradient and input sizes differ"
    );
    // Σdz and Σ(dz·x̂) per channel, reading dy through the same planes as x.
    let sums = per_channel(
        [n, c, hw],
        || (0.0, 0.0),
        |ch, p, (sdz, sdzx): (f64, f64)| {
            let (scale, shift, mean, inv) = (a.scale[ch], a.shift[ch], a.mean[ch], a.inv_std[ch]);
            let dz = |(&x, &dy): (&f32, &f32)| if x * scale + shift > 0.0 { dy } else { 0.0 };
            let pairs = || xv[p.clone()].iter().zip(&dyv[p.clone()]);
            let s1 = sum64(pairs().map(|e| dz(e) as f64));
            let s2 = sum64(pairs().map(|e| dz(e) as f64 * ((e.0 - mean) * inv) as f64));
            (sdz + s1, sdzx + s2)
        },
    );
    let count = (n * hw) as f32;
    let mut dx = vec![0.0f32; xv.len()];
    dx.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, dxp)| {
            let ch = plane % c;
            let (xp, dp) = (
                &xv[plane * hw..(plane + 1) * hw],
                &dyv[plane * hw..(plane + 1) * hw],
            );
            let (scale, shift, mean, inv) = (a.scale[ch], a.shift[ch], a.mean[ch], a.inv_std[ch]);
            let (sdz, sdzx) = (sums[ch].0 as f32 / count, sums[ch].1 as f32 / count);
            for ((d, &x), &dy) in dxp.iter_mut().zip(xp).zip(dp) {
                let dz = if x * scale + shift > 0.0 { dy } else { 0.0 };
                *d = if batch {
                    scale * (dz - sdz - (x - mean) * inv * sdzx)
                } else {
                    scale * dz
                };
            }
        });
    let dgamma = sums.iter().map(|s| s.1 as f32).collect();
    let dbeta = sums.iter().map(|s| s.0 as f32).collect();
    (
        tensor(dx, dims(x, n, c)),
        tensor(dgamma, [c]),
        tensor(dbeta, [c]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::testing::random;
    use burn::module::Module;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Device;

    fn close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
        crate::model::kernels::testing::close(got, want, 1e-5, what);
    }

    /// A batch norm with non-trivial scale, shift and running statistics.
    fn layer(c: usize, device: &Device) -> BatchNorm {
        let mut bn = BatchNormConfig::new(c).init(device);
        let trainable = |t: Tensor<1>| {
            if device.is_autodiff() {
                t.require_grad()
            } else {
                t
            }
        };
        bn.gamma = bn.gamma.map(|_| trainable(random([c], 1, 0.5, device)));
        bn.beta = bn.beta.map(|_| trainable(random([c], 2, -1.0, device)));
        bn.running_mean.update(random([c], 3, -1.0, device));
        bn.running_var.update(random([c], 4, 0.2, device));
        bn
    }

    #[test]
    fn training_and_frozen_forward_gradients_and_running_statistics_match_burn() {
        let dev = Device::flex().autodiff();
        for frozen in [false, true] {
            let what = if frozen { "frozen" } else { "training" };
            let (ours, theirs) = (layer(5, &dev), layer(5, &dev));
            let (ours, theirs) = if frozen {
                let off = |bn: BatchNorm| BatchNorm {
                    training: burn::module::Param::from_bool(false),
                    ..bn
                };
                (off(ours), off(theirs))
            } else {
                (ours, theirs)
            };
            // Offset so that the ReLU cuts a good share of the values.
            let x = random([3, 5, 6, 7], 5, -1.0, &dev)
                .add_scalar(0.3)
                .require_grad();
            assert!(on_flex(&x));
            let (yo, yt) = (norm_relu(&ours, x.clone()), relu(theirs.forward(x.clone())));
            close(yo.clone(), yt.clone(), &format!("{what} output"));
            let r = random([3, 5, 6, 7], 6, -1.0, &dev);
            let (go, gt) = ((yo * r.clone()).sum().backward(), (yt * r).sum().backward());
            close(
                x.grad(&go).unwrap(),
                x.grad(&gt).unwrap(),
                &format!("{what} input gradient"),
            );
            close(
                ours.gamma.grad(&go).unwrap(),
                theirs.gamma.grad(&gt).unwrap(),
                &format!("{what} gamma gradient"),
            );
            close(
                ours.beta.grad(&go).unwrap(),
                theirs.beta.grad(&gt).unwrap(),
                &format!("{what} beta gradient"),
            );
            close(
                ours.running_mean.value_sync(),
                theirs.running_mean.value_sync(),
                &format!("{what} running mean"),
            );
            close(
                ours.running_var.value_sync(),
                theirs.running_var.value_sync(),
                &format!("{what} running variance"),
            );
        }
    }

    #[test]
    fn inference_uses_the_running_statistics() {
        let dev = Device::flex();
        let bn = layer(4, &dev);
        let x = random([2, 4, 5, 3], 7, -1.0, &dev);
        close(norm_relu(&bn, x.clone()), relu(bn.forward(x)), "inference");
        // And a model moved to the device keeps matching (the statistics are the module's, not a copy's).
        let bn = bn.fork(&dev);
        let x = random([1, 4, 2, 2], 8, -1.0, &dev);
        close(
            norm_relu(&bn, x.clone()),
            relu(bn.forward(x)),
            "inference after fork",
        );
    }
}
