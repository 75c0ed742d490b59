//! Sharding a synthetic world: exact round trip, sampler coverage, split hygiene, resume, corruption detection,
//! and pyarrow reading the files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chexlab::config::ImageFormat;
use chexlab::data::mimic::{MimicLayout, study_label_map};
use chexlab::data::synth::{self, SynthConfig};
use chexlab::data::{OnBadRecord, Split};
use chexlab::shard::{ShardSet, ShardSpec, write_shards};

fn world(dir: &Path, studies: u64) -> PathBuf {
    let root = dir.join("w");
    let cfg = SynthConfig {
        studies,
        seed: 4,
        image_size: 32,
        format: ImageFormat::Png,
        ..SynthConfig::default()
    };
    synth::generate(&root, &cfg).unwrap();
    root
}

fn spec(root: &Path) -> ShardSpec {
    ShardSpec {
        dataset: root.to_path_buf(),
        sources: vec![
            ("truth".into(), root.join("truth/image_labels.csv").into()),
            ("report".into(), root.join("truth/report_labels.csv").into()),
        ],
        // ~1,150 bytes a row at 32 px: about 90 rows a shard, so every split has several shards.
        target_mb: 0.1,
        pre_resize: true,
        image_size: 32,
        seed: 9,
        on_bad_record: OnBadRecord::Fail,
        splits: Default::default(),
        max_image_side: chexlab::shard::DEFAULT_MAX_IMAGE_SIDE,
    }
}

#[test]
fn every_image_and_label_comes_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 500);
    let out = dir.path().join("s");
    let index = write_shards(&spec(&root), &out).unwrap();
    let set = ShardSet::open(&out).unwrap();
    set.verify().unwrap();

    let layout = MimicLayout::open(&root, None).unwrap();
    let images: HashMap<String, (PathBuf, u64, Split)> = layout
        .images(OnBadRecord::Fail)
        .unwrap()
        .map(|i| {
            let i = i.unwrap();
            (
                i.meta.dicom_id.clone(),
                (root.join(&i.image_path), i.meta.study_id, i.split),
            )
        })
        .collect();
    let (truth, _) =
        study_label_map(&root.join("truth/report_labels.csv"), OnBadRecord::Fail).unwrap();
    let mut seen = 0;
    for split in Split::ALL {
        let rows = set.rows(split);
        assert_eq!(
            rows.len() as u64,
            index.splits.get(split.name()).copied().unwrap_or(0)
        );
        for s in set.read(&rows, "report").unwrap() {
            let (path, study, img_split) = &images[&s.image_id];
            assert_eq!(*img_split, split);
            let decoded = image::open(path).unwrap().to_luma8().into_raw();
            assert_eq!(s.pixels, decoded, "pixels of {}", s.image_id);
            assert_eq!((s.width, s.height), (32, 32));
            assert_eq!(s.labels, truth[study], "labels of {}", s.image_id);
            seen += 1;
        }
    }
    assert_eq!(seen, images.len());
}

#[test]
fn sampler_covers_every_row_once_per_epoch_and_reshuffles() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 300);
    let out = dir.path().join("s");
    write_shards(&spec(&root), &out).unwrap();
    let set = ShardSet::open(&out).unwrap();
    let all: HashSet<_> = set.rows(Split::Train).into_iter().collect();
    for world in 1..=4usize {
        let per: Vec<Vec<_>> = (0..world)
            .map(|r| set.assignment(Split::Train, r, world, 0, 1))
            .collect();
        let n = per[0].len();
        assert!(per.iter().all(|p| p.len() == n), "equal counts per rank");
        assert_eq!(n, all.len() / world);
        let union: HashSet<_> = per.iter().flatten().copied().collect();
        assert_eq!(union.len(), n * world, "no row twice");
        assert!(union.is_subset(&all));
        assert_eq!(
            all.len() - union.len(),
            all.len() % world,
            "only the remainder is dropped"
        );
    }
    let e0 = set.assignment(Split::Train, 0, 2, 0, 1);
    let e1 = set.assignment(Split::Train, 0, 2, 1, 1);
    assert_ne!(e0, e1, "a new epoch gives a new order");
    assert_eq!(
        e0,
        set.assignment(Split::Train, 0, 2, 0, 1),
        "deterministic"
    );
}

#[test]
fn patients_never_straddle_splits() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 400);
    let out = dir.path().join("s");
    write_shards(&spec(&root), &out).unwrap();
    let py = pyarrow_rows(&out);
    if let Some(rows) = py {
        let mut split_of: HashMap<String, String> = HashMap::new();
        for (patient, split) in rows {
            let prev = split_of.insert(patient.clone(), split.clone());
            assert!(
                prev.is_none() || prev.as_deref() == Some(split.as_str()),
                "patient {patient}"
            );
        }
    }
    // Independently of pyarrow: a split table that moves one image of a patient to another split is refused.
    let split_csv = root.join("mimic-cxr-2.0.0-split.csv");
    let text = std::fs::read_to_string(&split_csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut fields: Vec<String> = lines[1].split(',').map(String::from).collect();
    fields[3] = if fields[3] == "test" {
        "train".into()
    } else {
        "test".into()
    };
    lines[1] = fields.join(",");
    std::fs::write(&split_csv, lines.join("\n") + "\n").unwrap();
    match write_shards(&spec(&root), &dir.path().join("s2")) {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("splits would leak") || e.contains("in both"),
                "{e}"
            );
        }
        Ok(_) => panic!("a patient in two splits must be refused"),
    }
}

/// (patient_id, split) of every row, read by pyarrow, when pyarrow is installed.
fn pyarrow_rows(dir: &Path) -> Option<Vec<(String, String)>> {
    let script = format!(
        "import pyarrow.parquet as pq, glob\n\
         for f in sorted(glob.glob('{}/*.parquet')):\n\
         \x20   t = pq.read_table(f, columns=['patient_id', 'split'])\n\
         \x20   for p, s in zip(t.column('patient_id').to_pylist(), t.column('split').to_pylist()):\n\
         \x20       print(p, s)\n",
        dir.display()
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "skipping pyarrow check: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    Some(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (p, s) = l.split_once(' ').unwrap();
                (p.to_string(), s.to_string())
            })
            .collect(),
    )
}

#[test]
fn pyarrow_reads_the_documented_schema() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 120);
    let out = dir.path().join("s");
    let index = write_shards(&spec(&root), &out).unwrap();
    let script = format!(
        "import pyarrow.parquet as pq, json, sys\n\
         idx = json.load(open('{0}/index.json'))\n\
         total = 0\n\
         for s in idx['shards']:\n\
         \x20   t = pq.read_table('{0}/' + s['file'])\n\
         \x20   assert t.num_rows == s['rows']\n\
         \x20   total += t.num_rows\n\
         \x20   sch = t.schema\n\
         \x20   assert str(sch.field('image').type) == 'binary'\n\
         \x20   assert str(sch.field('lbl_truth_pleural_effusion').type) == 'int8'\n\
         \x20   assert str(sch.field('width').type) == 'uint16'\n\
         \x20   assert len(t.column('image')[0].as_py()) == 32 * 32\n\
         print(total)\n",
        out.display()
    );
    let Ok(o) = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
    else {
        eprintln!("skipping: python3 not found");
        return;
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    if stderr.contains("No module named 'pyarrow'") {
        eprintln!("skipping: pyarrow is not installed (CI installs it)");
        return;
    }
    assert!(o.status.success(), "{stderr}");
    let total: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(total, index.splits.values().sum::<u64>());
}

#[test]
fn resume_skips_good_shards_and_rewrites_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 300);
    let out = dir.path().join("s");
    let sp = spec(&root);
    let first = write_shards(&sp, &out).unwrap();
    assert!(first.shards.len() >= 5, "{} shards", first.shards.len());
    // Simulate a crash: no index, one shard never finished (no marker), one finished shard's checksums lost.
    std::fs::remove_file(out.join("index.json")).unwrap();
    assert!(
        ShardSet::open(&out)
            .unwrap_err()
            .to_string()
            .contains("incomplete")
    );
    let victim = &first.shards[1].file;
    std::fs::remove_file(out.join(format!(".{victim}.done.json"))).unwrap();
    std::fs::write(out.join(victim), b"half").unwrap();
    std::fs::remove_file(out.join(&first.shards[2].page_sums)).unwrap();
    let untouched = out.join(&first.shards[0].file);
    let mtime = std::fs::metadata(&untouched).unwrap().modified().unwrap();
    let second = write_shards(&sp, &out).unwrap();
    assert_eq!(second.shards, first.shards, "same content after resume");
    assert_eq!(
        std::fs::metadata(&untouched).unwrap().modified().unwrap(),
        mtime,
        "good shard was skipped"
    );
    ShardSet::open(&out).unwrap().verify().unwrap();
}

#[test]
fn resharding_leaves_only_the_new_layout_and_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 200);
    let out = dir.path().join("s");
    let many = write_shards(&spec(&root), &out).unwrap();
    // What a killed run leaves, and a file of the user's that must stay.
    std::fs::write(out.join(".train-00000.parquet.tmp-4242"), b"partial").unwrap();
    std::fs::write(out.join(".index.json.tmp-4242"), b"{").unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let fewer = write_shards(
        &ShardSpec {
            target_mb: 1.0,
            ..spec(&root)
        },
        &out,
    )
    .unwrap();
    assert!(fewer.shards.len() < many.shards.len());
    let mut expected: Vec<String> = fewer
        .shards
        .iter()
        .flat_map(|e| {
            [
                e.file.clone(),
                e.page_sums.clone(),
                format!(".{}.done.json", e.file),
            ]
        })
        .chain(["index.json".to_string(), "notes.txt".to_string()])
        .collect();
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected);
    ShardSet::open(&out).unwrap().verify().unwrap();
}

#[test]
fn truncated_and_tampered_shards_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 200);
    let out = dir.path().join("s");
    let index = write_shards(&spec(&root), &out).unwrap();
    let shard = out.join(&index.shards[0].file);
    let bytes = std::fs::read(&shard).unwrap();

    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(
        err.contains(&index.shards[0].file) && err.contains("truncated"),
        "{err}"
    );

    // Same size, 16 bytes altered in the middle: open passes (it checks sizes and footers), verify names the
    // shard, and so does any read of the altered page, naming row group and column.
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    for b in &mut tampered[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&shard, &tampered).unwrap();
    let set = ShardSet::open(&out).unwrap();
    let err = set.verify().unwrap_err().to_string();
    assert!(
        err.contains(&index.shards[0].file) && err.contains("SHA-256"),
        "{err}"
    );
    let rows: Vec<_> = set
        .rows(index.shards[0].split)
        .into_iter()
        .filter(|r| r.shard == 0)
        .collect();
    let err = set.read(&rows, "truth").unwrap_err().to_string();
    assert!(
        err.contains(&index.shards[0].file)
            && err.contains("checksum mismatch in row group 0, column 'image'"),
        "{err}"
    );
    // One row at a time too (a random batch): the rows on the altered page fail, the others read.
    let failing = rows
        .iter()
        .filter(|r| set.read(std::slice::from_ref(r), "truth").is_err())
        .count();
    assert!(
        (1..rows.len()).contains(&failing),
        "{failing} of {}",
        rows.len()
    );
    // Without the checks the altered pixels would have been read as if they were the images.
    let unchecked = set.clone().without_page_checks();
    assert_eq!(unchecked.read(&rows, "truth").unwrap().len(), rows.len());

    // A verifying re-run of the coordinator says so instead of rewriting the shard silently; a plain one checks
    // sizes and footers only (the pages are checked when read, as above) and keeps it.
    let kept = write_shards(&spec(&root), &out).unwrap();
    assert_eq!(kept.shards, index.shards);
    let err = chexlab::shard::writer::write_shards_verifying(&spec(&root), &out, true, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&index.shards[0].file) && err.contains("altered since it was written"),
        "{err}"
    );

    // The footer is checked when the set opens.
    let mut footer = bytes.clone();
    let at = footer.len() - 20;
    footer[at] ^= 0x01;
    std::fs::write(&shard, &footer).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(
        err.contains(&index.shards[0].file) && err.contains("checksum mismatch in the footer"),
        "{err}"
    );

    // And the checksums themselves.
    std::fs::write(&shard, &bytes).unwrap();
    let sums = out.join(&index.shards[0].page_sums);
    let mut s = std::fs::read(&sums).unwrap();
    s[20] ^= 0x01;
    std::fs::write(&sums, &s).unwrap();
    let err = ShardSet::open(&out).unwrap_err().to_string();
    assert!(
        err.contains(&index.shards[0].page_sums) && err.contains("checksum file itself is corrupt"),
        "{err}"
    );

    let err = set
        .read(&set.rows(Split::Train)[..1], "nope")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'nope' is not in the shards"), "{err}");
}

#[test]
fn encoded_shards_are_decoded_by_the_reader_to_the_pixels_pre_resized_shards_hold() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 120);
    let mut pixels_spec = spec(&root);
    pixels_spec.image_size = 16; // the 32 px images are resized on either path
    write_shards(&pixels_spec, &dir.path().join("p")).unwrap();
    let encoded_spec = ShardSpec {
        pre_resize: false,
        ..pixels_spec
    };
    write_shards(&encoded_spec, &dir.path().join("e")).unwrap();
    let (p, e) = (
        ShardSet::open(&dir.path().join("p")).unwrap(),
        ShardSet::open(&dir.path().join("e")).unwrap(),
    );
    assert_eq!(e.index.encoding, "encoded");
    let mut compared = 0;
    for split in Split::ALL {
        let from_pixels: HashMap<String, Vec<u8>> = p
            .read_images(&p.rows(split), "truth", 16)
            .unwrap()
            .into_iter()
            .map(|s| (s.image_id, s.pixels))
            .collect();
        for s in e.read_images(&e.rows(split), "truth", 16).unwrap() {
            assert_eq!((s.width, s.height), (16, 16));
            assert_eq!(s.pixels, from_pixels[&s.image_id], "{}", s.image_id);
            compared += 1;
        }
    }
    assert_eq!(
        compared,
        Split::ALL.iter().map(|s| p.rows(*s).len()).sum::<usize>()
    );
}

#[test]
fn encoded_shards_decode_every_image_when_written_and_name_a_bad_one_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 30);
    let meta = root.join("mimic-cxr-2.0.0-metadata.csv");
    let text = std::fs::read_to_string(&meta).unwrap();
    // The third image listed (line 4 of the metadata): its file under files/.
    let dicom = text
        .lines()
        .nth(3)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let mut stack = vec![root.join("files")];
    let mut victim = None;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_stem().is_some_and(|s| s == dicom.as_str()) {
                victim = Some(p);
            }
        }
    }
    let victim = victim.expect("the image's file");
    let good = std::fs::read(&victim).unwrap();
    let encoded = ShardSpec {
        pre_resize: false,
        ..spec(&root)
    };
    let out = dir.path().join("s");
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("empty", Vec::new(), "empty"),
        ("truncated", good[..good.len() / 2].to_vec(), "image"),
        (
            "a header claiming 100000 x 100000",
            {
                let mut b = good.clone();
                b[16..20].copy_from_slice(&100_000u32.to_be_bytes());
                b[20..24].copy_from_slice(&100_000u32.to_be_bytes());
                b
            },
            "",
        ),
    ];
    for (what, bytes, says) in cases {
        std::fs::write(&victim, &bytes).unwrap();
        let err = write_shards(&encoded, &out).unwrap_err().to_string();
        assert!(
            err.contains("mimic-cxr-2.0.0-metadata.csv: line 4")
                && err.contains(&dicom)
                && err.contains(&victim.display().to_string())
                && err.contains(says),
            "{what}: {err}"
        );
        assert!(!out.join("index.json").exists(), "{what}");
    }
    std::fs::write(&victim, &good).unwrap();
    let index = write_shards(&encoded, &out).unwrap();
    assert_eq!(index.encoding, "encoded");
    assert!(ShardSet::open(&out).unwrap().verify().is_ok());
}

#[test]
fn a_stop_request_ends_before_the_next_shard_and_the_next_run_writes_the_rest() {
    use chexlab::shard::writer::write_shards_verifying;
    use std::sync::atomic::AtomicBool;
    let dir = tempfile::tempdir().unwrap();
    let root = world(dir.path(), 500);
    let stop = AtomicBool::new(true);
    // Stopped before the first shard: an error of its kind, and no shard written.
    let fresh = dir.path().join("fresh");
    let e = write_shards_verifying(&spec(&root), &fresh, false, Some(&stop)).unwrap_err();
    assert_eq!(e.kind(), chexlab::error::ErrorKind::Stopped, "{e}");
    assert!(e.to_string().contains("0 shard(s) finished"), "{e}");
    let written = std::fs::read_dir(&fresh)
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".parquet")
        })
        .count();
    assert_eq!(written, 0);

    // A run stopped after all but the last shard (as a preempted one leaves it): the finished shards stay, the
    // stopped run writes nothing, and the next one writes the rest into the same index as an uninterrupted run.
    let out = dir.path().join("s");
    let whole = write_shards(&spec(&root), &out).unwrap();
    assert!(whole.shards.len() > 3, "{} shards", whole.shards.len());
    let last = &whole.shards.last().unwrap().file;
    std::fs::remove_file(out.join("index.json")).unwrap();
    std::fs::remove_file(out.join(last)).unwrap();
    let e = write_shards_verifying(&spec(&root), &out, false, Some(&stop)).unwrap_err();
    let kept = whole.shards.len() - 1;
    assert!(
        e.to_string().contains(&format!("{kept} shard(s) finished")),
        "{e}"
    );
    assert!(!out.join("index.json").exists() && !out.join(last).exists());
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let again = write_shards_verifying(&spec(&root), &out, false, Some(&stop)).unwrap();
    let files = |i: &chexlab::shard::ShardIndex| -> Vec<(String, String)> {
        i.shards
            .iter()
            .map(|s| (s.file.clone(), s.sha256.clone()))
            .collect()
    };
    assert_eq!(files(&again), files(&whole));
    ShardSet::open(&out).unwrap().verify().unwrap();
}
