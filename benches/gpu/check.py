#!/usr/bin/env python3
"""The GPU check's driver (see check.sh for what it does and its knobs). Standard library only; numpy when
present for the gradient comparison."""
import functools, glob, json, math, os, shutil, signal, subprocess, sys, tarfile, tempfile, time
from array import array

try:
    import numpy as np
except ImportError:
    np = None

START = time.monotonic()
DEADLINE = float(os.environ.get("DEADLINE_S", 480))
RESERVE = 10.0  # seconds kept for packing the outputs
HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.environ.get("PYTHON", sys.executable)
TORCH_STEP = os.environ.get("TORCH_STEP", os.path.join(HERE, "torch_step.py"))
STEPS, WARMUP, BATCH = (int(os.environ.get(k, d)) for k, d in (("STEPS", 10), ("WARMUP", 3), ("BATCH", 16)))
GRAD_TOL = float(os.environ.get("GRAD_TOL", 1e-3))

binary, out = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
os.makedirs(out, exist_ok=True)
work = tempfile.mkdtemp(prefix="gpu-check-")
logs = os.path.join(work, "logs")
os.makedirs(logs)
rows = []


def left():
    return DEADLINE - (time.monotonic() - START)


def fmt(v, spec=".1f"):
    return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def emit(row):
    """Appends a row to raw.jsonl and rebuilds table.md, both in OUT, so a run cut short keeps what it had."""
    rows.append(row)
    with open(os.path.join(out, "raw.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    tmp = os.path.join(out, ".table.md.tmp")
    with open(tmp, "w") as f:
        f.write(table())
    os.replace(tmp, os.path.join(out, "table.md"))
    print(f"check: {row['step']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else ""), flush=True)


def run(step, limit, cmd, env=None):
    """Runs one step under the deadline; returns (row, parsed JSON lines of stdout)."""
    budget = min(limit, left() - RESERVE)
    row = {"step": step, "cmd": cmd}
    if budget < 5:
        row.update(status="skipped", error="deadline")
        return row, []
    log = open(os.path.join(logs, step + ".log"), "w")
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)
    try:
        stdout, _ = p.communicate(timeout=budget)
        status = "ok" if p.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)  # as `timeout -k 5`: TERM, then KILL
        try:
            stdout, _ = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            stdout, _ = p.communicate()
        status = "timeout"
    log.close()
    with open(os.path.join(logs, step + ".out"), "w") as f:
        f.write(stdout or "")
    parsed = []
    for line in (stdout or "").splitlines():
        if line.startswith("{"):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                pass
    row.update(status=status, rc=p.returncode, wall_s=round(time.monotonic() - t, 2))
    if status == "ok" and not parsed:
        row.update(status="failed", error="no JSON line on stdout")
    if status != "ok" and "error" not in row:
        with open(os.path.join(logs, step + ".log")) as f:
            tail = [l.strip() for l in f.read().splitlines() if l.strip()][-3:]
        row["error"] = (f"timed out after {budget:.0f} s; " if status == "timeout" else "") + " | ".join(tail)
    if parsed:
        row["result"] = parsed[-1]
    return row, parsed


@functools.lru_cache(maxsize=None)  # a reference gradient is read once, however many comparisons use it
def read_f32(path):
    if np is not None:
        return np.fromfile(path, dtype="<f4").astype("float64")
    a = array("f")
    with open(path, "rb") as f:
        a.frombytes(f.read())
    return a


def per_tensor_errors(a, b, lengths):
    """Relative L2 error of b against a, per tensor of the layout."""
    errs, o = [], 0
    for n in lengths:
        x, y = a[o:o + n], b[o:o + n]
        if np is not None:
            num, den = float(np.linalg.norm(x - y)), float(np.linalg.norm(x))
        else:
            num = math.sqrt(sum((p - q) ** 2 for p, q in zip(x, y)))
            den = math.sqrt(sum(p * p for p in x))
        errs.append(num / den if den > 0 else (0.0 if num == 0 else math.inf))
        o += n
    return errs


def compare(step, ref, floors, test):
    """Gradient rows: `ref` and `test` are (row, grads path); `floors` a list of such pairs for the noise floor."""
    row = {"step": step}
    paths = [ref[1], test[1]] + [p for pair in floors for _, p in pair]
    if any(not os.path.exists(p) for p in paths) or "result" not in test[0]:
        row.update(status="skipped", error="a gradient run did not finish")
        return row
    lengths = test[0]["result"].get("grad_tensors") or [os.path.getsize(ref[1]) // 4]
    a, b = read_f32(ref[1]), read_f32(test[1])
    if len(a) != len(b) or len(a) != sum(lengths):
        row.update(status="failed", error=f"gradient sizes differ: {len(a)} vs {len(b)} (layout {sum(lengths)})")
        return row
    err = per_tensor_errors(a, b, lengths)
    floor = [0.0] * len(lengths)
    for (_, p), (_, q) in floors:
        floor = [max(f, e) for f, e in zip(floor, per_tensor_errors(read_f32(p), read_f32(q), lengths))]
    limit = [max(GRAD_TOL, 10 * f) for f in floor]
    worst = max(range(len(err)), key=lambda i: err[i] / limit[i])
    ok = all(e <= l for e, l in zip(err, limit))
    row.update(status="ok" if ok else "failed", tensors=len(lengths), values=len(a),
               worst_tensor=worst, worst_values=lengths[worst], worst_rel_err=err[worst],
               worst_noise_floor=floor[worst], threshold=limit[worst], max_rel_err=max(err),
               loss_ref=ref[0].get("result", {}).get("first_loss"), loss_test=test[0]["result"].get("first_loss"))
    if not ok:
        row["error"] = f"tensor {worst} ({lengths[worst]} values): relative error {err[worst]:.2e} > {limit[worst]:.2e}"
    return row


def table():
    by = {r["step"]: r for r in rows}
    s = ["# GPU check\n", f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} steps ok, "
         f"{time.monotonic() - START:.0f} s of a {DEADLINE:.0f} s deadline.\n"]
    v = by.get("versions", {}).get("result", {})
    if v:
        s.append("| " + " | ".join(v) + " |\n|" + "---|" * len(v) + "\n| " + " | ".join(str(x) for x in v.values()) + " |\n")
    s.append("## Steps\n\n| step | status | rc | wall s | note |\n|---|---|---|---|---|")
    for r in rows:
        note = str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:200]
        s.append(f"| {r['step']} | {r['status']} | {r.get('rc', '')} | {fmt(r.get('wall_s'))} | {note} |")
    s.append("\n## Gradient, first step, same weights and batch: GPU against CPU, per tensor\n")
    s.append("| case | tensors | values | worst tensor | its rel. L2 error | its noise floor | threshold | verdict |")
    s.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["step"].startswith("grad-"):
            s.append(f"| {r['step'][5:]} | {r.get('tensors', '')} | {r.get('values', '')} | {r.get('worst_tensor', '')} | "
                     f"{fmt(r.get('worst_rel_err'), '.2e')} | {fmt(r.get('worst_noise_floor'), '.2e')} | "
                     f"{fmt(r.get('threshold'), '.2e')} | {r['status']} |")
    s.append("\n## DenseNet-121 training step on the GPU, images/s (fp32: chexlab without TF32; PyTorch with it)\n")
    s.append("| case | chexlab | PyTorch | chexlab / PyTorch | first loss | last loss |")
    s.append("|---|---|---|---|---|---|")
    for case in ("224-f32", "224-bf16", "320-f32"):
        a = by.get("chexlab-" + case, {}).get("result", {})
        b = by.get("torch-" + case, {}).get("result", {})
        x, y = a.get("images_per_s"), b.get("images_per_s")
        ratio = fmt(x / y, ".2f") if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y else "n/a"
        s.append(f"| {case} | {fmt(x)} | {fmt(y)} | {ratio} | {fmt(a.get('first_loss'), '.5f')} | "
                 f"{fmt(a.get('last_loss'), '.5f')} |")
    return "\n".join(s) + "\n"


def versions():
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    v = {"gpu": sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]) or "none"}
    nvcc = shutil.which("nvcc")
    v["nvcc"] = (sh(["nvcc", "--version"]).splitlines() or ["none"])[-1]
    cuda = os.environ.get("CUDA_PATH") or (os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else "")
    if not cuda and os.path.isdir("/usr/local/cuda"):
        cuda = "/usr/local/cuda"
    if cuda:
        os.environ["CUDA_PATH"] = cuda
    v["cuda_path"] = cuda or "none"
    v["cuda_bf16.h"] = "yes" if cuda and os.path.exists(os.path.join(cuda, "include", "cuda_bf16.h")) else "missing"
    torch = sh([PY, "-c", "import torch, os; print(torch.__version__); print(os.path.dirname(os.path.dirname(torch.__file__)))"]).splitlines()
    v["torch"] = torch[0] if torch else "none"
    site = torch[1] if len(torch) > 1 else None
    # Libraries: the toolkit's NVRTC first, then the wheels'; their real folders go on LD_LIBRARY_PATH.
    found = {}
    cands = {"nvrtc": ([os.path.join(cuda, d, "libnvrtc.so*") for d in ("lib64", "targets/x86_64-linux/lib")] if cuda else [])
             + ([os.path.join(site, "nvidia", d, "lib", "libnvrtc.so*") for d in ("cuda_nvrtc", "cu*")] if site else []),
             "nccl": [os.path.join(site, "nvidia", "nccl", "lib", "libnccl.so*")] if site else []}
    for name, pats in cands.items():
        for pat in pats:
            hits = [f for f in sorted(glob.glob(pat)) if "builtins" not in f and "alt" not in f]
            if hits:
                found[name] = os.path.realpath(hits[0])
                break
    libdir = os.path.join(work, "lib")
    os.makedirs(libdir, exist_ok=True)
    paths = [libdir] + sorted({os.path.dirname(f) for f in found.values()})
    for name, f in found.items():
        link = os.path.join(libdir, f"lib{name}.so")
        if not os.path.exists(os.path.join(os.path.dirname(f), f"lib{name}.so")):
            os.symlink(f, link)
    os.environ["LD_LIBRARY_PATH"] = ":".join(paths + [os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    import ctypes
    for name, fn in (("nvrtc", "nvrtcVersion"), ("nccl", "ncclGetVersion")):
        v[name] = found.get(name, "none")
        try:
            lib = ctypes.CDLL(found[name])
            if name == "nvrtc":
                a, b = ctypes.c_int(), ctypes.c_int()
                lib.nvrtcVersion(ctypes.byref(a), ctypes.byref(b))
                v[name] = f"{a.value}.{b.value}"
            else:
                n = ctypes.c_int()
                lib.ncclGetVersion(ctypes.byref(n))
                v[name] = str(n.value)
        except (KeyError, OSError, AttributeError):
            pass
    missing = [l.split()[0] for l in sh(["ldd", binary]).splitlines() if "not found" in l]
    v["missing_libraries"] = ", ".join(missing) or "none"
    return v, missing


def main():
    global binary
    if binary.endswith(".xz"):
        plain = os.path.join(work, "chexlab")
        with open(plain, "wb") as f:
            subprocess.run(["xz", "-dc", binary], stdout=f, check=True)
        os.chmod(plain, 0o755)
        binary = plain
    v, missing = versions()
    emit({"step": "versions", "status": "ok", "result": v})
    b = [binary, "--quiet"]
    usable = not missing
    if missing:
        emit({"step": "ldd", "status": "failed", "error": "missing libraries: " + ", ".join(missing)})

    def step(name, limit, cmd, gpu=True):
        if gpu and not usable:
            row, _ = {"step": name, "status": "skipped", "error": "the probe or smoke step failed"}, []
        else:
            row, _ = run(name, limit, cmd)
        emit(row)
        return row

    bench = lambda *a: b + ["bench-step", *a]
    if usable:
        usable = step("probe", 90, b + ["gpu-probe", "--all-reduce"])["status"] == "ok"
        smoke = step("smoke", 120, bench("--arch", "small", "--size", "32", "--batch", "2", "--steps", "2",
                                         "--warmup", "0", "--device", "cuda"))
        usable = usable and smoke["status"] == "ok"
    g = lambda n: os.path.join(work, n + ".grads")
    small = ["--arch", "small", "--size", "64", "--batch", "8", "--steps", "0", "--warmup", "0"]
    cpu1 = step("small-cpu-1thread", 60, bench(*small, "--device", "cpu", "--threads", "1", "--grads-out", g("s-cpu1")), gpu=False)
    cpun = step("small-cpu-threads", 60, bench(*small, "--device", "cpu", "--grads-out", g("s-cpun")), gpu=False)
    gpu1 = step("small-cuda", 120, bench(*small, "--device", "cuda", "--grads-out", g("s-gpu1")))
    gpu2 = step("small-cuda-again", 120, bench(*small, "--device", "cuda", "--grads-out", g("s-gpu2")))
    emit(compare("grad-small 64 px", (cpu1, g("s-cpu1")), [((cpu1, g("s-cpu1")), (cpun, g("s-cpun"))),
                 ((gpu1, g("s-gpu1")), (gpu2, g("s-gpu2")))], (gpu1, g("s-gpu1"))))
    torch = lambda size, prec: [PY, TORCH_STEP, "--size", str(size), "--batch", str(BATCH), "--steps", str(STEPS),
                                "--warmup", str(WARMUP), "--precision", prec]
    step("torch-224-f32", 150, torch(224, "f32"), gpu=False)
    dn = ["--arch", "densenet121", "--size", "224", "--batch", str(BATCH)]
    fast = step("chexlab-224-f32", 200, bench(*dn, "--steps", str(STEPS), "--warmup", str(WARMUP), "--device", "cuda",
                                              "--grads-out", g("d-gpu")))
    if fast["status"] == "ok":
        ref = step("dn121-cpu", 150, bench(*dn, "--steps", "0", "--warmup", "0", "--device", "cpu", "--grads-out", g("d-cpu")), gpu=False)
        emit(compare("grad-densenet121 224 px", (ref, g("d-cpu")), [], (fast, g("d-gpu"))))
    half = step("chexlab-224-bf16", 200, bench(*dn, "--steps", str(STEPS), "--warmup", str(WARMUP), "--device", "cuda",
                                              "--precision", "bf16"))
    res = half.get("result", {})
    first, last = res.get("first_loss"), res.get("last_loss")
    falls = isinstance(first, (int, float)) and isinstance(last, (int, float)) and math.isfinite(last) and last < first
    if half["status"] == "ok":
        emit({"step": "bf16-loss-falls", "status": "ok" if falls else "failed", "result": {"first": first, "last": last},
              **({} if falls else {"error": f"loss {first} -> {last} over {STEPS + WARMUP} steps"})})
    step("torch-224-bf16", 150, torch(224, "bf16"), gpu=False)
    dn[3] = "320"
    step("chexlab-320-f32", 200, bench(*dn, "--steps", str(STEPS), "--warmup", str(WARMUP), "--device", "cuda"))
    step("torch-320-f32", 150, torch(320, "f32"), gpu=False)


try:
    main()
finally:
    with tarfile.open(os.path.join(out, "logs.tar.gz"), "w:gz") as t:
        t.add(logs, arcname="logs")
    shutil.rmtree(work, ignore_errors=True)
    measured = [r for r in rows if r["status"] == "ok" and r["step"] != "versions"]
    print(f"check: {len(measured)} measuring steps ok; table in {os.path.join(out, 'table.md')}")
    sys.exit(0 if measured else 2)
