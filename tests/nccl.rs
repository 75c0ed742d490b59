//! The CPU-testable part of the GPU path (features `mpi` + `nccl`; Open MPI installed), under a real
//! `mpirun -np 2`: probing for the driver and NCCL, the ranks' agreement on NCCL or MPI, and the NCCL unique-id
//! exchange over MPI with the real `libnccl.so.2` (from the `nvidia-nccl-cu12` PyPI wheel, which `.ci/run`
//! installs; `ncclGetUniqueId` needs the library, not a GPU). Without the wheel the id test says why and skips.
#![cfg(all(feature = "mpi", feature = "nccl"))]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of `libnccl.so.2` from a pip-installed NVIDIA NCCL wheel, if any.
fn nccl_wheel_lib() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'lib'))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("libnccl.so.2").is_file().then_some(dir)
}

/// A directory holding the `libnccl.so` symlink cudarc looks for (the wheel ships only the soname).
fn symlinked(lib: &Path, dir: &Path) -> PathBuf {
    let link = dir.join("libnccl.so");
    std::os::unix::fs::symlink(lib.join("libnccl.so.2"), &link).unwrap();
    dir.to_path_buf()
}

/// Runs `chexlab gpu-probe` on two ranks; each rank's library path is given (None: no NCCL for that rank).
fn probe(libs: [Option<&Path>; 2]) -> Vec<serde_json::Value> {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("LD_LIBRARY_PATH");
    for (i, lib) in libs.iter().enumerate() {
        if i > 0 {
            c.arg(":");
        }
        c.args(["-np", "1", "env"]);
        if let Some(lib) = lib {
            c.arg(format!("LD_LIBRARY_PATH={}", lib.display()));
        }
        c.args([env!("CARGO_BIN_EXE_chexlab"), "--quiet", "gpu-probe"]);
    }
    let out = c.output().expect("mpirun runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "gpu-probe failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reports: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    reports.sort_by_key(|r| r["rank"].as_u64());
    assert_eq!(reports.len(), 2, "{stdout}");
    reports
}

#[test]
fn ranks_exchange_the_nccl_id_over_mpi_and_fall_back_to_mpi_without_a_gpu() {
    let Some(lib) = nccl_wheel_lib() else {
        eprintln!(
            "skipped: no NCCL wheel (pip install nvidia-nccl-cu12) to load libnccl.so.2 from"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let libdir = symlinked(&lib, dir.path());
    let r = probe([Some(&libdir), Some(&libdir)]);
    for (rank, rep) in r.iter().enumerate() {
        assert_eq!(rep["rank"], rank as u64);
        assert_eq!(rep["size"], 2);
        assert_eq!(rep["probe"]["nccl"], true, "{rep}");
        let id = rep["id_sha256"].as_str().expect("an id on every rank");
        assert_eq!(id.len(), 64);
    }
    // Every rank holds rank 0's id.
    assert_eq!(r[0]["id_sha256"], r[1]["id_sha256"]);
    // This machine has no GPU driver: both ranks agree on MPI for the gradients.
    if r.iter().all(|rep| rep["probe"]["cuda"] == false) {
        for rep in &r {
            assert_eq!(rep["all_reduce"], "mpi");
            assert_eq!(rep["ranks_lacking_nccl"], serde_json::json!([0, 1]));
        }
    }
    // A second run draws another id.
    let again = probe([Some(&libdir), Some(&libdir)]);
    assert_ne!(again[0]["id_sha256"], r[0]["id_sha256"]);
}

#[test]
fn one_rank_without_nccl_makes_every_rank_skip_the_id_and_use_mpi() {
    let libdir = nccl_wheel_lib().map(|lib| {
        let dir = tempfile::tempdir().unwrap().keep();
        symlinked(&lib, &dir)
    });
    // Rank 0 may have the library, rank 1 has none: no rank may enter NCCL calls the other never makes.
    let r = probe([libdir.as_deref(), None]);
    assert_eq!(r[1]["probe"]["nccl"], false);
    for rep in &r {
        assert_eq!(rep["id_sha256"], serde_json::Value::Null, "{rep}");
        assert_eq!(rep["all_reduce"], "mpi");
        assert!(
            rep["ranks_lacking_nccl"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(1))
        );
    }
}
