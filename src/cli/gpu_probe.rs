//! `chexlab gpu-probe`: what each rank finds of the GPU path.

use anyhow::Result;
use clap::Args;

/// Arguments of `chexlab gpu-probe`.
#[derive(Args)]
pub struct GpuProbeArgs {
    /// Also bring up the NCCL communicator on the GPUs and check one all-reduce (needs a GPU per rank).
    #[arg(long)]
    all_reduce: bool,
}

impl GpuProbeArgs {
    /// Prints one JSON line per rank (two with `--all-reduce`).
    pub fn run(self) -> Result<()> {
        let comm = chexlab::comm::from_env()?;
        let report = chexlab::comm::nccl::probe_report(comm.as_ref())?;
        println!("{}", serde_json::to_string(&report)?);
        if self.all_reduce {
            let checked = chexlab::comm::nccl::check_all_reduce(comm)?;
            println!("{}", serde_json::to_string(&checked)?);
        }
        Ok(())
    }
}
