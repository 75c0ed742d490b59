//! Replays every fuzz corpus and regression input through the fuzz targets' harness (`fuzz/harness.rs`) on the
//! stable toolchain, so that what a campaign found stays fixed without libFuzzer. Time bounds are the
//! campaign's business: here only panics and broken invariants fail.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for target in harness::TARGETS {
        let mut inputs = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            let mut files: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                // A panic names the input that caused it.
                let ok = std::panic::catch_unwind(|| harness::run(target, &data, false));
                assert!(ok.is_ok(), "{target}: {} fails", f.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{target} has no corpus");
        total += inputs;
    }
    eprintln!("{total} inputs replayed");
}
