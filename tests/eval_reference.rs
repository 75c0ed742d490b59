//! Known answers for the evaluation statistics: DeLong's test against committed reference values
//! (`tests/fixtures/eval/delong_reference.py`, computed from the pairwise definition), and AUROC plus its stratified
//! bootstrap interval and the average precision against scikit-learn on random inputs with ties (runs when python3 with scikit-learn is
//! installed, and says why it skips otherwise).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use chexlab::eval::bootstrap::auroc_ci;
use chexlab::eval::compare::{delong, paired};
use rand::{Rng, SeedableRng};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval")
        .join(name)
}

#[test]
fn delong_matches_the_pairwise_reference() {
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("delong_cases.json")).unwrap())
            .unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for (k, c) in cases.iter().enumerate() {
        let v = |key: &str| -> Vec<f64> {
            c[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let labels: Vec<bool> = c["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_bool().unwrap())
            .collect();
        let d = delong(&v("a"), &v("b"), &labels).unwrap();
        let close = |got: f64, key: &str, tol: f64| {
            let want = c[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= tol * want.abs().max(1e-12),
                "case {k} {key}: {got} vs {want}"
            );
        };
        close(d.auroc_a, "auroc_a", 1e-12);
        close(d.auroc_b, "auroc_b", 1e-12);
        close(d.var_diff, "var_diff", 1e-9);
        close(d.z, "z", 1e-9);
        close(d.p, "p", 1e-6);
    }
    // The last case is a real difference: significant.
    assert!(cases[3]["p"].as_f64().unwrap() < 1e-3);
}

fn sklearn_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import sklearn, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipping: python3 with scikit-learn and numpy is not installed (pip install scikit-learn)"
        );
    }
    ok
}

#[test]
fn auroc_and_bootstrap_interval_agree_with_scikit_learn() {
    if !sklearn_available() {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for (n, prevalence) in [(300usize, 0.3), (1000, 0.08)] {
        let labels: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < prevalence).collect();
        // Scores on a coarse grid: many ties, within and across classes.
        let scores: Vec<f32> = labels
            .iter()
            .map(|&l| ((rng.random::<f32>() + if l { 0.35 } else { 0.0 }) * 20.0).round() / 20.0)
            .collect();
        let (resamples, level) = (2000, 0.95);
        let (a, (lo, hi)) = auroc_ci(&scores, &labels, resamples, level, 5).unwrap();
        let req = serde_json::json!({ "scores": scores, "labels": labels, "resamples": resamples, "level": level });
        let mut child = Command::new("python3")
            .arg(fixture("sklearn_check.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(req.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = r["auroc"].as_f64().unwrap();
        assert!((a - want).abs() < 1e-12, "AUROC {a} vs scikit-learn {want}");
        let ap = chexlab::eval::auprc(&scores, &labels).unwrap();
        let want = r["auprc"].as_f64().unwrap();
        assert!(
            (ap - want).abs() < 1e-12,
            "AUPRC {ap} vs scikit-learn {want}"
        );
        // Two independent bootstraps of 2,000 resamples: the endpoints agree to Monte Carlo error.
        let (rlo, rhi) = (r["ci"][0].as_f64().unwrap(), r["ci"][1].as_f64().unwrap());
        assert!(
            (lo - rlo).abs() < 0.01 && (hi - rhi).abs() < 0.01,
            "CI ({lo}, {hi}) vs reference ({rlo}, {rhi})"
        );
    }
}

#[test]
fn paired_bootstrap_agrees_with_delong_on_a_clear_difference() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let n = 2000;
    let labels: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.2).collect();
    let noise: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    let good: Vec<f32> = labels
        .iter()
        .zip(&noise)
        .map(|(&l, &e)| e + if l { 0.6 } else { 0.0 })
        .collect();
    let weak: Vec<f32> = labels
        .iter()
        .zip(&noise)
        .map(|(&l, &e)| 0.5 * e + rng.random::<f32>() + if l { 0.2 } else { 0.0 })
        .collect();
    let p = paired(&good, &weak, &labels, 1000, 0.95, 9).unwrap();
    assert!(p.diff > 0.1 && p.ci.0 > 0.0, "{p:?}");
    assert!(p.p_bootstrap < 0.01 && p.delong.unwrap().p < 1e-6, "{p:?}");
    // The bootstrap's standard error and DeLong's agree (both estimate the same sampling spread).
    let half_width = (p.ci.1 - p.ci.0) / 2.0 / 1.96;
    let ratio = half_width / p.delong.unwrap().var_diff.sqrt();
    assert!(
        (0.8..1.25).contains(&ratio),
        "bootstrap SE / DeLong SE = {ratio}"
    );
}

#[test]
fn competition_models_scored_from_their_files_agree_with_scikit_learn_and_delong() {
    // Real files: the CheXpert test set's radiologist labels and three competition models' probabilities (see
    // ../shared/reference/README).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/chexpert-test");
    if !dir.join("groundtruth.csv").is_file() {
        eprintln!("skipping: {} is absent", dir.display());
        return;
    }
    if !sklearn_available() {
        return;
    }
    let truth = dir.join("groundtruth.csv");
    let models: Vec<(String, std::path::PathBuf)> = ["uestc", "drnet", "ihil"]
        .iter()
        .map(|m| {
            (
                m.to_string(),
                dir.join(format!("predictions/{m}_predictions.csv")),
            )
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results.json");
    let mut args = vec!["evaluate".to_string()];
    for (m, p) in &models {
        args.extend(["--predictions".into(), format!("{m}={}", p.display())]);
    }
    args.extend(["--truth".into(), truth.display().to_string()]);
    args.extend([
        "--bootstrap".into(),
        "200".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    let run = Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        text.contains("ihil: 500 studies, mean AUROC 0.9266"),
        "{text}"
    );
    let results = chexlab::eval::results::Results::read(&out).unwrap();
    assert_eq!(results.reference.as_deref(), Some("groundtruth.csv"));

    let mut py = Command::new("python3");
    py.arg(fixture("external_check.py")).arg(&truth);
    for (m, p) in &models {
        py.arg(format!("{m}={}", p.display()));
    }
    let r = py.output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let mut checked = 0;
    for (m, per) in want["auroc"].as_object().unwrap() {
        let got = &results.sources[m];
        assert_eq!(got.images, 500);
        for (o, a) in per.as_object().unwrap() {
            let (g, w) = (got.auroc_of(o).unwrap(), a.as_f64().unwrap());
            assert!((g - w).abs() < 1e-9, "{m} {o}: {g} vs scikit-learn {w}");
            let (lo, hi) = got.ci_of(o).unwrap();
            assert!(lo <= g && g <= hi, "{m} {o}: interval ({lo}, {hi})");
            checked += 1;
        }
    }
    assert_eq!(checked, 15, "3 models × 5 competition observations");
    let pairs = want["delong"].as_array().unwrap();
    assert_eq!(pairs.len(), 15);
    assert_eq!(results.comparisons.len(), 15);
    for w in pairs {
        let c = results
            .comparisons
            .iter()
            .find(|c| c.a == w["a"] && c.b == w["b"] && c.observation == w["observation"])
            .unwrap_or_else(|| panic!("no comparison {w}"));
        let (g, p) = (c.result.delong.unwrap().p, w["p"].as_f64().unwrap());
        assert!((g - p).abs() <= 1e-6 * p.max(1e-12), "{w}: DeLong p {g}");
    }
}
