//! The `chexlab` binary end to end: help, inspect, config handling and clear errors on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn chexlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_lists_every_subcommand_and_global_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = chexlab(&["--help"], dir.path());
    assert!(o.status.success());
    let t = text(&o);
    for sub in [
        "synth",
        "label",
        "eval-labels",
        "shard",
        "train",
        "evaluate",
        "report",
        "run",
        "demo",
        "inspect",
        "bench-step",
    ] {
        assert!(t.contains(sub), "help lacks {sub}: {t}");
        let o = chexlab(&[sub, "--help"], dir.path());
        assert!(o.status.success(), "{sub} --help: {}", text(&o));
    }
    for flag in ["--log-level", "--quiet", "--threads"] {
        assert!(t.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn report_of_a_missing_run_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = chexlab(&["report", "--run", "x"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("x/config.resolved.toml"), "{}", text(&o));
    // The operating system's words once, not once per layer of the error.
    assert_eq!(
        text(&o).matches("No such file or directory").count(),
        1,
        "{}",
        text(&o)
    );
}

#[test]
fn run_writes_the_resolved_config_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.toml");
    let o = chexlab(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "run_dir=r",
            "--set",
            "optimizer.lr=0.01",
            // A world that cannot be written: the resolved config is written, then the first stage fails fast.
            "--set",
            "dataset.root=/dev/null/world",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("/dev/null/world"), "{}", text(&o));
    let resolved = std::fs::read_to_string(dir.path().join("r/config.resolved.toml"))
        .unwrap_or_else(|e| {
            panic!("{e}: {}", text(&o));
        });
    assert!(resolved.contains("lr = 0.01"), "{resolved}");
    // The resolved config is itself a valid config, and inspect recognises the run directory.
    let o = chexlab(&["inspect", "r"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("run-dir") && text(&o).contains("config hash"),
        "{}",
        text(&o)
    );

    let o = chexlab(
        &[
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--set",
            "optimizer.momentum=1",
        ],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("momentum"), "{}", text(&o));
}

#[test]
fn inspect_chexpert_dataset_counts_splits_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("CheXpert-v1.0-small");
    std::fs::create_dir_all(&root).unwrap();
    let header = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,\
Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
    std::fs::write(
        root.join("train.csv"),
        format!(
            "{header}\n\
CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n\
CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Female,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n\
CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,83,Frontal,AP,,,,1.0,,,-1.0,,,,,,1.0,\n\
CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Female,83,Lateral,,,,,1.0,,,-1.0,,,,,,1.0,\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("valid.csv"),
        format!("{header}\nCheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0\n"),
    )
    .unwrap();
    let o = chexlab(&["inspect", "--json", root.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "chexpert-dataset");
    let train = &v["splits"]["train"];
    assert_eq!(train["images"], 4);
    assert_eq!(train["studies"], 3);
    assert_eq!(train["patients"], 2);
    let lo = &train["labels"]["dataset"]["labels"]["Lung Opacity"];
    assert_eq!(lo["positive"], 3);
    assert_eq!(lo["blank"], 1);
    assert_eq!(
        train["labels"]["dataset"]["labels"]["Fracture"]["positive"],
        3
    );
    assert_eq!(v["splits"]["valid"]["images"], 1);

    // Human-readable form has the table.
    let o = chexlab(&["inspect", root.to_str().unwrap()], dir.path());
    assert!(
        text(&o).contains("Lung Opacity") && text(&o).contains("[train] images 4"),
        "{}",
        text(&o)
    );
}

#[test]
fn inspect_bad_inputs_fail_with_file_and_line_or_skip_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let o = chexlab(&["inspect", "missing.csv"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.csv"), "{}", text(&o));

    let header = chexlab::OBSERVATIONS
        .iter()
        .map(|o| o.name())
        .collect::<Vec<_>>()
        .join(",");
    let good = vec![""; 14].join(",");
    let mut bad = vec![""; 14];
    bad[2] = "yes";
    std::fs::write(
        dir.path().join("labels.csv"),
        format!(
            "study_id,{header}\n1,{good}\n2,{}\n3,{good},extra\n4,{good}\n",
            bad.join(",")
        ),
    )
    .unwrap();
    let o = chexlab(&["inspect", "labels.csv"], dir.path());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("labels.csv: line 3, column 'Cardiomegaly': invalid label value 'yes'"),
        "{}",
        text(&o)
    );
    let o = chexlab(
        &["inspect", "--on-bad-record", "skip", "--json", "labels.csv"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped_records"], 2);
    assert_eq!(v["splits"]["all"]["labels"]["labels"]["rows"], 2);

    // A headerless reports CSV is recognised as labeler input.
    std::fs::write(
        dir.path().join("reports.csv"),
        "\"No effusion, no edema.\"\nMild cardiomegaly.\n",
    )
    .unwrap();
    let o = chexlab(&["inspect", "--json", "reports.csv"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "reports-csv");
    assert_eq!(v["facts"]["reports"], "2");
}

#[test]
fn synth_label_and_eval_labels_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let o = chexlab(
        &[
            "-q",
            "synth",
            "--out",
            "w",
            "--studies",
            "300",
            "--seed",
            "3",
            "--image-size",
            "32",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = chexlab(&["inspect", "--json", "w"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "mimic-dataset");
    assert!(
        v["splits"]["train"]["labels"]["truth image"]["labels"]["Support Devices"]["positive"]
            .as_u64()
            .unwrap()
            > 0
    );

    // From the reports CSV and from the dataset directory: the same labels.
    let o = chexlab(
        &[
            "-q",
            "label",
            "--reports",
            "w/reports.csv",
            "--out",
            "a.csv",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = chexlab(
        &["-q", "label", "--reports", "w", "--out", "b.csv"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let a = std::fs::read_to_string(dir.path().join("a.csv")).unwrap();
    assert_eq!(
        a,
        std::fs::read_to_string(dir.path().join("b.csv")).unwrap()
    );
    assert!(
        a.starts_with("study_id,Reports,No Finding,"),
        "{}",
        &a[..80]
    );
    assert_eq!(a.lines().count(), 301);

    let run = |args: &[&str]| {
        let o = chexlab(args, dir.path());
        assert!(o.status.success(), "{}", text(&o));
    };
    // Scores `pred` against a world's report truth, through the metrics file `eval-labels --out` writes.
    let report_metrics = |pred: &str, world: &str| -> serde_json::Value {
        let (truth, out) = (
            format!("{world}/truth/report_labels.csv"),
            format!("{pred}.json"),
        );
        run(&[
            "eval-labels",
            "--pred",
            pred,
            "--truth",
            &truth,
            "--out",
            &out,
        ]);
        serde_json::from_slice(&std::fs::read(dir.path().join(out)).unwrap()).unwrap()
    };
    let m = report_metrics("a.csv", "w");
    assert_eq!(m["truth_kind"], "report");
    assert_eq!(m["matched_by"], "id");
    let realistic = m["weighted_f1"].as_f64().unwrap();
    // The same world in the textbook style: the rules read it almost perfectly, the realistic one less well.
    run(&[
        "-q",
        "synth",
        "--out",
        "t",
        "--studies",
        "300",
        "--seed",
        "3",
        "--image-size",
        "16",
        "--report-style",
        "textbook",
    ]);
    run(&["-q", "label", "--reports", "t", "--out", "t.csv"]);
    let textbook = report_metrics("t.csv", "t")["weighted_f1"]
        .as_f64()
        .unwrap();
    assert!(
        textbook > 0.9 && (0.6..textbook - 0.02).contains(&realistic),
        "textbook {textbook}, realistic {realistic}"
    );
    let o = chexlab(
        &[
            "eval-labels",
            "--pred",
            "a.csv",
            "--truth",
            "w/truth/image_labels.csv",
            "--uncertain",
            "ones",
        ],
        dir.path(),
    );
    assert!(
        o.status.success() && text(&o).contains("mean positive-class F1 (uncertain → ones)"),
        "{}",
        text(&o)
    );

    // A truth file with a different number of rows and no ids is refused.
    std::fs::write(
        dir.path().join("short.csv"),
        a.lines()
            .take(10)
            .map(|l| l.split_once(',').unwrap().1)
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let o = chexlab(
        &["eval-labels", "--pred", "a.csv", "--truth", "short.csv"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("matched by position"), "{}", text(&o));
}

#[test]
fn label_bad_input_rows_fail_or_skip() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.csv"),
        b"1,No effusion.\n2,\"Mild \xff edema.\"\n3,Cardiomegaly.\n",
    )
    .unwrap();
    let o = chexlab(
        &["label", "--reports", "r.csv", "--out", "o.csv"],
        dir.path(),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("r.csv: line 2") && text(&o).contains("invalid UTF-8"),
        "{}",
        text(&o)
    );
    assert!(
        !dir.path().join("o.csv").exists(),
        "a failed run must not leave an output"
    );
    let o = chexlab(
        &[
            "label",
            "--reports",
            "r.csv",
            "--out",
            "o.csv",
            "--on-bad-record",
            "skip",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("skipped 1 bad record"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("o.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
}

#[test]
fn shard_train_evaluate_from_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = chexlab(
        &[
            "synth",
            "--out",
            "world",
            "--studies",
            "150",
            "--image-size",
            "32",
            "--seed",
            "2",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        d.join("study.toml"),
        "seed = 1\nrun_dir = \"run\"\n[dataset]\nkind = \"synthetic\"\nroot = \"world\"\nimage_size = 32\n\
         [[sources]]\nname = \"truth\"\nkind = \"truth\"\n[[sources]]\nname = \"report\"\nkind = \"external\"\n\
         path = \"world/truth/report_labels.csv\"\n[model]\narch = \"small\"\ngrowth_rate = 4\n\
         block_config = [1]\ninit_features = 8\nimage_size = 32\nobservations = [\"Pleural Effusion\"]\n\
         [schedule]\nepochs = 1\nbatch_size = 8\n",
    )
    .unwrap();
    let o = chexlab(&["shard", "--config", "study.toml"], d);
    assert!(o.status.success(), "{}", text(&o));
    // Training before sharding the right size is a clear error: the model wants 64 px here.
    let o = chexlab(
        &[
            "train",
            "--config",
            "study.toml",
            "--set",
            "model.image_size=64",
        ],
        d,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("64x64"), "{}", text(&o));
    std::fs::remove_dir_all(d.join("run/train")).ok();
    let o = chexlab(&["train", "--config", "study.toml"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("truth:") && text(&o).contains("report:"),
        "{}",
        text(&o)
    );
    // Not a terminal (as in a batch log): progress as plain lines, the last one at the end.
    let log = String::from_utf8_lossy(&o.stderr);
    let last = log
        .lines()
        .rfind(|l| l.contains("truth loss "))
        .unwrap_or_else(|| panic!("no progress line:\n{log}"));
    let (pos, len) = last
        .split_once("] ")
        .and_then(|(_, r)| r.split_once(' '))
        .and_then(|(frac, _)| frac.split_once('/'))
        .unwrap_or_else(|| panic!("{last}"));
    assert!(last.contains("all-reduce") && pos == len, "{last}");
    assert!(!log.contains('\r'), "{log}");
    for f in ["best.ckpt", "metrics.csv", "metrics.jsonl", "summary.json"] {
        assert!(d.join("run/train/truth").join(f).is_file(), "{f}");
    }
    // A second fresh start would overwrite the run: refused; --resume auto finds it finished.
    let o = chexlab(&["train", "--config", "study.toml"], d);
    assert!(
        !o.status.success() && text(&o).contains("--resume auto"),
        "{}",
        text(&o)
    );
    let o = chexlab(&["train", "--config", "study.toml", "--resume", "auto"], d);
    assert!(o.status.success(), "{}", text(&o));
    // A resume refused for other settings leaves the run's config as it was, so the run still evaluates.
    let resolved = std::fs::read(d.join("run/config.resolved.toml")).unwrap();
    let o = chexlab(
        &[
            "train",
            "--config",
            "study.toml",
            "--resume",
            "auto",
            "--set",
            "optimizer.lr=0.5",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("optimizer.lr"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(d.join("run/config.resolved.toml")).unwrap(),
        resolved
    );
    let o = chexlab(&["evaluate", "--run", "run", "--split", "test"], d);
    assert!(o.status.success(), "{}", text(&o));
    let preds = std::fs::read_to_string(d.join("run/eval/truth/predictions_test.csv")).unwrap();
    assert!(
        preds.starts_with("image_id,p_pleural_effusion,ref_pleural_effusion\n"),
        "{preds}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/results.json")).unwrap())
            .unwrap();
    assert_eq!(results["sources"]["truth"]["split"], "test");
    let ci = &results["sources"]["report"]["auroc_ci"][0][1];
    assert!(ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap(), "{ci}");
    // The two sources' classifiers compared on the same test images.
    let c = &results["comparisons"][0];
    assert_eq!(
        (c["a"].as_str(), c["b"].as_str()),
        (Some("report"), Some("truth")),
        "{c}"
    );
    let p = c["delong"]["p"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p), "{c}");
}

#[test]
fn labeler_input_header_crlf_lines_empty_input_and_output_over_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let fails = |args: &[&str]| {
        let o = chexlab(args, dir);
        assert!(
            !o.status.success(),
            "chexlab {args:?} succeeded:\n{}",
            text(&o)
        );
        text(&o)
    };
    // A `Reports` header row is a header, not a report.
    write("header.csv", "Reports\n\"Heart is not enlarged.\"\n");
    let o = chexlab(&["label", "--reports", "header.csv", "--out", "h.csv"], dir);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("labelled 1 reports"), "{}", text(&o));
    // So is CheXbert's input header, after an id column.
    write(
        "chexbert.csv",
        "id,Report Impression\nCXR1,\"Heart is not enlarged.\"\n",
    );
    let o = chexlab(
        &["label", "--reports", "chexbert.csv", "--out", "b.csv"],
        dir,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("labelled 1 reports"), "{}", text(&o));
    // CRLF line ends: the bad row is on line 5.
    write("crlf.csv", "1,a\r\n2,\"b\r\nb\"\r\n3,c\r\n4,d,e\r\n");
    let err = fails(&["label", "--reports", "crlf.csv", "--out", "c.csv"]);
    assert!(err.contains("crlf.csv: line 5:"), "{err}");
    // Empty input and a header only: nothing to label is an error, not an empty success.
    write("empty.csv", "");
    write("only.csv", "Reports\n");
    for f in ["empty.csv", "only.csv"] {
        let err = fails(&["label", "--reports", f, "--out", "e.csv"]);
        assert!(err.contains("no reports"), "{err}");
    }
    // An output that is one of the inputs is refused before anything is written.
    let err = fails(&["label", "--reports", "header.csv", "--out", "./header.csv"]);
    assert!(err.contains("the output is also an input"), "{err}");
    let err = fails(&[
        "eval-labels",
        "--pred",
        "h.csv",
        "--truth",
        "h.csv",
        "--out",
        "h.csv",
    ]);
    assert!(err.contains("the output is also an input"), "{err}");
    assert!(
        std::fs::read_to_string(dir.join("header.csv"))
            .unwrap()
            .starts_with("Reports\n"),
        "the input is untouched"
    );
    assert!(
        std::fs::read_to_string(dir.join("h.csv"))
            .unwrap()
            .starts_with("Reports,")
    );
    // A stray quote that opens a field and never closes swallows the rest of the file: an error naming the line
    // where the field starts, and no output; a quoted multi-line report is fine.
    write(
        "stray.csv",
        "no effusion\n\"heart normal\nno edema\nlungs clear\n",
    );
    let err = fails(&["label", "--reports", "stray.csv", "--out", "s.csv"]);
    assert!(
        err.contains("stray.csv: line 2: a quoted field starts on this line and never ends"),
        "{err}"
    );
    assert!(!dir.join("s.csv").exists());
    write("multi.csv", "1,\"multi\nline report\"\n2,\"no effusion\"\n");
    let o = chexlab(&["label", "--reports", "multi.csv", "--out", "m.csv"], dir);
    assert!(
        o.status.success() && text(&o).contains("labelled 2 reports"),
        "{}",
        text(&o)
    );
    // A report over the size bound is a bad record naming its line: refused, or skipped and counted.
    write(
        "long.csv",
        &format!("1,no effusion\n2,{}\n3,no edema\n", "x ".repeat(600)),
    );
    let mut args = vec![
        "label",
        "--reports",
        "long.csv",
        "--out",
        "l.csv",
        "--max-report-bytes",
        "1000",
    ];
    let err = fails(&args);
    assert!(
        err.contains("long.csv: line 2: the report is 1200 bytes, over the limit of 1000"),
        "{err}"
    );
    assert!(!dir.join("l.csv").exists());
    args.extend(["--on-bad-record", "skip"]);
    let o = chexlab(&args, dir);
    assert!(
        o.status.success() && text(&o).contains("skipped 1 bad record(s)"),
        "{}",
        text(&o)
    );
    let out = std::fs::read_to_string(dir.join("l.csv")).unwrap();
    assert_eq!(out.lines().count(), 3, "header and the two reports: {out}");
}

#[test]
fn a_trained_vocabulary_is_the_same_file_in_every_process() {
    // Many words with equal counts: ties between merges everywhere, which a hash-ordered trainer breaks
    // differently from run to run.
    let tmp = tempfile::tempdir().unwrap();
    let words = [
        "effusion",
        "pneumothorax",
        "atelectasis",
        "consolidation",
        "edema",
        "cardiomegaly",
        "opacity",
        "nodule",
        "fracture",
        "pleural",
        "pulmonary",
        "bibasilar",
        "mediastinum",
        "hilar",
        "interstitial",
    ];
    let mut csv = String::new();
    for i in 0..120 {
        let a = words[i % words.len()];
        let b = words[(i * 7 + 3) % words.len()];
        csv.push_str(&format!("\"No {a}. Mild {b}, stable since {i}.\"\n"));
    }
    std::fs::write(tmp.path().join("reports.csv"), csv).unwrap();
    let train = |out: &str| {
        let o = chexlab(
            &[
                "tokenizer",
                "train",
                "--reports",
                "reports.csv",
                "--out",
                out,
                "--vocab-size",
                "150",
            ],
            tmp.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("on 120 reports"), "{}", text(&o));
        std::fs::read(tmp.path().join(out)).unwrap()
    };
    let first = train("a.json");
    for k in 0..3 {
        assert!(
            train(&format!("{k}.json")) == first,
            "run {k} learned another vocabulary"
        );
    }
}

#[test]
fn sources_without_a_shared_reference_are_refused_with_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = chexlab(
        &[
            "synth",
            "--out",
            "world",
            "--studies",
            "100",
            "--image-size",
            "32",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let config = |reference: &str| {
        format!(
            "seed = 1\nrun_dir = \"run\"\n[dataset]\nkind = \"synthetic\"\nroot = \"world\"\nimage_size = 32\n\
             [[sources]]\nname = \"report\"\nkind = \"external\"\npath = \"world/truth/report_labels.csv\"\n\
             [[sources]]\nname = \"image\"\nkind = \"external\"\npath = \"world/truth/image_labels.csv\"\n\
             [model]\narch = \"small\"\ngrowth_rate = 4\nblock_config = [1]\ninit_features = 8\nimage_size = 32\n\
             observations = [\"Pleural Effusion\"]\n[schedule]\nmax_steps = 2\nbatch_size = 8\n{reference}"
        )
    };
    std::fs::write(d.join("study.toml"), config("")).unwrap();
    let o = chexlab(&["shard", "--config", "study.toml"], d);
    assert!(o.status.success(), "{}", text(&o));
    // No truth in the shards and no reference: each would be scored against itself.
    let o = chexlab(&["train", "--config", "study.toml"], d);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("2 label sources (report, image) and no reference")
            && text(&o).contains("[evaluation] reference"),
        "{}",
        text(&o)
    );
    std::fs::write(
        d.join("study.toml"),
        config("[evaluation]\nreference = \"image\"\nbootstrap = 20\n"),
    )
    .unwrap();
    let o = chexlab(&["train", "--config", "study.toml"], d);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn shard_without_label_sources_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = chexlab(
        &[
            "-q",
            "synth",
            "--out",
            "w",
            "--studies",
            "12",
            "--image-size",
            "32",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = chexlab(&["-q", "shard", "--dataset", "w", "--out", "s"], dir.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("no label sources"), "{}", text(&o));
    assert!(
        !dir.path().join("s").exists(),
        "a refused shard run wrote files"
    );
}

#[test]
fn an_interrupted_synth_removes_its_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chexlab"))
        .args([
            "-q",
            "synth",
            "--out",
            "w",
            "--studies",
            "50000",
            "--image-size",
            "16",
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(dir.path().join("w"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Wait until its tables are being written (they stay temporary until the world is complete).
    let t = std::time::Instant::now();
    while temporaries().is_empty() {
        assert!(
            t.elapsed().as_secs() < 120,
            "synth wrote no temporary tables"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "synth ended before it was interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{}", text(&o));
    assert!(text(&o).contains("removed"), "{}", text(&o));
    assert_eq!(temporaries(), Vec::<String>::new());
    assert!(!dir.path().join("w/synth.json").exists());
}

#[test]
fn a_second_job_on_a_run_directory_is_refused_and_a_dead_job_s_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("study.toml"),
        "seed = 1\nrun_dir = \"run\"\n[dataset]\nkind = \"synthetic\"\nroot = \"world\"\nimage_size = 32\n\
         [[sources]]\nname = \"truth\"\nkind = \"truth\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("run")).unwrap();
    std::fs::write(d.join("run/config.resolved.toml"), "# the first job's\n").unwrap();
    // Another job holds the run (flock(1) takes the same advisory lock chexlab does; -o: it alone holds it, not
    // the command it waits for).
    let mut holder = Command::new("flock")
        .args(["-o", "run/.lock", "sleep", "60"])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let refused = loop {
        let o = chexlab(&["train", "--config", "study.toml"], d);
        if text(&o).contains("in use by another job") {
            break o;
        }
        assert!(t.elapsed().as_secs() < 30, "never refused: {}", text(&o));
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("run: the run is in use"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("run/config.resolved.toml")).unwrap(),
        "# the first job's\n",
        "a refused job changed the run"
    );
    // The holder dies without a word: its lock goes with it, and the next job gets past the lock (to fail later,
    // for want of shards, which is not the lock's business).
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = chexlab(&["train", "--config", "study.toml"], d);
    assert!(!text(&o).contains("in use by another job"), "{}", text(&o));
    assert!(text(&o).contains("shards"), "{}", text(&o));
    let lock = std::fs::read_to_string(d.join("run/.lock")).unwrap();
    assert!(lock.contains("pid "), "{lock}");
}
