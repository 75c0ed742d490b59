//! `chexlab demo` / `chexlab run` end to end on a reduced demo: every stage runs, every artifact exists and
//! parses, a re-run skips what is up to date, `--from` redoes the tail, and a changed setting redoes what it feeds.

mod common;
use common::chexlab_ok;

const REDUCED: [&str; 20] = [
    "--set",
    "dataset.studies=240",
    "--set",
    "dataset.image_size=32",
    "--set",
    "model.image_size=32",
    "--set",
    "schedule.epochs=1",
    "--set",
    "bert.hidden=32",
    "--set",
    "bert.intermediate=64",
    "--set",
    "bert.layers=1",
    "--set",
    "bert.epochs=1",
    "--set",
    "bert.finetune_epochs=1",
    "--set",
    "evaluation.bootstrap=50",
];

#[test]
fn reduced_demo_writes_every_artifact_and_reruns_only_what_is_stale() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut args = vec!["demo", "--out", "d"];
    args.extend(REDUCED);
    let out = chexlab_ok(&args, dir);
    assert!(out.contains("report: d/report.md"), "{out}");
    assert!(
        out.contains("**In short.** Ranked by mean test AUROC"),
        "the result in words is printed: {out}"
    );
    assert!(
        out.contains(
            "| observation | chexbert | chexpert | truth | truth_m25 | truth_m50 | visualchexbert |"
        ),
        "{out}"
    );
    let run = dir.join("d");
    for f in [
        "config.resolved.toml",
        "world/synth.json",
        "labels/chexpert.csv",
        "labels/chexbert.csv",
        "labels/visualchexbert.csv",
        "labelers/chexbert/labeler.json",
        "labelers/visualchexbert/labeler.json",
        "teacher/eval/chexpert/predictions_train.csv",
        "shards/index.json",
        "train/truth/best.ckpt",
        "train/truth.r2/best.ckpt",
        "labels/truth_m50.csv",
        "eval/visualchexbert/predictions_test.csv",
        "report.md",
        "report.html",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(f)).unwrap()).unwrap()
    };
    let results = json("results.json");
    // Six sources, two replicates each; the truth and its two corrupted copies trace the dose–response.
    assert_eq!(results["sources"].as_object().unwrap().len(), 6);
    assert_eq!(
        results["replicates"]["chexpert"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        results["comparisons"].as_array().unwrap().len(),
        15 * 5,
        "15 pairs × 5 observations"
    );
    let points = results["dose_response"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 6, "every source has a label F1");
    let agreement = json("labels/metrics.json");
    assert!(
        agreement["chexpert"]["report_weighted_f1"]
            .as_f64()
            .unwrap()
            > 0.5,
        "{agreement}"
    );
    for stage in [
        "synth",
        "label",
        "eval-labels",
        "shard",
        "train",
        "evaluate",
        "report",
    ] {
        let marker = json(&format!("stages/{stage}.json"));
        assert_eq!(
            marker["inputs_sha256"].as_str().map(str::len),
            Some(64),
            "{stage}: {marker}"
        );
    }
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("**In short.** Ranked by mean test AUROC"),
        "{md}"
    );
    assert!(md.contains("AUROC per 0.1 label F1"), "{md}");
    for section in [
        "## Configuration",
        "## Test AUROC per replicate",
        "## Dose–response",
        "## Labelers against the truth",
        "## Test AUROC",
        "## Overall effect per pair of label sources",
        "## Paired differences",
        "after Holm's correction",
        "## ROC curves",
    ] {
        assert!(md.contains(section), "report.md lacks {section}");
    }
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("<table>") && html.starts_with("<!DOCTYPE html>"));
    assert!(
        html.contains("<code>truth</code>") && !html.contains("`truth`"),
        "code spans are rendered in the HTML"
    );
    if chexlab::eval::plots::font().is_some() {
        assert!(html.contains("<svg"), "plots are inline in the HTML");
        let png = image::open(run.join("plots/roc_edema.png")).unwrap();
        assert_eq!(png.width(), 800);
    }

    // Nothing changed: every stage is up to date.
    let skipped = |out: &str| {
        out.lines()
            .filter(|l| l.ends_with("up to date") && !l.contains("INFO"))
            .count()
    };
    let again = chexlab_ok(&args, dir);
    assert_eq!(skipped(&again), 7, "{again}");
    assert!(
        again.contains("| **mean** |") && again.contains("**In short.**"),
        "the headline is printed again: {again}"
    );
    // The same headline, whether the report was just written or was up to date.
    let headline =
        |o: &str| o[o.find("**In short.**").unwrap()..o.find("report: ").unwrap()].to_string();
    assert_eq!(headline(&again), headline(&out));

    // A changed evaluation setting redoes evaluate and report only.
    let mut changed = args.clone();
    changed.extend(["--set", "evaluation.bootstrap=40"]);
    let out = chexlab_ok(&changed, dir);
    assert_eq!(skipped(&out), 5, "{out}");
    assert_eq!(json("results.json")["bootstrap"], 40);

    // `run --from report` on the run's own resolved config redoes the report only.
    let out = chexlab_ok(
        &[
            "run",
            "--config",
            "d/config.resolved.toml",
            "--from",
            "report",
        ],
        dir,
    );
    assert_eq!(skipped(&out), 6, "{out}");
    assert!(out.contains("report: d/report.md"), "{out}");
}

#[test]
fn a_preempted_teacher_stops_the_pipeline_for_requeue() {
    // VisualCheXbert's teacher trains in the label stage. Stopped there (SIGUSR2, Slurm's preemption warning), the
    // pipeline must exit for requeue with the label stage unfinished — not evaluate a half-trained teacher and
    // train VisualCheXbert on it.
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["--quiet", "demo", "--out", "d"];
    args.extend(REDUCED);
    args.extend([
        "--set",
        "schedule.max_steps=1000000",
        "--set",
        "schedule.checkpoint_every=5",
    ]);
    let mut job = std::process::Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args(&args)
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let run = tmp.path().join("d");
    let ckpts = run.join("teacher/train/chexpert/checkpoints");
    let t = std::time::Instant::now();
    while chexlab::train::checkpoint::list(&ckpts).is_empty() {
        assert!(
            job.try_wait().unwrap().is_none(),
            "the demo ended before the teacher's first checkpoint"
        );
        assert!(
            t.elapsed().as_secs() < 600,
            "no teacher checkpoint after 600 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::process::Command::new("kill")
        .args(["-USR2", &job.id().to_string()])
        .status()
        .unwrap();
    let status = job.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(chexlab::train::EXIT_PREEMPTED),
        "{status:?}"
    );
    assert!(
        !run.join("stages/label.json").exists(),
        "label stage marked done"
    );
    assert!(!run.join("labels/visualchexbert.csv").exists());
    assert!(
        !run.join("teacher/eval").exists(),
        "a stopped teacher was evaluated"
    );
}

#[test]
fn corrupted_copies_of_the_truth_trace_a_dose_response_the_report_fits() {
    // The image truth, two copies of it corrupted at rising rates, and the rule labeler, on a small world.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let toml = r#"seed = 3
run_dir = "d"
[dataset]
kind = "synthetic"
root = "d/world"
studies = 240
image_size = 32
[[sources]]
name = "chexpert"
kind = "labeler"
labeler = "chexpert"
[[sources]]
name = "truth"
kind = "truth"
[[sources]]
name = "truth_low"
kind = "corrupted"
base = "truth"
rates = { missed = 0.3, false_positive = 0.03 }
[[sources]]
name = "truth_high"
kind = "corrupted"
base = "truth"
rates = { missed = 0.6, uncertain = 0.1, false_positive = 0.1 }
[model]
arch = "small"
growth_rate = 4
block_config = [1, 1]
init_features = 8
image_size = 32
observations = ["Cardiomegaly", "Edema", "Pleural Effusion"]
[schedule]
epochs = 1
batch_size = 16
[evaluation]
bootstrap = 100
"#;
    std::fs::write(dir.join("dose.toml"), toml).unwrap();
    chexlab_ok(&["--quiet", "run", "--config", "dose.toml"], dir);
    let run = dir.join("d");
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(f)).unwrap()).unwrap()
    };
    // Label quality falls with the rates; the truth agrees with itself.
    let agreement = json("labels/metrics.json");
    let f1 = |s: &str| agreement[s]["image_mean_positive_f1"].as_f64().unwrap();
    assert!((f1("truth") - 1.0).abs() < 1e-9, "{agreement}");
    assert!(
        1.0 > f1("truth_low") && f1("truth_low") > f1("truth_high"),
        "{agreement}"
    );
    let d = &json("results.json")["dose_response"];
    let points = d["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{d}");
    let on_curve: Vec<&str> = points
        .iter()
        .filter(|p| p["on_curve"] == true)
        .map(|p| p["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        on_curve,
        ["truth_high", "truth_low", "truth"],
        "sorted by label F1: {d}"
    );
    let slope = d["slope"].as_f64().unwrap();
    let ci = d["slope_ci"].as_array().unwrap();
    assert!(
        ci[0].as_f64().unwrap() <= slope && slope <= ci[1].as_f64().unwrap(),
        "{d}"
    );
    // One line per observation too, each source placed by its F1 on that observation.
    let per_obs = d["per_observation"].as_array().unwrap();
    assert_eq!(per_obs.len(), 3, "{d}");
    assert!(
        agreement["truth_high"]["image_positive_f1"]["Edema"]
            .as_f64()
            .unwrap()
            < 1.0
    );
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("## Dose–response: classifier AUROC against label quality"),
        "{md}"
    );
    assert!(
        md.contains("| observation | AUROC per 0.1 label F1 |"),
        "{md}"
    );
    assert!(md.contains("AUROC per 0.1 label F1"), "{md}");
    assert!(md.contains("| `chexpert` |"), "{md}");
    if chexlab::eval::plots::font().is_some() {
        assert!(run.join("plots/dose_response.svg").is_file());
    }

    // Two replicates, then one again: the dropped replicates' scores leave the results with them.
    let replicates = |n: u32| -> usize {
        let set = format!("study.replicates={n}");
        chexlab_ok(
            &["--quiet", "run", "--config", "dose.toml", "--set", &set],
            dir,
        );
        json("results.json")
            .get("replicates")
            .and_then(|r| r.as_object().map(|o| o.len()))
            .unwrap_or(0)
    };
    assert_eq!(replicates(2), 4);
    assert_eq!(replicates(1), 0);
    assert!(!run.join("eval/truth.r2").exists());
}
