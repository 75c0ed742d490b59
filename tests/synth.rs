//! The synthetic world end to end: the MIMIC reader reads it, it is deterministic, its truth agrees with its
//! reports, its prevalences follow the priors and its images carry the findings' signatures.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chexlab::config::ImageFormat;
use chexlab::data::mimic::{MimicLayout, read_study_labels, study_label_map};
use chexlab::data::report::{SectionChoice, extract};
use chexlab::data::synth::{self, SynthConfig, world::DEFAULT_PRIORS};
use chexlab::data::{OnBadRecord, Split, View};
use chexlab::labelers::format::read_reports;
use chexlab::{Label, OBSERVATIONS, Observation};

fn cfg(studies: u64, seed: u64, size: u32, format: ImageFormat) -> SynthConfig {
    SynthConfig {
        studies,
        seed,
        image_size: size,
        format,
        ..SynthConfig::default()
    }
}

/// Every file under `root` with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_whatever_the_threads_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(300, 7, 32, ImageFormat::Png);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    one.install(|| synth::generate(&dir.path().join("a"), &c))
        .unwrap();
    two.install(|| synth::generate(&dir.path().join("b"), &c))
        .unwrap();
    let (a, b) = (tree(&dir.path().join("a")), tree(&dir.path().join("b")));
    assert!(a.len() > 600, "{} files", a.len());
    assert!(a == b, "same seed gave different worlds");
    synth::generate(&dir.path().join("c"), &cfg(300, 8, 32, ImageFormat::Png)).unwrap();
    let c8 = tree(&dir.path().join("c"));
    assert_ne!(a[Path::new("reports.csv")], c8[Path::new("reports.csv")]);
    assert_ne!(
        a[Path::new("truth/image_labels.csv")],
        c8[Path::new("truth/image_labels.csv")]
    );
}

#[test]
fn mimic_reader_reads_the_world_and_truth_agrees_with_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    let summary = synth::generate(&root, &cfg(600, 3, 64, ImageFormat::Png)).unwrap();
    assert_eq!(summary.studies, 600);
    assert_eq!(summary.train + summary.validate + summary.test, 600);
    assert!(summary.test > 20 && summary.validate > 20, "{summary:?}");

    let layout = MimicLayout::open(&root, None).unwrap();
    assert_eq!(layout.image_ext, "png");
    let images: Vec<_> = layout
        .images(OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(images.len() as u64, summary.images);
    let mut patient_split: HashMap<u64, Split> = HashMap::new();
    for img in &images {
        let bytes = std::fs::read(root.join(&img.image_path)).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 64));
        assert_eq!(img.meta.rows, Some(64));
        // Patients never straddle splits.
        let prev = patient_split.insert(img.meta.subject_id, img.split);
        assert!(
            prev.is_none() || prev == Some(img.split),
            "patient {} in two splits",
            img.meta.subject_id
        );
    }
    assert!(images.iter().any(|i| i.meta.view == View::Lateral));

    let (studies, _) = layout.studies(OnBadRecord::Fail).unwrap();
    assert_eq!(studies.len(), 600);
    let reports: HashMap<String, String> =
        read_reports(&root.join("reports.csv"), OnBadRecord::Fail)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r.id.unwrap(), r.text)
            })
            .collect();
    let (truth, _) =
        study_label_map(&root.join("truth/report_labels.csv"), OnBadRecord::Fail).unwrap();
    let (mut checked_neg, mut checked_normal) = (0, 0);
    for st in &studies {
        let text = layout.read_report(st.subject_id, st.study_id).unwrap();
        let impression = extract(&text, SectionChoice::Impression);
        assert_eq!(
            &impression,
            &reports[&st.study_id.to_string()],
            "study {}",
            st.study_id
        );
        let labels = truth[&st.study_id];
        // Unambiguous cases: a lone pertinent negative, and a normal template with nothing else abnormal.
        for s in impression.split(". ") {
            let s = s
                .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
                .trim_end_matches('.');
            if s == "No pneumothorax" {
                assert_eq!(
                    labels.get(Observation::Pneumothorax),
                    Label::Negative,
                    "{impression}"
                );
                checked_neg += 1;
            }
        }
        // Normal impressions in the textbook words and the realistic styles' (several organs at once, a comparison).
        if [
            "No acute cardiopulmonary process.",
            "Compared to ___, no acute cardiopulmonary process.",
            "Heart, lungs and mediastinum are within normal limits.",
            "Unremarkable examination of the chest.",
        ]
        .contains(&impression.as_str())
        {
            assert_eq!(labels.get(Observation::NoFinding), Label::Positive);
            checked_normal += 1;
        }
    }
    assert!(
        checked_neg > 5 && checked_normal > 2,
        "{checked_neg} {checked_normal}"
    );
}

#[test]
fn image_prevalences_follow_the_priors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    synth::generate(&root, &cfg(4000, 11, 16, ImageFormat::Raw)).unwrap();
    let mut pos = [0u64; 14];
    let mut n = 0u64;
    for row in read_study_labels(&root.join("truth/image_labels.csv"), OnBadRecord::Fail).unwrap() {
        let row = row.unwrap();
        n += 1;
        for o in OBSERVATIONS {
            pos[o.index()] += (row.labels.get(o) == Label::Positive) as u64;
        }
    }
    assert_eq!(n, 4000);
    for o in OBSERVATIONS {
        let got = pos[o.index()] as f64 / n as f64;
        match o {
            // Derived observations: No Finding is the complement of every other finding; Lung Opacity adds its
            // children to its own share.
            Observation::NoFinding => assert!(got > 0.2 && got < 0.6, "{o}: {got}"),
            Observation::LungOpacity => assert!(got > 0.3 && got < 0.6, "{o}: {got}"),
            _ => {
                let want = DEFAULT_PRIORS[o.index()];
                // Binomial standard error at n = 4000 is at most 0.008; allow four of them.
                assert!(
                    (got - want).abs() < 0.032,
                    "{o}: {got:.3} vs prior {want:.3}"
                );
            }
        }
    }
}

/// Mean brightness of a band at the heart's right border, where only an enlarged heart reaches.
fn heart_border(img: &[u8], n: usize) -> f64 {
    let mut sum = 0u64;
    let mut cnt = 0u64;
    for y in n * 52 / 100..n * 68 / 100 {
        for x in n * 33 / 100..n * 40 / 100 {
            sum += img[y * n + x] as u64;
            cnt += 1;
        }
    }
    sum as f64 / cnt as f64
}

#[test]
fn cardiomegaly_images_have_a_wider_heart_shadow() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("w");
    synth::generate(&root, &cfg(1500, 5, 64, ImageFormat::Raw)).unwrap();
    let layout = MimicLayout::open(&root, None).unwrap();
    let (truth, _) =
        study_label_map(&root.join("truth/image_labels.csv"), OnBadRecord::Fail).unwrap();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for img in layout.images(OnBadRecord::Fail).unwrap() {
        let img = img.unwrap();
        if !img.meta.view.is_frontal() {
            continue;
        }
        let px = std::fs::read(root.join(&img.image_path)).unwrap();
        assert_eq!(px.len(), 64 * 64);
        let v = heart_border(&px, 64);
        if truth[&img.meta.study_id].get(Observation::Cardiomegaly) == Label::Positive {
            pos.push(v);
        } else {
            neg.push(v);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(pos.len() > 100, "{} positives", pos.len());
    assert!(
        mean(&pos) > mean(&neg) + 8.0,
        "positive {:.1} vs negative {:.1}",
        mean(&pos),
        mean(&neg)
    );
}

#[test]
fn preview_writes_a_contact_sheet_with_a_row_per_observation() {
    let dir = tempfile::tempdir().unwrap();
    let sheet = dir.path().join("sheet.png");
    let legend = synth::preview(&sheet, &cfg(1, 2, 32, ImageFormat::Png), 6).unwrap();
    let img = image::open(&sheet).unwrap();
    assert_eq!((img.width(), img.height()), (6 * 32, 14 * 32));
    let text = std::fs::read_to_string(legend).unwrap();
    assert_eq!(text.lines().count(), 15);
    assert!(text.contains("Pneumothorax"));
}

#[test]
fn bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = synth::generate(dir.path(), &cfg(10, 1, 8, ImageFormat::Png))
        .unwrap_err()
        .to_string();
    assert!(err.contains("16..=512"), "{err}");
    let err = synth::generate(dir.path(), &cfg(0, 1, 32, ImageFormat::Png))
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one study"), "{err}");
    let hard = SynthConfig {
        report_difficulty: 2.5,
        ..cfg(10, 1, 32, ImageFormat::Png)
    };
    let err = synth::generate(dir.path(), &hard).unwrap_err().to_string();
    assert!(
        err.contains("report difficulty 2.5 must be within 0..=2"),
        "{err}"
    );
}

#[test]
fn a_world_replaces_an_earlier_one_whole_and_refuses_other_directories_and_full_disks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w");
    synth::generate(&out, &cfg(120, 1, 32, ImageFormat::Png)).unwrap();
    // A second, smaller world over it (another seed: other ids) holds exactly what it holds when written fresh.
    let small = cfg(20, 2, 32, ImageFormat::Jpeg);
    synth::generate(&out, &small).unwrap();
    synth::generate(&dir.path().join("fresh"), &small).unwrap();
    let (over, fresh) = (tree(&out), tree(&dir.path().join("fresh")));
    assert_eq!(
        over.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "files of the earlier world were left"
    );
    assert!(over == fresh);

    // A directory of something else is not emptied.
    let other = dir.path().join("mine");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("thesis.tex"), b"keep").unwrap();
    let err = synth::generate(&other, &small).unwrap_err().to_string();
    assert!(
        err.contains("not a synthetic world") && err.contains("thesis.tex"),
        "{err}"
    );
    assert_eq!(std::fs::read(other.join("thesis.tex")).unwrap(), b"keep");

    // A world no disk holds is refused before anything is written.
    let huge = dir.path().join("huge");
    let err = synth::generate(&huge, &cfg(u64::MAX, 1, 32, ImageFormat::Png))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs about") && err.contains("free"), "{err}");
    assert!(!huge.exists());
    let est = synth::estimate_bytes(&small).unwrap();
    assert!(
        (20 * 4096..20 * 40_000).contains(&est),
        "{est} bytes for 20 studies"
    );
}
