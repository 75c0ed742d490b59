//! Which device a rank computes on: the CPU (Burn's Flex backend) or its own GPU, chosen by local rank.

use crate::error::{Error, Result};

/// The GPU of a rank: the only one when one is visible (Slurm's `--gpus-per-task` or `CUDA_VISIBLE_DEVICES` per
/// rank), else the local rank's, refused when the node has fewer GPUs than ranks.
pub fn gpu_ordinal(local_rank: usize, devices: usize) -> Result<usize> {
    match devices {
        0 => Err(Error::distributed(
            None,
            "choosing a GPU",
            "no GPU visible to this rank",
        )),
        1 => Ok(0),
        n if local_rank < n => Ok(local_rank),
        n => Err(Error::distributed(
            None,
            "choosing a GPU",
            format!(
                "local rank {local_rank} has no GPU of its own: {n} GPUs on this node for more ranks \
                 (launch one rank per GPU: --ntasks-per-node = --gpus-per-node)"
            ),
        )),
    }
}

/// The Burn device a rank computes on.
pub fn compute_device(
    kind: super::ComputeDevice,
    local_rank: usize,
) -> Result<burn::tensor::Device> {
    match kind {
        super::ComputeDevice::Cpu => Ok(burn::tensor::Device::flex()),
        super::ComputeDevice::Cuda => cuda_device(local_rank),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(local_rank: usize) -> Result<burn::tensor::Device> {
    // SAFETY: only tries to dlopen the driver library (cudarc panics on use when it is missing).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::distributed(
            None,
            "choosing a GPU",
            "distributed.device = \"cuda\", but no CUDA driver (libcuda.so) could be loaded",
        ));
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| Error::distributed(None, "CUDA driver", e.to_string()))?;
    let ordinal = gpu_ordinal(local_rank, count.max(0) as usize)?;
    tracing::info!(
        local_rank,
        ordinal,
        "computing on CUDA device {ordinal} of {count}"
    );
    Ok(burn::tensor::Device::cuda(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_local_rank: usize) -> Result<burn::tensor::Device> {
    Err(Error::Config(
        "distributed.device = \"cuda\" needs a chexlab built with the `cuda` feature (launch/build-cuda.sh)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_ordinals_follow_the_local_rank_or_the_only_gpu() {
        assert_eq!(gpu_ordinal(3, 1).unwrap(), 0);
        assert_eq!(gpu_ordinal(2, 4).unwrap(), 2);
        let err = gpu_ordinal(4, 4).unwrap_err().to_string();
        assert!(err.contains("4 GPUs on this node"), "{err}");
        assert!(gpu_ordinal(0, 0).is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = compute_device(crate::comm::ComputeDevice::Cuda, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cuda` feature"), "{err}");
    }
}
