//! What each fuzz target does with its input, shared by the libFuzzer targets (`fuzz/fuzz_targets/`) and the
//! stable test that replays the corpora (`tests/fuzz_replay.rs`). Every function takes any bytes and must return:
//! an error is a fine outcome, a panic, a hang or an invariant broken is a finding.

#![allow(dead_code)] // each fuzz target uses one of these

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chexlab::data::{OnBadRecord, SectionChoice};

/// The targets, by name (the corpus directory of each is `fuzz/corpus/<name>`).
pub const TARGETS: [&str; 9] = [
    "labeler_input",
    "sections",
    "rule_labeler",
    "rule_labeler_scaling",
    "tables",
    "config",
    "shard_reader",
    "checkpoint",
    "tokenizer",
];

/// Runs target `name` on `data` (`timed`: also check time bounds, which only the fuzzing campaign does).
pub fn run(name: &str, data: &[u8], timed: bool) {
    // libFuzzer's panic hook aborts on every panic, even one chexlab catches and turns into an error (the shard
    // reader does, around the Parquet layer): back to the default hook, so that only a panic that escapes
    // chexlab ends the campaign (the target's own wrapper aborts on those).
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| drop(std::panic::take_hook()));
    match name {
        "labeler_input" => labeler_input(data),
        "sections" => sections(data),
        "rule_labeler" => rule_labeler(data),
        "rule_labeler_scaling" => rule_labeler_scaling(data, timed),
        "tables" => tables(data),
        "config" => config(data),
        "shard_reader" => shard_reader(data),
        "checkpoint" => checkpoint(data),
        "tokenizer" => tokenizer(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// A scratch directory of this process, reused by every input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("scratch directory"))
        .path()
}

fn file(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("scratch file");
    p
}

/// The labeler input reader, both policies, a small size bound: every record it yields is a report it read.
pub fn labeler_input(data: &[u8]) {
    let p = file("reports.csv", data);
    for policy in [OnBadRecord::Fail, OnBadRecord::Skip] {
        let Ok(stream) = chexlab::labelers::format::read_reports_limited(&p, policy, 512) else {
            continue;
        };
        for r in stream {
            match r {
                Ok(r) => assert!(r.text.len() <= 512, "a report over the bound was yielded"),
                // Under either policy: skip passes over bad records, not a file whose structure is broken (a
                // quote that never closes).
                Err(_) => break,
            }
        }
    }
}

/// Section extraction: any text, every choice; what it extracts comes from the report.
pub fn sections(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for choice in [
        SectionChoice::Impression,
        SectionChoice::Findings,
        SectionChoice::All,
    ] {
        let _ = chexlab::data::report::extract(&text, choice);
    }
    let _ = chexlab::data::report::sections(&text);
    let _ = chexlab::data::report::last_paragraph(&text);
}

fn labeler() -> &'static chexlab::labelers::rules::RuleLabeler {
    static L: OnceLock<chexlab::labelers::rules::RuleLabeler> = OnceLock::new();
    L.get_or_init(Default::default)
}

/// The rule labeler on any text: labels come out, mentions lie inside the text.
pub fn rule_labeler(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = labeler().label(&text);
    for m in labeler().mentions(&text) {
        let _ = format!("{m:?}");
    }
}

/// The rule labeler's time on a text and on that text repeated 16 times: linear time means about 16 times as
/// long; more than 48 times (plus a millisecond of slack) is a super-linear construction.
pub fn rule_labeler_scaling(data: &[u8], timed: bool) {
    let unit = String::from_utf8_lossy(&data[..data.len().min(2048)]).into_owned();
    if unit.is_empty() {
        return;
    }
    let long = unit.repeat(16);
    // Best of `n`: one slow run is the machine (another process, a page fault), not the labeler.
    let time = |t: &str, n: usize| {
        (0..n)
            .map(|_| {
                let start = std::time::Instant::now();
                std::hint::black_box(labeler().label(t));
                start.elapsed()
            })
            .min()
            .expect("runs")
    };
    if !timed {
        time(&long, 1);
        return;
    }
    let slow = |n| {
        let (short, long_t) = (time(&unit, n), time(&long, n));
        (long_t > short * 48 + std::time::Duration::from_millis(1)).then_some((short, long_t))
    };
    // A real super-linear construction is slow every time: measure again, longer, before calling it one.
    if slow(3).is_some()
        && let Some((short, long_t)) = slow(15)
    {
        panic!("16x the text took {long_t:?} against {short:?}: super-linear");
    }
}

/// The table readers behind `inspect`: the first byte picks the file's name (and so its kind), the rest is it.
pub fn tables(data: &[u8]) {
    const NAMES: [&str; 7] = [
        "reports.csv",
        "train.csv",
        "mimic-cxr-2.0.0-metadata.csv",
        "mimic-cxr-2.0.0-split.csv",
        "mimic-cxr-2.0.0-chexpert.csv",
        "labeled_reports.csv",
        "openi_gld_std14.csv",
    ];
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let name = NAMES[pick as usize % NAMES.len()];
    let p = file(name, body);
    for policy in [OnBadRecord::Fail, OnBadRecord::Skip] {
        let _ = chexlab::inspect::inspect(&p, policy);
    }
    if let Ok(s) = chexlab::labelers::format::read_labeled(&p, OnBadRecord::Skip) {
        for r in s {
            if r.is_err() {
                break;
            }
        }
    }
    let _ = chexlab::labelers::gold::read(&p);
}

/// A config: TOML text, then after a NUL byte one `--set` override per line.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (toml, sets) = text.split_once('\0').unwrap_or((&text, ""));
    let sets: Vec<String> = sets.lines().map(str::to_string).collect();
    if let Ok(cfg) = chexlab::config::Config::from_toml_str(toml, "fuzz.toml", &sets) {
        // What validates must write out and read back to the same config.
        let again = chexlab::config::Config::from_toml_str(&cfg.to_toml(), "again.toml", &[])
            .expect("a resolved config reads back");
        assert_eq!(cfg.to_toml(), again.to_toml());
    }
}

/// A shard's bytes (mutated Parquet): checksums computed over them as the writer would, an index that matches
/// the footer, then every row read, with and without page checks.
pub fn shard_reader(data: &[u8]) {
    let dir = scratch().join("shards");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("shard directory");
    let shard = dir.join("train-00000.parquet");
    std::fs::write(&shard, data).expect("shard file");
    let Ok(sums) = chexlab::shard::sums::Sums::compute(&shard) else {
        return;
    };
    let sums_name = chexlab::shard::sums::sidecar_name("train-00000.parquet");
    sums.write(&dir.join(&sums_name)).expect("sums file");
    let Some(rows) = chexlab::shard::sums::footer_rows(&shard) else {
        return;
    };
    let index = serde_json::json!({
        "schema_version": chexlab::shard::schema::SCHEMA_VERSION,
        "config_hash": "fuzz",
        "encoding": "pixels",
        "image_size": 32,
        "seed": 0,
        "sources": ["truth"],
        "shards": [{
            "file": "train-00000.parquet",
            "split": "train",
            "rows": rows,
            "bytes": data.len(),
            "sha256": "",
            "page_sums": sums_name,
        }],
        "splits": {"train": rows},
        "label_stats": {},
        "missing_labels": {},
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index");
    let Ok(set) = chexlab::shard::ShardSet::open(&dir) else {
        return;
    };
    let all = set.rows(chexlab::data::Split::Train);
    let got = set.read(&all, "truth");
    let unchecked = set.clone().without_page_checks().read(&all, "truth");
    // The checksums were computed over these very bytes: checking must not change the outcome.
    assert_eq!(got.is_ok(), unchecked.is_ok(), "{got:?} vs {unchecked:?}");
    if let (Ok(a), Ok(b)) = (got, unchecked) {
        assert_eq!(a, b);
    }
}

/// A checkpoint file's bytes.
pub fn checkpoint(data: &[u8]) {
    let p = file("step-00000001.ckpt", data);
    let _ = chexlab::train::checkpoint::load(&p);
}

fn tokenizer_once() -> &'static chexlab::labelers::bert::tokenizer::ReportTokenizer {
    static T: OnceLock<chexlab::labelers::bert::tokenizer::ReportTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let reports = [
            "No acute cardiopulmonary process.",
            "Mild cardiomegaly with small bilateral pleural effusions.",
            "There is no pneumothorax. Lungs are clear.",
            "Interval increase in right lower lobe opacity, concerning for pneumonia.",
        ];
        chexlab::labelers::bert::tokenizer::ReportTokenizer::train(reports.iter().copied(), 200, 1)
            .expect("tokenizer")
    })
}

/// The BERT tokenizer on any text: encodings within its length, padding consistent.
pub fn tokenizer(data: &[u8]) {
    let t = tokenizer_once();
    let text = String::from_utf8_lossy(data);
    if let Ok(e) = t.encode(&text) {
        let padded = t.pad(&[&e, &e]);
        let _ = padded;
    }
    let _ = t.tokens(&text);
}
