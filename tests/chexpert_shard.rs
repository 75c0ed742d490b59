//! Sharding the CheXpert layout: images from `train.csv` / `valid.csv` joined with the dataset's own labels and an
//! external labeler's CSV, exact round trip, held-out validation patients, `valid.csv` as the test split, image
//! sizes of encoded shards, split leaks refused, and the shipped `configs/chexpert.toml` sharding such a folder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chexlab::data::image::decode_resize;
use chexlab::data::{OnBadRecord, Split};
use chexlab::observations::{Label, LabelRow, OBSERVATIONS, Observation};
use chexlab::shard::writer::{LabelInput, SplitPlan};
use chexlab::shard::{ShardSet, ShardSpec, write_shards};

mod common;

const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,\
Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,\
Fracture,Support Devices";

/// The label cell of (study number, observation): a mix of 1, 0, -1 and blank.
fn cell(k: usize, o: usize) -> &'static str {
    ["1.0", "0.0", "-1.0", "", ""][(k * 7 + o * 3) % 5]
}

/// A CheXpert-v1.0-small folder: `train` patients 1..=14 (1–2 studies, 1–2 views each), `valid` patients
/// 64541..=64544, JPEG images of varied sizes. Returns the root and, per image id, (split, labels, file).
fn chexpert(dir: &Path) -> (PathBuf, BTreeMap<String, (Split, LabelRow, PathBuf)>) {
    let root = dir.join("CheXpert-v1.0-small");
    let mut expected = BTreeMap::new();
    let mut k = 0;
    for (split, patients) in [("train", 1..=14u32), ("valid", 64541..=64544)] {
        let mut csv = format!("{HEADER}\n");
        for p in patients {
            for study in 1..=(1 + p % 2) {
                k += 1;
                for view in 1..=(1 + (p + study) % 2) {
                    let (side, kind) = if view == 1 {
                        ("frontal", "Frontal")
                    } else {
                        ("lateral", "Lateral")
                    };
                    let rel = format!("{split}/patient{p:05}/study{study}/view{view}_{side}.jpg");
                    let file = root.join(&rel);
                    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                    let (w, h) = (40 + p % 5 * 4, 36 + study * 6);
                    image::GrayImage::from_fn(w, h, |x, y| {
                        image::Luma([((x * 5 + y * 3 + p * 11) % 256) as u8])
                    })
                    .save(&file)
                    .unwrap();
                    let cells: Vec<&str> = (0..14).map(|o| cell(k, o)).collect();
                    writeln!(
                        csv,
                        "CheXpert-v1.0-small/{rel},Female,60,{kind},AP,{}",
                        cells.join(",")
                    )
                    .unwrap();
                    // The CSV's columns are in the dataset's order, found by name.
                    let mut labels = LabelRow::default();
                    for (name, c) in HEADER.split(',').skip(5).zip(&cells) {
                        labels.set(
                            Observation::from_name(name).unwrap(),
                            Label::parse(c).unwrap(),
                        );
                    }
                    let id = format!("patient{p:05}/study{study}/view{view}_{side}");
                    expected.insert(id, (Split::parse(split).unwrap(), labels, file));
                }
            }
        }
        std::fs::write(root.join(format!("{split}.csv")), csv).unwrap();
    }
    (root, expected)
}

/// An external labeler's CSV for every other study: `study_id` + the 14 observations, all positive.
fn external(
    dir: &Path,
    expected: &BTreeMap<String, (Split, LabelRow, PathBuf)>,
) -> (PathBuf, HashSet<String>) {
    let names: Vec<&str> = OBSERVATIONS.iter().map(|o| o.name()).collect();
    let mut csv = format!("study_id,{}\n", names.join(","));
    let studies: Vec<String> = expected
        .keys()
        .map(|id| id.rsplit_once('/').unwrap().0.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .step_by(2)
        .collect();
    for s in &studies {
        writeln!(csv, "{s},{}", vec!["1.0"; 14].join(",")).unwrap();
    }
    let path = dir.join("external.csv");
    std::fs::write(&path, csv).unwrap();
    (path, studies.into_iter().collect())
}

fn spec(root: &Path, ext: &Path) -> ShardSpec {
    ShardSpec {
        dataset: root.to_path_buf(),
        sources: vec![
            ("chexpert".into(), LabelInput::Dataset),
            ("ext".into(), ext.to_path_buf().into()),
        ],
        target_mb: 0.01,
        pre_resize: true,
        image_size: 16,
        seed: 3,
        on_bad_record: OnBadRecord::Fail,
        splits: SplitPlan::default(),
        max_image_side: chexlab::shard::DEFAULT_MAX_IMAGE_SIDE,
    }
}

/// Every row of a shard directory: image id → (split, sample for `source`).
fn all_rows(set: &ShardSet, source: &str) -> HashMap<String, (Split, chexlab::shard::Sample)> {
    let mut out = HashMap::new();
    for split in Split::ALL {
        for smp in set.read(&set.rows(split), source).unwrap() {
            assert!(
                out.insert(smp.image_id.clone(), (split, smp)).is_none(),
                "an image twice"
            );
        }
    }
    out
}

#[test]
fn chexpert_images_and_labels_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let (ext, ext_studies) = external(dir.path(), &expected);
    let out = dir.path().join("shards");
    let index = write_shards(&spec(&root, &ext), &out).unwrap();
    let n = |s: Split| expected.values().filter(|e| e.0 == s).count() as u64;
    assert_eq!(index.splits.get("train"), Some(&n(Split::Train)));
    assert_eq!(index.splits.get("valid"), Some(&n(Split::Valid)));
    assert!(!index.splits.contains_key("test"));
    assert!(index.shards.len() > 2, "small target size: several shards");
    let set = ShardSet::open(&out).unwrap();
    let own = all_rows(&set, "chexpert");
    let ext_rows = all_rows(&set, "ext");
    assert_eq!(own.len(), expected.len());
    for (id, (split, labels, file)) in &expected {
        let (got_split, smp) = &own[id];
        assert_eq!(got_split, split, "{id}");
        assert_eq!(&smp.labels, labels, "{id}: the dataset's labels");
        let bytes = std::fs::read(file).unwrap();
        assert_eq!(
            smp.pixels,
            decode_resize(file, &bytes, None, 16, 8192).unwrap(),
            "{id}: pixels"
        );
        let study = id.rsplit_once('/').unwrap().0;
        let ext_labels = &ext_rows[id].1.labels;
        for o in OBSERVATIONS {
            let want = if ext_studies.contains(study) {
                Label::Positive
            } else {
                Label::Blank
            };
            assert_eq!(ext_labels.get(o), want, "{id} {}", o.name());
        }
    }
    assert_eq!(index.missing_labels["chexpert"], 0);
    assert!(index.missing_labels["ext"] > 0);
}

/// A label file in the layout Stanford ships `train_cheXbert.csv` / `train_visualCheXbert.csv`: `train.csv`'s columns,
/// one row per training image, paths under `CheXpert-v1.0/` (not `-small`), 0/1 labels — here each image's own:
/// positive everywhere on frontal views, negative on lateral ones, so that two views of one study differ.
fn shipped_image_labels(
    dir: &Path,
    expected: &BTreeMap<String, (Split, LabelRow, PathBuf)>,
) -> PathBuf {
    let mut csv = format!("{HEADER}\n");
    for (id, (split, _, _)) in expected {
        if *split != Split::Train {
            continue;
        }
        let v = if id.ends_with("frontal") {
            "1.0"
        } else {
            "0.0"
        };
        writeln!(
            csv,
            "CheXpert-v1.0/train/{id}.jpg,Male,50,Frontal,PA,{}",
            vec![v; 14].join(",")
        )
        .unwrap();
    }
    let path = dir.join("train_cheXbert.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Radiologist labels keyed by `Study` as the CheXpert test set's `groundtruth.csv` is (its column order: Lung
/// Opacity before Lung Lesion, no Sex/Age), for the `valid` studies: Edema positive, the rest negative.
fn shipped_study_labels(
    dir: &Path,
    expected: &BTreeMap<String, (Split, LabelRow, PathBuf)>,
) -> PathBuf {
    let cols = "Study,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,\
Lung Opacity,Lung Lesion,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices";
    let mut csv = format!("{cols}\n");
    let studies: std::collections::BTreeSet<&str> = expected
        .iter()
        .filter(|(_, e)| e.0 == Split::Valid)
        .map(|(id, _)| id.rsplit_once('/').unwrap().0)
        .collect();
    for s in studies {
        let cells: Vec<&str> = cols
            .split(',')
            .skip(1)
            .map(|c| if c == "Edema" { "1" } else { "0" })
            .collect();
        writeln!(csv, "CheXpert-v1.0/valid/{s},{}", cells.join(",")).unwrap();
    }
    let path = dir.join("groundtruth.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn shipped_label_files_keyed_by_path_and_by_study_join_image_by_image() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let by_path = shipped_image_labels(dir.path(), &expected);
    let by_study = shipped_study_labels(dir.path(), &expected);
    let mut sp = spec(&root, &by_path);
    sp.sources = vec![
        ("chexpert".into(), LabelInput::Dataset),
        ("chexbert".into(), by_path.clone().into()),
        ("radiologists".into(), by_study.clone().into()),
    ];
    let out = dir.path().join("shards");
    let index = write_shards(&sp, &out).unwrap();
    let set = ShardSet::open(&out).unwrap();
    let (chexbert, radiologists) = (all_rows(&set, "chexbert"), all_rows(&set, "radiologists"));
    let n = |s: Split| expected.values().filter(|e| e.0 == s).count() as u64;
    for (id, (split, _, _)) in &expected {
        let want = match (split, id.ends_with("frontal")) {
            (Split::Train, true) => Label::Positive,
            (Split::Train, false) => Label::Negative,
            _ => Label::Blank,
        };
        assert_eq!(chexbert[id].1.labels.get(Observation::Edema), want, "{id}");
        let want = if *split == Split::Valid {
            Label::Positive
        } else {
            Label::Blank
        };
        assert_eq!(
            radiologists[id].1.labels.get(Observation::Edema),
            want,
            "{id}"
        );
        if *split == Split::Valid {
            assert_eq!(
                radiologists[id].1.labels.get(Observation::LungLesion),
                Label::Negative
            );
        }
    }
    // Two views of one training study carry their own labels.
    assert!(expected.keys().any(|id| id.ends_with("lateral")));
    assert_eq!(index.missing_labels["chexbert"], n(Split::Valid));
    assert_eq!(index.missing_labels["radiologists"], n(Split::Train));
    let c = &index.label_coverage["chexbert"];
    assert_eq!(
        (c.rows, c.unmatched_ids, c.conflicting_ids),
        (n(Split::Train), 0, 0)
    );

    // An id of no image, and an image given twice with other labels, are counted.
    let mut text = std::fs::read_to_string(&by_path).unwrap();
    let first = text.lines().nth(1).unwrap().to_string();
    text.push_str(&first.replace(",1.0", ",0.0"));
    text.push('\n');
    text.push_str(&first.replace("patient00001", "patient99999"));
    text.push('\n');
    std::fs::write(&by_path, text).unwrap();
    let index = write_shards(&sp, &dir.path().join("shards2")).unwrap();
    let c = &index.label_coverage["chexbert"];
    assert_eq!(
        (c.rows, c.unmatched_ids, c.conflicting_ids),
        (n(Split::Train) + 2, 1, 1)
    );

    // A file keyed for another dataset is refused, showing both sides' ids.
    let mimic = dir.path().join("mimic.csv");
    let names: Vec<&str> = OBSERVATIONS.iter().map(|o| o.name()).collect();
    std::fs::write(
        &mimic,
        format!(
            "study_id,{}\n50414267,{}\n",
            names.join(","),
            vec!["1.0"; 14].join(",")
        ),
    )
    .unwrap();
    sp.sources = vec![("mimic".into(), mimic.clone().into())];
    let e = write_shards(&sp, &dir.path().join("shards3"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("label source 'mimic': none of its 1 ids matches an image or study")
            && e.contains("its ids read as: 50414267")
            && e.contains("patient"),
        "{e}"
    );
    assert!(!dir.path().join("shards3/index.json").exists());
}

#[test]
fn held_out_patients_form_the_validation_split_and_valid_csv_the_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let (ext, _) = external(dir.path(), &expected);
    let mut s = spec(&root, &ext);
    s.splits = SplitPlan {
        holdout_fraction: 0.3,
        valid_as_test: true,
        test_labels: None,
    };
    let out = dir.path().join("a");
    write_shards(&s, &out).unwrap();
    let rows = all_rows(&ShardSet::open(&out).unwrap(), "chexpert");
    let patient = |id: &str| id.split('/').next().unwrap().to_string();
    let mut by_split: HashMap<Split, HashSet<String>> = HashMap::new();
    for (id, (split, _)) in &rows {
        by_split.entry(*split).or_default().insert(patient(id));
        // valid.csv's images are the test split, nothing else is.
        assert_eq!(
            *split == Split::Test,
            expected[id].0 == Split::Valid,
            "{id}"
        );
    }
    let (train, valid) = (&by_split[&Split::Train], &by_split[&Split::Valid]);
    assert!(
        !valid.is_empty() && valid.len() < 10,
        "about 30% of 14 train patients held out: {valid:?}"
    );
    assert!(train.is_disjoint(valid), "a patient in train and valid");
    // The same seed holds out the same patients; another seed others.
    let again = dir.path().join("b");
    write_shards(&s, &again).unwrap();
    let rows_again = all_rows(&ShardSet::open(&again).unwrap(), "chexpert");
    assert!(
        rows.iter()
            .all(|(id, (split, _))| rows_again[id].0 == *split)
    );
    s.seed = 4;
    let other = dir.path().join("c");
    write_shards(&s, &other).unwrap();
    let rows_other = all_rows(&ShardSet::open(&other).unwrap(), "chexpert");
    assert!(
        rows.iter()
            .any(|(id, (split, _))| rows_other[id].0 != *split)
    );
    // A dataset with a test split of its own keeps it.
    let valid = std::fs::read_to_string(root.join("valid.csv")).unwrap();
    std::fs::write(
        root.join("test.csv"),
        valid.replace("/valid/patient6454", "/test/patient6474"),
    )
    .unwrap();
    let err = write_shards(&s, &dir.path().join("d"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("test split of its own"), "{err}");
}

#[test]
fn encoded_chexpert_shards_record_the_image_sizes_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let (ext, _) = external(dir.path(), &expected);
    let mut s = spec(&root, &ext);
    s.pre_resize = false;
    let out = dir.path().join("e");
    let index = write_shards(&s, &out).unwrap();
    assert_eq!(index.encoding, "encoded");
    let set = ShardSet::open(&out).unwrap();
    for (id, (_, smp)) in all_rows(&set, "chexpert") {
        let img = image::open(&expected[&id].2).unwrap();
        assert_eq!(
            (smp.width as u32, smp.height as u32),
            (img.width(), img.height()),
            "{id}"
        );
    }
    let rows = set.rows(Split::Train);
    for smp in set.read_images(&rows, "chexpert", 16).unwrap() {
        let file = &expected[&smp.image_id].2;
        let bytes = std::fs::read(file).unwrap();
        assert_eq!(
            smp.pixels,
            decode_resize(file, &bytes, None, 16, 8192).unwrap()
        );
    }
}

#[test]
fn a_patient_in_train_and_valid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let (ext, _) = external(dir.path(), &expected);
    // Give valid.csv an image of a training patient.
    let line = std::fs::read_to_string(root.join("train.csv"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let mut valid = std::fs::read_to_string(root.join("valid.csv")).unwrap();
    valid.push_str(&line.replace("/train/", "/valid/"));
    valid.push('\n');
    std::fs::write(root.join("valid.csv"), valid).unwrap();
    let err = write_shards(&spec(&root, &ext), &dir.path().join("s"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("patient00001 is in train") && err.contains("valid.csv"),
        "{err}"
    );
}

#[test]
fn the_shipped_chexpert_config_shards_a_chexpert_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    let (ext, _) = external(dir.path(), &expected);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/chexpert.toml");
    let run = dir.path().join("run");
    let cfg = chexlab::config::Config::load(
        &shipped,
        &[
            format!("dataset.root={}", root.display()),
            format!("run_dir={}", run.display()),
            format!("sources.chexbert.path={}", ext.display()),
            format!("sources.visualchexbert.path={}", ext.display()),
            "model.image_size=32".into(),
        ],
    )
    .unwrap();
    let spec = cfg.shard_spec().unwrap();
    let index = write_shards(&spec, &run.join("shards")).unwrap();
    assert_eq!(index.sources, ["chexpert", "chexbert", "visualchexbert"]);
    let valid_images = expected.values().filter(|e| e.0 == Split::Valid).count() as u64;
    assert_eq!(
        index.splits.get("test"),
        Some(&valid_images),
        "valid.csv is the test split"
    );
    assert!(
        index.splits.get("valid").is_some_and(|&n| n > 0),
        "held-out validation patients"
    );
}

/// The CheXpert test set's real radiologist labels, when the reference data is at hand.
fn real_groundtruth() -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/chexpert-test/groundtruth.csv");
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(t),
        Err(_) => {
            eprintln!(
                "skipping: {} is absent (the CheXpert test set's labels)",
                p.display()
            );
            None
        }
    }
}

#[test]
fn the_paper_protocol_runs_end_to_end_on_a_chexpert_folder_with_its_real_test_labels() {
    let Some(truth) = real_groundtruth() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (root, expected) = chexpert(dir.path());
    // The Stanford release's label files, as shipped (image Path keys under CheXpert-v1.0/).
    let chexbert = shipped_image_labels(dir.path(), &expected);
    let visual = dir.path().join("train_visualCheXbert.csv");
    std::fs::copy(&chexbert, &visual).unwrap();
    // A test folder: the first 40 studies of the real test set, one frontal image each, and their real labels
    // in the file's own layout (Study keys, its column order) next to train.csv.
    let mut lines = truth.lines();
    let mut test_csv = format!("{}\n", lines.next().unwrap());
    let mut studies = Vec::new();
    for line in lines.take(40) {
        let study = line.split(',').next().unwrap();
        let rel = study.strip_prefix("CheXpert-v1.0/").unwrap();
        let file = root.join(rel).join("view1_frontal.jpg");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        image::GrayImage::from_fn(44, 40, |x, y| image::Luma([((x * 3 + y * 7) % 256) as u8]))
            .save(&file)
            .unwrap();
        test_csv.push_str(line);
        test_csv.push('\n');
        studies.push(rel.to_string());
    }
    std::fs::write(root.join("groundtruth.csv"), test_csv).unwrap();
    // One study listed without images: reported and left out, not an error.
    std::fs::write(
        root.join("groundtruth.csv"),
        format!(
            "{}CheXpert-v1.0/test/patient99999/study1,{}\n",
            std::fs::read_to_string(root.join("groundtruth.csv")).unwrap(),
            vec!["0"; 14].join(",")
        ),
    )
    .unwrap();

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/chexpert.toml");
    let run = dir.path().join("run");
    let sets = [
        format!("dataset.root={}", root.display()),
        "dataset.test_labels=groundtruth.csv".into(),
        "dataset.valid_as_test=false".into(),
        "dataset.holdout_fraction=0".into(),
        format!("run_dir={}", run.display()),
        format!("sources.chexbert.path={}", chexbert.display()),
        format!("sources.visualchexbert.path={}", visual.display()),
        "model.arch=small".into(),
        "model.growth_rate=4".into(),
        "model.block_config=[1]".into(),
        "model.init_features=8".into(),
        "model.image_size=32".into(),
        "schedule.epochs=1".into(),
        "schedule.batch_size=8".into(),
        "evaluation.bootstrap=50".into(),
    ];
    let mut args = vec![
        "-q".to_string(),
        "run".into(),
        "--config".into(),
        shipped.display().to_string(),
    ];
    for s in &sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = common::chexlab_ok(&args, dir.path());
    assert!(
        text.contains("1 of 41 test studies have no images"),
        "{text}"
    );

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("shards/index.json")).unwrap()).unwrap();
    assert_eq!(
        index["sources"],
        serde_json::json!(["chexpert", "chexbert", "visualchexbert"])
    );
    assert_eq!(
        index["splits"]["test"], 40,
        "one test image per labelled study with images"
    );
    // The test split's reference labels are the radiologists': the chexpert source's counts on it add up to them.
    let set = ShardSet::open(&run.join("shards")).unwrap();
    let test = set.read(&set.rows(Split::Test), "chexpert").unwrap();
    let truth_rows: HashMap<String, Vec<String>> = truth
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            let s = f
                .next()
                .unwrap()
                .strip_prefix("CheXpert-v1.0/test/")
                .unwrap()
                .to_string();
            (s, f.map(str::to_string).collect())
        })
        .collect();
    let header: Vec<&str> = truth.lines().next().unwrap().split(',').skip(1).collect();
    for smp in &test {
        let study = smp.image_id.rsplit_once('/').unwrap().0;
        let want = &truth_rows[study];
        for (name, v) in header.iter().zip(want) {
            let o = Observation::from_name(name).unwrap();
            assert_eq!(
                smp.labels.get(o),
                Label::parse(v).unwrap(),
                "{study} {name}"
            );
        }
    }
    // Every source scored on the same 40 test images against the one reference, with the positives the real
    // labels hold; and the three compared pairwise.
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["split"], "test");
    assert_eq!(results["reference"], "chexpert");
    let edema_col = header.iter().position(|h| *h == "Edema").unwrap();
    let edema = studies
        .iter()
        .filter(|s| truth_rows[s.strip_prefix("test/").unwrap()][edema_col] == "1")
        .count();
    for source in ["chexpert", "chexbert", "visualchexbert"] {
        let s = &results["sources"][source];
        assert_eq!(s["images"], 40, "{source}: {s}");
        assert_eq!(s["reference"], "chexpert", "{source}");
        let pos = s["positives"].as_array().unwrap();
        assert!(
            pos.iter().any(|p| p[0] == "Edema" && p[1] == edema),
            "{source}: {pos:?}, expected {edema} Edema positives"
        );
    }
    assert_eq!(results["comparisons"].as_array().unwrap().len() % 3, 0);
    assert!(!results["comparisons"].as_array().unwrap().is_empty());
    assert!(run.join("report.md").is_file());
}
