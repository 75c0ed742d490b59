//! Every kind of bad input and fault we know of, as a user meets it on the command line: what is wrong, the
//! command, the exit code and the words the error must hold (the file, line, key, shard it concerns and what to
//! do). One table, run whole; every failing case is reported, not only the first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::chexlab as run;

/// A world, its shards and a config that shards and trains it, made once for all cases (read-only to them).
struct Base {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

const CONFIG: &str = "seed = 1\nrun_dir = \"run\"\n[dataset]\nkind = \"synthetic\"\nroot = \"WORLD\"\n\
    image_size = 32\n[[sources]]\nname = \"truth\"\nkind = \"truth\"\n[model]\narch = \"small\"\ngrowth_rate = 4\n\
    block_config = [1]\ninit_features = 8\nimage_size = 32\nobservations = [\"Pleural Effusion\"]\n\
    [schedule]\nepochs = 1\nbatch_size = 8\n";

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (code, text) = run(
            &[
                "-q",
                "synth",
                "--out",
                "world",
                "--studies",
                "40",
                "--image-size",
                "32",
            ],
            &root,
        );
        assert_eq!(code, Some(0), "{text}");
        // Absolute paths: the cases re-run this command from their own directories (same spec, same hash).
        let world = root.join("world").display().to_string();
        let labels = format!("truth={world}/truth/image_labels.csv");
        let (code, text) = run(
            &[
                "-q",
                "shard",
                "--dataset",
                &world,
                "--labels",
                &labels,
                "--image-size",
                "32",
                "--out",
                "shards",
            ],
            &root,
        );
        assert_eq!(code, Some(0), "{text}");
        Base { _dir: dir, root }
    })
}

/// A case's working directory: a copy of the base's shards (cases may damage it) and a config over the base's
/// world (shared: no case writes to it).
fn case_dir(name: &str) -> PathBuf {
    let b = base();
    let d = b.root.join("cases").join(name);
    std::fs::create_dir_all(&d).unwrap();
    copy_dir(&b.root.join("shards"), &d.join("shards"));
    std::fs::write(
        d.join("study.toml"),
        CONFIG.replace("WORLD", &b.root.join("world").display().to_string()),
    )
    .unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn write(d: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(d.join(name), bytes).unwrap();
}

/// The labeled CSV header: an id column and the 14 observations.
fn label_header(id: &str) -> String {
    let obs: Vec<&str> = chexlab::OBSERVATIONS.iter().map(|o| o.name()).collect();
    format!("{id},{}", obs.join(","))
}

fn first_shard(d: &Path) -> PathBuf {
    let mut names: Vec<PathBuf> = std::fs::read_dir(d.join("shards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    names.sort();
    names.remove(0)
}

fn xor(path: &Path, at: impl Fn(usize) -> usize, n: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at(b.len());
    for x in &mut b[at..at + n] {
        *x ^= 0x5a;
    }
    std::fs::write(path, b).unwrap();
}

struct Case {
    /// What is wrong.
    what: &'static str,
    /// Makes the inputs in the case directory.
    prep: fn(&Path),
    /// The command line (`BASE` stands for the shared directory).
    args: &'static [&'static str],
    /// Expected exit code.
    code: i32,
    /// Words the output must hold.
    says: &'static [&'static str],
}

fn none(_: &Path) {}

fn cases() -> Vec<Case> {
    vec![
        // --- labeler input ---
        Case {
            what: "reports file missing",
            prep: none,
            args: &["label", "--reports", "nope.csv", "--out", "o.csv"],
            code: 1,
            says: &["nope.csv", "No such file"],
        },
        Case {
            what: "a report with invalid UTF-8",
            prep: |d| write(d, "r.csv", b"1,No effusion.\n2,\"Mild \xff edema.\"\n"),
            args: &["label", "--reports", "r.csv", "--out", "o.csv"],
            code: 1,
            says: &["r.csv: line 2", "invalid UTF-8"],
        },
        Case {
            what: "an empty reports file",
            prep: |d| write(d, "r.csv", b""),
            args: &["label", "--reports", "r.csv", "--out", "o.csv"],
            code: 1,
            says: &["r.csv", "no reports"],
        },
        Case {
            what: "a reports file of a header only",
            prep: |d| write(d, "r.csv", b"Reports\n"),
            args: &["label", "--reports", "r.csv", "--out", "o.csv"],
            code: 1,
            says: &["r.csv", "no reports"],
        },
        Case {
            what: "every report malformed and skipped",
            prep: |d| write(d, "r.csv", b"1,\"a \xff\"\n2,\"b \xfe\"\n"),
            args: &[
                "label",
                "--reports",
                "r.csv",
                "--out",
                "o.csv",
                "--on-bad-record",
                "skip",
            ],
            code: 1,
            says: &["all 2 row(s) were malformed and skipped"],
        },
        Case {
            what: "a report over the size bound",
            prep: |d| write(d, "r.csv", format!("1,ok\n2,\"{}\"\n", "x".repeat(5000))),
            args: &[
                "label",
                "--reports",
                "r.csv",
                "--out",
                "o.csv",
                "--max-report-bytes",
                "1000",
            ],
            code: 1,
            says: &["r.csv: line 2", "1000"],
        },
        Case {
            what: "a quote that swallows the rest of the file",
            prep: |d| write(d, "r.csv", b"1,fine\n2,\"never closed\n3,more\n"),
            args: &["label", "--reports", "r.csv", "--out", "o.csv"],
            code: 1,
            says: &["r.csv: line 2", "quote"],
        },
        Case {
            what: "the output is the input",
            prep: |d| write(d, "r.csv", b"1,No effusion.\n"),
            args: &["label", "--reports", "r.csv", "--out", "./r.csv"],
            code: 1,
            says: &["the output is also an input"],
        },
        // --- label files ---
        Case {
            what: "a label value that is not a label",
            prep: |d| {
                let mut cells = vec![""; 14];
                cells[2] = "2";
                write(
                    d,
                    "l.csv",
                    format!("{}\n1,{}\n", label_header("study_id"), cells.join(",")),
                )
            },
            args: &["inspect", "l.csv"],
            code: 1,
            says: &["l.csv: line 2, column 'Cardiomegaly': invalid label value '2'"],
        },
        Case {
            what: "a truth file without the observation columns",
            prep: |d| {
                write(
                    d,
                    "p.csv",
                    format!(
                        "{}\n1,{}\n",
                        label_header("study_id"),
                        vec![""; 14].join(",")
                    ),
                );
                write(d, "t.csv", b"study_id,Foo\n1,1\n")
            },
            args: &["eval-labels", "--pred", "p.csv", "--truth", "t.csv"],
            code: 1,
            says: &["t.csv"],
        },
        Case {
            what: "an id given twice in the labels scored",
            prep: |d| {
                let row = vec!["1"; 14].join(",");
                write(
                    d,
                    "p.csv",
                    format!("{}\n7,{row}\n7,{row}\n", label_header("study_id")),
                );
                write(
                    d,
                    "t.csv",
                    format!("{}\n7,{row}\n", label_header("study_id")),
                )
            },
            args: &["eval-labels", "--pred", "p.csv", "--truth", "t.csv"],
            code: 1,
            says: &["p.csv: line 3", "id '7' again (first on line 2)"],
        },
        // --- synth ---
        Case {
            what: "a world of no studies",
            prep: none,
            args: &["synth", "--out", "w", "--studies", "0"],
            code: 1,
            says: &["at least one study"],
        },
        Case {
            what: "a synthetic image size out of range",
            prep: none,
            args: &["synth", "--out", "w", "--studies", "5", "--image-size", "8"],
            code: 1,
            says: &["16..=512"],
        },
        Case {
            what: "a world no disk holds",
            prep: none,
            args: &["synth", "--out", "w", "--studies", "18446744073709551615"],
            code: 1,
            says: &["needs about", "free"],
        },
        Case {
            what: "a world into a directory of other files",
            prep: |d| {
                std::fs::create_dir_all(d.join("w")).unwrap();
                write(d, "w/thesis.tex", b"mine")
            },
            args: &["synth", "--out", "w", "--studies", "5"],
            code: 1,
            says: &["not a synthetic world", "thesis.tex"],
        },
        // --- shard ---
        Case {
            what: "shard without label sources",
            prep: none,
            args: &["shard", "--dataset", "BASE/world", "--out", "s2"],
            code: 1,
            says: &["no label sources"],
        },
        Case {
            what: "a dataset directory of neither layout",
            prep: |d| std::fs::create_dir_all(d.join("empty")).unwrap(),
            args: &[
                "shard",
                "--dataset",
                "empty",
                "--labels",
                "a=BASE/world/truth/image_labels.csv",
                "--out",
                "s2",
            ],
            code: 1,
            says: &["empty", "neither a MIMIC-CXR-JPG dataset"],
        },
        Case {
            what: "a label source name with capitals",
            prep: none,
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "Truth=BASE/world/truth/image_labels.csv",
                "--out",
                "s2",
            ],
            code: 1,
            says: &["'Truth'", "[a-z0-9_]+"],
        },
        Case {
            what: "a label source argument without a name",
            prep: none,
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "labels.csv",
                "--out",
                "s2",
            ],
            code: 2,
            says: &["--labels", "NAME=FILE"],
        },
        Case {
            what: "a label file none of whose ids is in the dataset",
            prep: |d| {
                write(
                    d,
                    "l.csv",
                    format!(
                        "{}\n99999999,{}\n",
                        label_header("study_id"),
                        vec!["1"; 14].join(",")
                    ),
                )
            },
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "x=l.csv",
                "--out",
                "s2",
            ],
            code: 1,
            says: &["l.csv", "99999999"],
        },
        Case {
            what: "a holdout fraction of 1.5",
            prep: none,
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "t=BASE/world/truth/image_labels.csv",
                "--holdout",
                "1.5",
                "--out",
                "s2",
            ],
            code: 1,
            says: &["holdout fraction 1.5"],
        },
        Case {
            what: "a verifying re-run over a shard altered in place",
            prep: |d| xor(&first_shard(d), |n| n / 2, 16),
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "truth=BASE/world/truth/image_labels.csv",
                "--image-size",
                "32",
                "--out",
                "shards",
                "--verify",
            ],
            code: 1,
            says: &[
                "-00000.parquet",
                "altered since it was written",
                "SHA-256",
                "delete it",
            ],
        },
        Case {
            what: "a re-run over a shard whose footer was altered",
            prep: |d| xor(&first_shard(d), |n| n - 20, 1),
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "truth=BASE/world/truth/image_labels.csv",
                "--image-size",
                "32",
                "--out",
                "shards",
            ],
            code: 1,
            says: &[
                "-00000.parquet",
                "checksum mismatch in the footer",
                "delete it",
            ],
        },
        Case {
            what: "a re-run over a shard cut short",
            prep: |d| {
                let p = first_shard(d);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 1]).unwrap()
            },
            args: &[
                "shard",
                "--dataset",
                "BASE/world",
                "--labels",
                "truth=BASE/world/truth/image_labels.csv",
                "--image-size",
                "32",
                "--out",
                "shards",
            ],
            code: 1,
            says: &["-00000.parquet", "altered since it was written", "bytes"],
        },
        // --- shard directories ---
        Case {
            what: "a shard directory without its index",
            prep: |d| std::fs::remove_file(d.join("shards/index.json")).unwrap(),
            args: &["inspect", "shards"],
            code: 1,
            says: &["index.json"],
        },
        Case {
            what: "a truncated shard",
            prep: |d| {
                let p = first_shard(d);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 100]).unwrap()
            },
            args: &["inspect", "shards"],
            code: 1,
            says: &["-00000.parquet", "truncated"],
        },
        Case {
            what: "a shard altered in place, verified",
            prep: |d| xor(&first_shard(d), |n| n / 2, 16),
            args: &["inspect", "--verify", "shards"],
            code: 1,
            says: &["-00000.parquet", "SHA-256"],
        },
        Case {
            what: "a shard's footer altered",
            prep: |d| xor(&first_shard(d), |n| n - 20, 1),
            args: &["inspect", "shards"],
            code: 1,
            says: &["-00000.parquet", "checksum mismatch in the footer"],
        },
        Case {
            what: "a shard's page checksums altered",
            prep: |d| {
                let shard = first_shard(d);
                let name = shard.file_name().unwrap().to_string_lossy().into_owned();
                xor(&d.join(format!("shards/.{name}.sums")), |_| 20, 1)
            },
            args: &["inspect", "shards"],
            code: 1,
            says: &[".sums", "checksum file itself is corrupt"],
        },
        Case {
            what: "a shard's page checksums missing",
            prep: |d| {
                let shard = first_shard(d);
                let name = shard.file_name().unwrap().to_string_lossy().into_owned();
                std::fs::remove_file(d.join(format!("shards/.{name}.sums"))).unwrap()
            },
            args: &["inspect", "shards"],
            code: 1,
            says: &[".sums", "re-run chexlab shard"],
        },
        Case {
            what: "an index that is not JSON",
            prep: |d| write(d, "shards/index.json", b"{\"schema_version\": 2,"),
            args: &["inspect", "shards"],
            code: 1,
            says: &["index.json", "not the expected JSON"],
        },
        Case {
            what: "an index of an older layout",
            prep: |d| {
                let p = d.join("shards/index.json");
                let t = std::fs::read_to_string(&p).unwrap();
                std::fs::write(
                    &p,
                    t.replace("\"schema_version\": 2", "\"schema_version\": 1"),
                )
                .unwrap()
            },
            args: &["inspect", "shards"],
            code: 1,
            says: &["schema version 1", "re-run chexlab shard"],
        },
        Case {
            what: "a directory of shards that are not Parquet",
            prep: |d| {
                std::fs::create_dir_all(d.join("pq")).unwrap();
                write(d, "pq/a.parquet", b"not parquet")
            },
            args: &["inspect", "pq"],
            code: 1,
            says: &["pq", "index.json"],
        },
        // --- configs ---
        Case {
            what: "a config file missing",
            prep: none,
            args: &["train", "--config", "nope.toml"],
            code: 1,
            says: &["nope.toml", "No such file"],
        },
        Case {
            what: "an unknown config key",
            prep: |d| {
                write(
                    d,
                    "c.toml",
                    format!(
                        "{}\nbogus = 1\n",
                        std::fs::read_to_string(d.join("study.toml")).unwrap()
                    ),
                )
            },
            args: &["train", "--config", "c.toml"],
            code: 1,
            says: &["c.toml", "bogus"],
        },
        Case {
            what: "a config value of the wrong type",
            prep: |d| {
                write(
                    d,
                    "c.toml",
                    std::fs::read_to_string(d.join("study.toml"))
                        .unwrap()
                        .replace("batch_size = 8", "batch_size = \"eight\""),
                )
            },
            args: &["train", "--config", "c.toml"],
            code: 1,
            says: &["c.toml", "schedule.batch_size", "line"],
        },
        Case {
            what: "an override of the wrong type",
            prep: none,
            args: &[
                "train",
                "--config",
                "study.toml",
                "--set",
                "schedule.batch_size=eight",
            ],
            code: 1,
            says: &["--set", "schedule.batch_size"],
        },
        Case {
            what: "an override without a value",
            prep: none,
            args: &["train", "--config", "study.toml", "--set", "noequals"],
            code: 1,
            says: &["KEY=VALUE"],
        },
        Case {
            what: "zero epochs",
            prep: none,
            args: &[
                "train",
                "--config",
                "study.toml",
                "--set",
                "schedule.epochs=0",
            ],
            code: 1,
            says: &["schedule.epochs must be at least 1"],
        },
        Case {
            what: "zero steps",
            prep: none,
            args: &[
                "train",
                "--config",
                "study.toml",
                "--set",
                "schedule.max_steps=0",
            ],
            code: 1,
            says: &["schedule.max_steps must be at least 1"],
        },
        Case {
            what: "a learning rate of zero",
            prep: none,
            args: &["train", "--config", "study.toml", "--set", "optimizer.lr=0"],
            code: 1,
            says: &["optimizer.lr"],
        },
        Case {
            what: "an image size bound out of range",
            prep: none,
            args: &[
                "shard",
                "--config",
                "study.toml",
                "--set",
                "shard.max_image_side=10",
            ],
            code: 1,
            says: &["shard.max_image_side 10"],
        },
        Case {
            what: "a source name with a space",
            prep: none,
            args: &[
                "train",
                "--config",
                "study.toml",
                "--set",
                "sources.0.name=Bad Name",
            ],
            code: 1,
            says: &["must match [a-z0-9_]+"],
        },
        Case {
            what: "an observation the model does not know",
            prep: none,
            args: &[
                "train",
                "--config",
                "study.toml",
                "--set",
                "model.observations=[\"Lung\"]",
            ],
            code: 1,
            says: &["unknown observation 'Lung'"],
        },
        // --- runs ---
        Case {
            what: "a report of a run that does not exist",
            prep: none,
            args: &["report", "--run", "x"],
            code: 1,
            says: &["x/config.resolved.toml"],
        },
        Case {
            what: "training before sharding",
            prep: none,
            args: &["train", "--config", "study.toml"],
            code: 1,
            says: &["run/shards/index.json", "incomplete"],
        },
        Case {
            what: "training on a shard altered in place after it was checked",
            prep: |d| {
                copy_dir(&d.join("shards"), &d.join("run/shards"));
                xor(&d.join("run/shards/train-00000.parquet"), |n| n / 3, 16)
            },
            args: &["train", "--config", "study.toml"],
            code: 1,
            says: &[
                "run/shards/train-00000.parquet",
                "checksum mismatch in row group 0, column 'image'",
            ],
        },
        Case {
            what: "scoring predictions against a truth file that is missing",
            prep: |d| {
                write(
                    d,
                    "p.csv",
                    format!(
                        "{}\n1,{}\n",
                        label_header("Study"),
                        vec!["0.5"; 14].join(",")
                    ),
                )
            },
            args: &[
                "evaluate",
                "--predictions",
                "m=p.csv",
                "--truth",
                "nope.csv",
                "--out",
                "r.json",
            ],
            code: 1,
            says: &["nope.csv"],
        },
        Case {
            what: "an unknown subcommand",
            prep: none,
            args: &["trian"],
            code: 2,
            says: &["trian"],
        },
    ]
}

#[test]
fn every_bad_input_kind_gets_its_error_and_exit_code() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} kinds", cases.len());
    let base = base().root.display().to_string();
    let mut failures = Vec::new();
    for (k, c) in cases.iter().enumerate() {
        let d = case_dir(&format!("{k:02}"));
        (c.prep)(&d);
        let args: Vec<String> = c.args.iter().map(|a| a.replace("BASE", &base)).collect();
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, text) = run(&args, &d);
        let missing: Vec<&&str> = c.says.iter().filter(|s| !text.contains(**s)).collect();
        // The table of errors as users see them: `cargo test --test errors -- --nocapture`.
        let shown: Vec<&str> = text.lines().filter(|l| l.contains("error")).collect();
        eprintln!("[{k}] {}: {}", c.what, shown.join(" / "));
        if code != Some(c.code) || !missing.is_empty() || text.contains("panicked") {
            failures.push(format!(
                "[{k}] {}: exit {code:?} (expected {}), missing {missing:?}\n  chexlab {}\n  {}",
                c.what,
                c.code,
                args.join(" "),
                text.trim().replace('\n', "\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
