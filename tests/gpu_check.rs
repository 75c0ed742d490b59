//! A dry run of `benches/gpu/check.sh` with a stand-in binary and PyTorch peer (no GPU here): the failure paths
//! a short GPU window must survive — a failing smoke step, error text with quotes, a NaN loss, nothing measured —
//! and the files that come back.

use std::path::Path;
use std::process::Command;

/// A stand-in `chexlab`: `gpu-probe` passes; `bench-step` prints a result (a NaN loss, serialised as `null`, in
/// bf16) and writes a gradient file, or fails on CUDA with quotes in its error when `STUB_FAIL_CUDA` is set.
const STUB: &str = r#"#!/usr/bin/env python3
import json, os, struct, sys
a = sys.argv[1:]
if "gpu-probe" in a:
    print(json.dumps({"ok": True, "size": 1})); sys.exit(0)
dev = a[a.index("--device") + 1]
if dev == "cuda" and os.environ.get("STUB_FAIL_CUDA"):
    sys.stderr.write('error: device "cuda": can\'t open "libcuda.so"\n'); sys.exit(1)
lens = [3, 5]
if "--grads-out" in a:
    eps = 1e-6 if dev == "cuda" else 0.0
    vals = [0.1 * (i + 1) * (1 + eps) for i in range(sum(lens))]
    open(a[a.index("--grads-out") + 1], "wb").write(b"".join(struct.pack("<f", v) for v in vals))
bf16 = "bf16" in a
print(json.dumps({"first_loss": 0.69, "last_loss": None if bf16 else 0.5, "images_per_s": 12.5,
                  "grad_tensors": lens if "--grads-out" in a else []}))
"#;

const PEER: &str = r#"import json, os, sys
if os.environ.get("STUB_FAIL_TORCH"):
    sys.exit("no torchvision")
print(json.dumps({"peer": "stub", "images_per_s": 10.0}))
"#;

fn check(dir: &Path, out: &str, env: &[(&str, &str)]) -> (i32, String, Vec<serde_json::Value>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/gpu/check.sh");
    let mut cmd = Command::new(script);
    cmd.arg(dir.join("chexlab"))
        .arg(dir.join(out))
        .env("TORCH_STEP", dir.join("peer.py"))
        .env("STEPS", "2")
        .env_remove("OUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let raw = std::fs::read_to_string(dir.join(out).join("raw.jsonl")).unwrap_or_default();
    let rows = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (o.status.code().unwrap_or(-1), text, rows)
}

fn status<'a>(rows: &'a [serde_json::Value], step: &str) -> &'a str {
    rows.iter()
        .find(|r| r["step"] == step)
        .and_then(|r| r["status"].as_str())
        .unwrap_or_else(|| panic!("no row {step}: {rows:?}"))
}

#[test]
fn gpu_check_dry_run_survives_its_failure_paths() {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("skipping: python3 not found");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("chexlab"), STUB).unwrap();
    std::fs::write(dir.join("peer.py"), PEER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("chexlab"), std::fs::Permissions::from_mode(0o755)).unwrap();

    // Everything runs: the gradients agree within the threshold, the NaN bf16 loss fails its own check only.
    let (rc, text, rows) = check(dir, "ok", &[]);
    assert_eq!(rc, 0, "{text}");
    assert_eq!(status(&rows, "grad-small 64 px"), "ok", "{rows:?}");
    assert_eq!(status(&rows, "grad-densenet121 224 px"), "ok");
    assert_eq!(status(&rows, "bf16-loss-falls"), "failed");
    assert_eq!(status(&rows, "torch-320-f32"), "ok");
    let mut back: Vec<_> = std::fs::read_dir(dir.join("ok"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    back.sort();
    assert_eq!(
        back,
        ["logs.tar.gz", "raw.jsonl", "table.md"],
        "only these come back"
    );
    let table = std::fs::read_to_string(dir.join("ok/table.md")).unwrap();
    assert!(
        table.contains("| 224-f32 | 12.5 | 10.0 | 1.25 |"),
        "{table}"
    );

    // The smoke step fails (quotes in its error): the other CUDA steps are skipped, PyTorch's baseline still runs.
    let (rc, text, rows) = check(dir, "smoke", &[("STUB_FAIL_CUDA", "1")]);
    assert_eq!(rc, 0, "{text}");
    assert_eq!(status(&rows, "smoke"), "failed");
    let smoke = rows.iter().find(|r| r["step"] == "smoke").unwrap();
    assert!(
        smoke["error"].as_str().unwrap().contains("\"cuda\""),
        "{smoke}"
    );
    for skipped in [
        "small-cuda",
        "chexlab-224-f32",
        "chexlab-224-bf16",
        "chexlab-320-f32",
    ] {
        assert_eq!(status(&rows, skipped), "skipped", "{skipped}");
    }
    assert_eq!(status(&rows, "torch-224-f32"), "ok");

    // CUDA and PyTorch both fail: the CPU gradient steps still measured something, so the run counts.
    let env = [("STUB_FAIL_CUDA", "1"), ("STUB_FAIL_TORCH", "1")];
    let (rc, text, _) = check(dir, "none", &env);
    assert_eq!(rc, 0, "CPU steps measured: {text}");
    // The binary fails everywhere: nothing is measured, a non-zero exit, and still a table.
    std::fs::write(
        dir.join("chexlab"),
        "#!/bin/sh\necho 'error: \"broken\"' >&2\nexit 1\n",
    )
    .unwrap();
    let (rc, text, rows) = check(dir, "empty", &env);
    assert_eq!(rc, 2, "{text}");
    assert_eq!(status(&rows, "probe"), "failed");
    assert!(dir.join("empty/table.md").is_file());

    // The deadline: steps that cannot start in time are recorded as skipped, not run.
    let (_, text, rows) = check(dir, "late", &[("DEADLINE_S", "12")]);
    assert!(
        rows.iter().any(|r| r["error"] == "deadline"),
        "{text}\n{rows:?}"
    );
}
