//! The coordinator: joins every image of a dataset with each label source and writes shuffled Parquet shards per
//! split plus `index.json`. Each finished shard gets a `.<file>.done.json` marker (rows, SHA-256, config hash),
//! written after the shard is in place, so a re-run skips verified shards and rewrites the rest; `index.json` is
//! written last, atomically: a directory without it is incomplete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::builder::{BinaryBuilder, Int8Builder, StringBuilder, UInt16Builder};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::chexpert;
use crate::data::ids::{LabelKey, label_key};
use crate::data::image::{decode_dimensions, decode_resize};
use crate::data::mimic::{MimicLayout, study_label_map};
use crate::data::{OnBadRecord, Split};
use crate::error::{Error, Result};
use crate::io::{AtomicFile, write_atomic};
use crate::io::{hex, sha256_of};
use crate::labelers::format::read_labeled;
use crate::observations::{Label, LabelRow, OBSERVATIONS};
use crate::shard::schema::{Coverage, INDEX, SCHEMA_VERSION, ShardEntry, ShardIndex, schema};
use crate::shard::sums;

/// Target size of a data page of the `image` column.
const IMAGE_PAGE_BYTES: usize = 64 * 1024;

/// Where a label source's labels come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LabelInput {
    /// A labeled CSV with a `study_id` column (labeler output, external tool, truth file).
    Csv(PathBuf),
    /// The dataset's own label columns: CheXpert's `train.csv`/`valid.csv`(/`test.csv`), or MIMIC's
    /// `mimic-cxr-2.0.0-chexpert.csv`.
    Dataset,
}

impl From<PathBuf> for LabelInput {
    fn from(p: PathBuf) -> Self {
        LabelInput::Csv(p)
    }
}

/// How images are assigned to splits beyond what the dataset says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitPlan {
    /// Fraction of the training patients (drawn by seed) moved to the validation split.
    pub holdout_fraction: f64,
    /// The dataset's own validation split becomes the test split (CheXpert without `test.csv`: its radiologist
    /// labeled `valid.csv` is the best test set; `holdout_fraction` then provides the validation split).
    pub valid_as_test: bool,
    /// CheXpert's test set: its radiologists' labels (`groundtruth.csv`, keyed by `Study`; or a file keyed by
    /// image `Path`, as `test_labels.csv`), relative to the dataset folder or absolute. The images are the
    /// release's `test/patientNNNNN/studyN/*.jpg`; the labels are the dataset source's for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_labels: Option<PathBuf>,
}

/// What to shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardSpec {
    /// Dataset: MIMIC-CXR-JPG layout (real or synthetic) or CheXpert (`train.csv`, `valid.csv`), detected.
    pub dataset: PathBuf,
    /// Label sources: name and where its labels come from.
    pub sources: Vec<(String, LabelInput)>,
    /// Target shard size in MB.
    pub target_mb: f64,
    /// Store pre-resized pixels (true) or the original encoded bytes (false).
    pub pre_resize: bool,
    /// Side of the pre-resized images.
    pub image_size: u32,
    /// Shuffle seed.
    pub seed: u64,
    /// What to do with malformed records.
    pub on_bad_record: OnBadRecord,
    /// How the splits are made.
    pub splits: SplitPlan,
    /// Largest image width or height accepted ([`super::ShardConfig::max_image_side`]); left out of the config
    /// hash at its default, so shards written before it existed stay valid.
    #[serde(
        default = "default_max_image_side",
        skip_serializing_if = "is_default_max_image_side"
    )]
    pub max_image_side: u32,
}

fn default_max_image_side() -> u32 {
    super::DEFAULT_MAX_IMAGE_SIDE
}

fn is_default_max_image_side(v: &u32) -> bool {
    *v == super::DEFAULT_MAX_IMAGE_SIDE
}

#[derive(Clone, Debug)]
struct Row {
    study: String,
    patient: String,
    image_id: String,
    view: &'static str,
    split: Split,
    path: PathBuf,
    rows: Option<u32>,
    columns: Option<u32>,
    /// The table and line that list the image, for its errors.
    listed: (Arc<Path>, u64),
}

/// A dataset's images, the tables they came from, and its own labels.
struct Collected {
    rows: Vec<Row>,
    tables: Vec<PathBuf>,
    labels: Option<SourceLabels>,
}

/// One label source's rows, keyed by image or by study ([`label_key`]): an image takes its own row, else its
/// study's (study-level labels apply to every image of the study).
#[derive(Clone, Debug, Default)]
struct SourceLabels {
    by_image: HashMap<String, LabelRow>,
    by_study: HashMap<String, LabelRow>,
    /// Rows read.
    rows: u64,
    /// Ids given again with other labels (the later row wins).
    conflicts: u64,
}

impl SourceLabels {
    fn insert(&mut self, key: LabelKey, labels: LabelRow) {
        self.rows += 1;
        let (map, k) = match key {
            LabelKey::Image(k) => (&mut self.by_image, k),
            LabelKey::Study(k) => (&mut self.by_study, k),
        };
        if map.insert(k, labels).is_some_and(|prev| prev != labels) {
            self.conflicts += 1;
        }
    }

    /// The labels of image `r`.
    fn get(&self, r: &Row) -> Option<&LabelRow> {
        self.by_image
            .get(&r.image_id)
            .or_else(|| self.by_study.get(&r.study))
    }

    /// How many of the ids match no image of the dataset.
    fn unmatched(&self, images: &HashSet<&str>, studies: &HashSet<&str>) -> u64 {
        let count = |m: &HashMap<String, LabelRow>, known: &HashSet<&str>| {
            m.keys().filter(|k| !known.contains(k.as_str())).count() as u64
        };
        count(&self.by_image, images) + count(&self.by_study, studies)
    }

    /// Some ids of the file, for messages.
    fn examples(&self) -> String {
        let mut ids: Vec<&str> = self
            .by_image
            .keys()
            .chain(self.by_study.keys())
            .map(String::as_str)
            .collect();
        ids.sort_unstable();
        ids.truncate(3);
        ids.join(", ")
    }
}

/// Reads the images of a MIMIC-CXR-JPG (or synthetic) or CheXpert dataset, refusing a patient found in two
/// splits (its images would leak between training and test).
fn collect(spec: &ShardSpec) -> Result<Collected> {
    // Patient → (split, file, line) of its first image.
    let mut seen: HashMap<String, (Split, PathBuf, u64)> = HashMap::new();
    let mut check = |patient: &str, split: Split, file: &Path, line: u64| -> Result<()> {
        match seen.get(patient) {
            Some((prev, prev_file, prev_line)) if *prev != split => Err(Error::record(
                file,
                line,
                format!(
                    "patient {patient} is in {prev} ({}, line {prev_line}) and in {split}: splits would leak",
                    prev_file.display()
                ),
            )),
            Some(_) => Ok(()),
            None => {
                seen.insert(patient.to_string(), (split, file.to_path_buf(), line));
                Ok(())
            }
        }
    };
    let mut rows = Vec::new();
    if MimicLayout::detect(&spec.dataset) {
        let layout = MimicLayout::open(&spec.dataset, None)?;
        let table: Arc<Path> = layout.metadata.clone().into();
        let mut images = layout.images(spec.on_bad_record)?;
        for img in images.by_ref() {
            let img = img?;
            let patient = img.meta.subject_id.to_string();
            check(&patient, img.split, &layout.metadata, img.meta.line)?;
            rows.push(Row {
                study: img.meta.study_id.to_string(),
                patient,
                image_id: img.meta.dicom_id.clone(),
                view: img.meta.view.name(),
                split: img.split,
                path: layout.root.join(&img.image_path),
                rows: img.meta.rows,
                columns: img.meta.columns,
                listed: (table.clone(), img.meta.line),
            });
        }
        let labels = match &layout.chexpert {
            Some(p) if spec.sources.iter().any(|(_, l)| *l == LabelInput::Dataset) => {
                let mut own = SourceLabels::default();
                for (study, row) in study_label_map(p, spec.on_bad_record)?.0 {
                    own.insert(LabelKey::Study(study.to_string()), row);
                }
                Some(own)
            }
            _ => None,
        };
        let mut tables = vec![layout.metadata.clone(), layout.split.clone()];
        tables.extend(labels.as_ref().and(layout.chexpert.clone()));
        return Ok(Collected {
            rows,
            tables,
            labels,
        });
    }
    let tables = chexpert::dataset_csvs(&spec.dataset).map_err(|_| {
        Error::format(
            &spec.dataset,
            "neither a MIMIC-CXR-JPG dataset (mimic-cxr-2.0.0-metadata.csv, -split.csv) nor a CheXpert one \
             (train.csv, valid.csv)",
        )
    })?;
    let mut labels = SourceLabels::default();
    for csv in &tables {
        let table: Arc<Path> = csv.clone().into();
        let mut stream = chexpert::read_csv(csv, spec.on_bad_record)?;
        for img in stream.by_ref() {
            let img = img?;
            check(&img.patient, img.split, csv, img.line)?;
            let study = img.study_id();
            let image_id = format!("{study}/{}", img.view_name);
            // CheXpert's labels are per image (a study's views may differ).
            labels.insert(LabelKey::Image(image_id.clone()), img.labels);
            rows.push(Row {
                image_id,
                patient: img.patient.clone(),
                view: img.view.name(),
                split: img.split,
                path: img.image_path(&spec.dataset),
                rows: None,
                columns: None,
                study: study.clone(),
                listed: (table.clone(), img.line),
            });
        }
    }
    let mut tables = tables;
    if let Some(test) = &spec.splits.test_labels {
        let file = if test.is_absolute() {
            test.clone()
        } else {
            spec.dataset.join(test)
        };
        chexpert_test_split(spec, &file, &mut rows, &mut labels, &mut check)?;
        tables.push(file);
    }
    Ok(Collected {
        rows,
        tables,
        labels: Some(labels),
    })
}

/// The images and labels of CheXpert's test set: rows of `file` keyed by image `Path` are images themselves; rows
/// keyed by study (`Study`: `CheXpert-v1.0/test/patient64741/study1`) label every image in that study's folder
/// under `test/`. A listed study without images is counted and reported; none found at all is an error.
fn chexpert_test_split(
    spec: &ShardSpec,
    file: &Path,
    rows: &mut Vec<Row>,
    labels: &mut SourceLabels,
    check: &mut impl FnMut(&str, Split, &Path, u64) -> Result<()>,
) -> Result<()> {
    let table: Arc<Path> = file.to_path_buf().into();
    let before = rows.len();
    let mut stream = read_labeled(file, spec.on_bad_record)?;
    let mut without_images = Vec::new();
    let mut studies = 0u64;
    for r in stream.by_ref() {
        let r = r?;
        let Some(id) = r.id.as_deref() else {
            return Err(Error::format(
                file,
                "test labels need an id column (Study or Path)",
            ));
        };
        let (patient, study, views) = match label_key(id) {
            LabelKey::Image(image) => {
                let (study, view) = image.rsplit_once('/').expect("patient/study/view");
                let (patient, study) = study.split_once('/').expect("patient/study");
                let found = ["jpg", "png"]
                    .iter()
                    .map(|ext| spec.dataset.join(format!("test/{image}.{ext}")))
                    .find(|p| p.is_file());
                (
                    patient.to_string(),
                    study.to_string(),
                    found
                        .map(|p| vec![(view.to_string(), p)])
                        .unwrap_or_default(),
                )
            }
            LabelKey::Study(s) if s.contains('/') => {
                let (patient, study) = s.split_once('/').expect("checked");
                let dir = spec.dataset.join("test").join(patient).join(study);
                let mut views: Vec<(String, PathBuf)> = fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.path())
                            .filter(|p| {
                                p.extension()
                                    .is_some_and(|e| e == "jpg" || e == "jpeg" || e == "png")
                            })
                            .filter_map(|p| {
                                Some((p.file_stem()?.to_string_lossy().into_owned(), p))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                views.sort();
                (patient.to_string(), study.to_string(), views)
            }
            LabelKey::Study(other) => {
                return Err(Error::record(
                    file,
                    r.line,
                    format!(
                        "'{other}' is not a CheXpert test study (patientNNNNN/studyN) or image path"
                    ),
                ));
            }
        };
        studies += 1;
        if views.is_empty() {
            without_images.push(format!("{patient}/{study}"));
            continue;
        }
        check(&patient, Split::Test, file, r.line)?;
        for (view, path) in views {
            let image_id = format!("{patient}/{study}/{view}");
            labels.insert(LabelKey::Image(image_id.clone()), r.labels);
            rows.push(Row {
                study: format!("{patient}/{study}"),
                patient: patient.clone(),
                view: if view.contains("lateral") {
                    crate::data::View::Lateral.name()
                } else {
                    crate::data::View::Other.name()
                },
                split: Split::Test,
                image_id,
                path,
                rows: None,
                columns: None,
                listed: (table.clone(), r.line),
            });
        }
    }
    if rows.len() == before {
        return Err(Error::format(
            file,
            format!(
                "none of its {studies} test studies has images under {} (the test images come with the \
                 release's test/ folder)",
                spec.dataset.join("test").display()
            ),
        ));
    }
    if !without_images.is_empty() {
        tracing::warn!(
            "{}: {} of {studies} test studies have no images under test/ and are left out (e.g. {})",
            file.display(),
            without_images.len(),
            without_images
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Groups rows by split after the [`SplitPlan`]: the dataset's validation split moved to test, then a seeded
/// fraction of the training patients (whole patients, so nothing leaks) moved to validation.
fn plan_splits(
    rows: Vec<Row>,
    plan: &SplitPlan,
    seed: u64,
    dataset: &Path,
) -> Result<BTreeMap<Split, Vec<Row>>> {
    if plan.valid_as_test && rows.iter().any(|r| r.split == Split::Test) {
        return Err(Error::format(
            dataset,
            "valid_as_test: the dataset has a test split of its own",
        ));
    }
    let held_out = |patient: &str| {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(patient.as_bytes());
        let d = h.finalize();
        let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        (x as f64 / u64::MAX as f64) < plan.holdout_fraction
    };
    let mut out: BTreeMap<Split, Vec<Row>> = BTreeMap::new();
    for mut r in rows {
        r.split = match r.split {
            Split::Valid if plan.valid_as_test => Split::Test,
            Split::Train if plan.holdout_fraction > 0.0 && held_out(&r.patient) => Split::Valid,
            s => s,
        };
        out.entry(r.split).or_default().push(r);
    }
    Ok(out)
}

fn source_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Refuses a spec the shards cannot be written for, before any work.
fn check_spec(spec: &ShardSpec) -> Result<()> {
    if spec.sources.is_empty() {
        // Shards without labels train nothing; writing them would only look like progress.
        return Err(Error::Config(
            "no label sources to shard: give --labels NAME=FILE (or NAME=@dataset for the dataset's own \
             labels), or [[sources]] in the config"
                .into(),
        ));
    }
    for (name, _) in &spec.sources {
        if !source_name_ok(name) {
            return Err(Error::Config(format!(
                "label source name '{name}' must match [a-z0-9_]+"
            )));
        }
    }
    if !(64..=65_535).contains(&spec.max_image_side) {
        return Err(Error::Config(format!(
            "shard.max_image_side {} must be within 64..=65535 (the shards store sizes as 16-bit)",
            spec.max_image_side
        )));
    }
    if !(8..=1024).contains(&spec.image_size) {
        return Err(Error::Config(format!(
            "image size {} must be within 8..=1024",
            spec.image_size
        )));
    }
    let plan = &spec.splits;
    if plan.valid_as_test && plan.test_labels.is_some() {
        return Err(Error::Config(
            "dataset.valid_as_test and dataset.test_labels both make a test split: keep one".into(),
        ));
    }
    if !(0.0..1.0).contains(&plan.holdout_fraction) {
        return Err(Error::Config(format!(
            "holdout fraction {} must be within [0, 1)",
            plan.holdout_fraction
        )));
    }
    Ok(())
}

/// The shards' config hash: the spec plus the content of every input table, so changed inputs redo the shards.
fn spec_hash(spec: &ShardSpec, tables: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec).expect("spec serialises"));
    for p in tables
        .iter()
        .chain(spec.sources.iter().filter_map(|(_, l)| match l {
            LabelInput::Csv(p) => Some(p),
            LabelInput::Dataset => None,
        }))
    {
        h.update(sha256_of(p)?.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Each source's labels, in the spec's order (`own`: the dataset's own labels, when it has them).
fn source_labels(spec: &ShardSpec, own: Option<&SourceLabels>) -> Result<Vec<SourceLabels>> {
    let mut labels: Vec<SourceLabels> = Vec::new();
    for (name, input) in &spec.sources {
        labels.push(match input {
            LabelInput::Dataset => own.cloned().ok_or_else(|| {
                Error::format(
                    &spec.dataset,
                    format!(
                        "label source '{name}' asks for the dataset's own labels, but it has none \
                         (MIMIC: mimic-cxr-2.0.0-chexpert.csv)"
                    ),
                )
            })?,
            LabelInput::Csv(path) => {
                let mut stream = read_labeled(path, spec.on_bad_record)?;
                if stream.parser().id_column().is_none() {
                    return Err(Error::format(
                        path,
                        format!(
                            "label source '{name}' has no id column (one of {})",
                            crate::labelers::format::ID_COLUMNS.join(", ")
                        ),
                    ));
                }
                let mut map = SourceLabels::default();
                for row in stream.by_ref() {
                    let row = row?;
                    map.insert(label_key(row.id.as_deref().unwrap_or_default()), row.labels);
                }
                map
            }
        });
    }
    Ok(labels)
}

/// How each source's file meets the dataset's images, by source name. A file none of whose ids matches an image
/// (keyed for another dataset, or by a column of another meaning) is refused; partial coverage is logged.
fn coverage(
    spec: &ShardSpec,
    labels: &[SourceLabels],
    rows: &[Row],
) -> Result<BTreeMap<String, Coverage>> {
    let images: HashSet<&str> = rows.iter().map(|r| r.image_id.as_str()).collect();
    let studies: HashSet<&str> = rows.iter().map(|r| r.study.as_str()).collect();
    let mut out = BTreeMap::new();
    for ((name, input), l) in spec.sources.iter().zip(labels) {
        let matched = rows.iter().filter(|r| l.get(r).is_some()).count();
        let c = Coverage {
            rows: l.rows,
            unmatched_ids: l.unmatched(&images, &studies),
            conflicting_ids: l.conflicts,
        };
        let file = match input {
            LabelInput::Csv(p) => p.clone(),
            LabelInput::Dataset => spec.dataset.clone(),
        };
        if matched == 0 && !rows.is_empty() {
            let mut seen: Vec<&str> = rows.iter().take(2).map(|r| r.image_id.as_str()).collect();
            seen.extend(rows.iter().take(2).map(|r| r.study.as_str()));
            return Err(Error::format(
                &file,
                format!(
                    "label source '{name}': none of its {} ids matches an image or study of {} (its ids read as: \
                     {}; the dataset's: {}) — is it keyed for another dataset?",
                    l.rows,
                    spec.dataset.display(),
                    l.examples(),
                    seen.join(", ")
                ),
            ));
        }
        if matched < rows.len() || c.unmatched_ids > 0 || c.conflicting_ids > 0 {
            tracing::warn!(
                "label source '{name}' ({}): labels for {matched} of {} images; {} of its {} ids match no image, \
                 {} given twice with other labels (the later row counts)",
                file.display(),
                rows.len(),
                c.unmatched_ids,
                c.rows,
                c.conflicting_ids
            );
        }
        out.insert(name.clone(), c);
    }
    Ok(out)
}

/// Per source and observation, how many images have each label (positive, negative, uncertain, blank), and per
/// source how many images' studies it has no row for.
struct LabelStats {
    counts: Vec<[[u64; 4]; 14]>,
    missing: Vec<u64>,
}

impl LabelStats {
    fn new(sources: usize) -> Self {
        LabelStats {
            counts: vec![[[0u64; 4]; 14]; sources],
            missing: vec![0; sources],
        }
    }

    /// Counts one image of `study` for every source.
    fn count(&mut self, labels: &[SourceLabels], r: &Row) {
        for (k, map) in labels.iter().enumerate() {
            match map.get(r) {
                Some(l) => {
                    for o in OBSERVATIONS {
                        let c = Label::ALL
                            .iter()
                            .position(|x| *x == l.get(o))
                            .expect("listed");
                        self.counts[k][o.index()][c] += 1;
                    }
                }
                None => {
                    self.missing[k] += 1;
                    for o in OBSERVATIONS {
                        self.counts[k][o.index()][3] += 1;
                    }
                }
            }
        }
    }

    /// The index's `label_stats` and `missing_labels`, keyed by source name.
    #[allow(clippy::type_complexity)]
    fn by_name(
        &self,
        names: &[String],
    ) -> (
        BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
        BTreeMap<String, u64>,
    ) {
        let stats = names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let per: BTreeMap<String, BTreeMap<String, u64>> = OBSERVATIONS
                    .iter()
                    .map(|o| {
                        let c: BTreeMap<String, u64> = Label::ALL
                            .iter()
                            .enumerate()
                            .map(|(i, l)| (l.name().to_string(), self.counts[k][o.index()][i]))
                            .collect();
                        (o.name().to_string(), c)
                    })
                    .collect();
                (n.clone(), per)
            })
            .collect();
        (
            stats,
            names
                .iter()
                .cloned()
                .zip(self.missing.iter().copied())
                .collect(),
        )
    }
}

/// Writes the shards of `spec` into `out` and returns the index.
pub fn write_shards(spec: &ShardSpec, out: &Path) -> Result<ShardIndex> {
    write_shards_verifying(spec, out, false, None)
}

/// [`write_shards`]; `full_hash`: shards finished by an earlier run are kept only when their whole file's SHA-256
/// matches their marker (by default their size and footer checksums are checked, and their pages as they are
/// read: a requeued job does not read every shard again). `stop`, once set (a preemption warning), ends the run
/// before its next shard with [`Error::Stopped`]: the finished shards and their markers stay, the index is not
/// written, and the next run writes only the rest.
pub fn write_shards_verifying(
    spec: &ShardSpec,
    out: &Path,
    full_hash: bool,
    stop: Option<&AtomicBool>,
) -> Result<ShardIndex> {
    check_spec(spec)?;
    let dataset = collect(spec)?;
    let config_hash = spec_hash(spec, &dataset.tables)?;

    let labels = source_labels(spec, dataset.labels.as_ref())?;
    let coverage = coverage(spec, &labels, &dataset.rows)?;
    let rows = plan_splits(dataset.rows, &spec.splits, spec.seed, &spec.dataset)?;

    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let index_path = out.join(INDEX);
    // The index goes before the first file changes (a directory without it is incomplete), not before: a re-run
    // refused early leaves a complete directory complete.
    let mut unindexed = false;
    let mut unindex = || -> Result<()> {
        if !unindexed && index_path.exists() {
            fs::remove_file(&index_path).map_err(|e| Error::io(&index_path, e))?;
        }
        unindexed = true;
        Ok(())
    };
    // Temporary files of a run that was killed before it could remove them.
    remove_ours(out, |name| name.starts_with('.') && name.contains(".tmp-"))?;
    let names: Vec<String> = spec.sources.iter().map(|(n, _)| n.clone()).collect();
    let schema = schema(&names);
    let row_bytes = if spec.pre_resize {
        (spec.image_size as u64).pow(2)
    } else {
        64 * 1024
    } + 100
        + 14 * names.len() as u64;
    let rows_per_shard = ((spec.target_mb.max(0.0) * 1e6) as u64 / row_bytes).max(1);
    let rows_per_group = rows_per_shard.min(((16 << 20) / row_bytes).max(64)) as usize;
    let total: u64 = rows.values().map(|v| v.len() as u64).sum();
    let bar = crate::progress::bar(total, "shard");

    let mut shards = Vec::new();
    let mut splits = BTreeMap::new();
    let mut stats = LabelStats::new(names.len());
    for (split, mut list) in rows {
        // Deterministic shuffle so that every shard is a random sample of its split.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            spec.seed ^ (split as u64 + 1).wrapping_mul(0x9E37_79B9),
        );
        list.shuffle(&mut rng);
        splits.insert(split.name().to_string(), list.len() as u64);
        for r in &list {
            stats.count(&labels, r);
        }
        for (n, chunk) in list.chunks(rows_per_shard as usize).enumerate() {
            let file = format!("{}-{n:05}.parquet", split.name());
            let path = out.join(&file);
            let marker = out.join(format!(".{file}.done.json"));
            if let Some(entry) = finished(&path, &marker, &config_hash, full_hash)? {
                bar.inc(chunk.len() as u64);
                shards.push(entry);
                continue;
            }
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                return Err(Error::Stopped(format!(
                    "{}: {} shard(s) finished and kept, the index not yet written; the same command again writes the rest",
                    out.display(),
                    shards.len()
                )));
            }
            unindex()?;
            let entry = write_one(
                spec,
                &schema,
                &labels,
                chunk,
                rows_per_group,
                &path,
                split,
                &bar,
            )?;
            let done = serde_json::json!({ "config_hash": config_hash, "entry": entry });
            write_atomic(&marker, done.to_string().as_bytes())?;
            shards.push(entry);
        }
    }
    bar.finish_and_clear();
    // Shards of an earlier layout with more of them (a smaller target size, more images) are not part of this
    // one: left in place they would sit beside the index as if they were.
    let keep: HashSet<String> = shards
        .iter()
        .flat_map(|e| {
            [
                e.file.clone(),
                e.page_sums.clone(),
                format!(".{}.done.json", e.file),
            ]
        })
        .collect();
    let orphan = |name: &str| !keep.contains(name) && is_shard_file(name);
    if fs::read_dir(out)
        .map_err(|e| Error::io(out, e))?
        .any(|e| e.is_ok_and(|e| orphan(&e.file_name().to_string_lossy())))
    {
        unindex()?;
        remove_ours(out, orphan)?;
    }
    let (label_stats, missing) = stats.by_name(&names);
    let index = ShardIndex {
        schema_version: SCHEMA_VERSION,
        config_hash,
        encoding: if spec.pre_resize { "pixels" } else { "encoded" }.into(),
        image_size: spec.image_size,
        seed: spec.seed,
        sources: names.clone(),
        shards,
        splits,
        label_stats,
        missing_labels: missing,
        label_coverage: coverage,
    };
    write_atomic(
        &index_path,
        serde_json::to_string_pretty(&index)
            .expect("index serialises")
            .as_bytes(),
    )?;
    Ok(index)
}

/// Whether `name` is a file this writer makes: `<split>-NNNNN.parquet`, its `.sums` and `.done.json` files.
fn is_shard_file(name: &str) -> bool {
    let name = name.trim_start_matches('.');
    let stem = name
        .strip_suffix(".parquet.done.json")
        .or_else(|| name.strip_suffix(".parquet.sums"))
        .or_else(|| name.strip_suffix(".parquet"));
    stem.and_then(|s| s.split_once('-'))
        .is_some_and(|(split, n)| {
            Split::parse(split).is_some_and(|p| p.name() == split)
                && n.len() == 5
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Removes the files of `dir` whose names `ours` picks (only this writer's kinds of names, so a user's own files
/// in the directory stay).
fn remove_ours(dir: &Path, ours: impl Fn(&str) -> bool) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let tmp_of_ours = name
            .split_once(".tmp-")
            .is_some_and(|(base, _)| is_shard_file(base) || base == format!(".{INDEX}"));
        if ours(&name) && (is_shard_file(&name) || tmp_of_ours) && entry.path().is_file() {
            fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// A shard finished by an earlier run with the same config, verified against its marker.
/// `full_hash`: compare the whole file's SHA-256 with the marker, not only its size and footer checksums.
fn finished(
    path: &Path,
    marker: &Path,
    config_hash: &str,
    full_hash: bool,
) -> Result<Option<ShardEntry>> {
    if !path.is_file() || !marker.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(marker).map_err(|e| Error::io(marker, e))?;
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(None);
    };
    if v["config_hash"] != config_hash {
        return Ok(None);
    }
    let Ok(entry) = serde_json::from_value::<ShardEntry>(v["entry"].clone()) else {
        return Ok(None);
    };
    // The marker says this shard was written whole with this config: a different file now is damage, not
    // unfinished work, and rewriting it silently would hide that.
    let altered = |what: String| {
        Error::format(
            path,
            format!(
                "altered since it was written ({what}; its marker {} records {} bytes, SHA-256 {}); delete it to \
                 have chexlab shard write it again",
                marker.display(),
                entry.bytes,
                entry.sha256
            ),
        )
    };
    let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len != entry.bytes {
        return Err(altered(format!("{len} bytes")));
    }
    let sidecar = path.with_file_name(sums::sidecar_name(&entry.file));
    let sums = (!entry.page_sums.is_empty())
        .then(|| sums::Sums::read(&sidecar).ok())
        .flatten()
        .filter(|s| s.file_len() == len);
    if !full_hash && let Some(sums) = &sums {
        // Cheap, as on every requeue of a large job: sizes and the footer's checksums; the pages are checked as
        // they are read.
        sums.verify_metadata(path)?;
        return Ok(Some(entry));
    }
    let sha = sha256_of(path)?;
    if sha != entry.sha256 {
        return Err(altered(format!("SHA-256 {sha}")));
    }
    let mut entry = entry;
    if sums.is_none() {
        // Checksums of a verified shard can be recomputed; the shard need not be rewritten.
        entry.page_sums = write_sums(path)?;
    }
    Ok(Some(entry))
}

/// Computes and writes the page checksums of the shard at `path`; returns the sidecar's file name.
fn write_sums(path: &Path) -> Result<String> {
    let name = sums::sidecar_name(&path.file_name().expect("shard file name").to_string_lossy());
    sums::Sums::compute(path)?.write(&path.with_file_name(&name))?;
    Ok(name)
}

#[allow(clippy::too_many_arguments)]
fn write_one(
    spec: &ShardSpec,
    schema: &Arc<arrow_schema::Schema>,
    labels: &[SourceLabels],
    rows: &[Row],
    rows_per_group: usize,
    path: &Path,
    split: Split,
    bar: &indicatif::ProgressBar,
) -> Result<ShardEntry> {
    // Small image pages (~IMAGE_PAGE_BYTES) so that a reader with the offset index decodes about the rows it
    // selects: a random batch at 224 px would otherwise decode a megabyte page for every 50 kB image it takes.
    let image = ColumnPath::from(super::schema::IMAGE);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows_per_group))
        .set_column_data_page_size_limit(image.clone(), IMAGE_PAGE_BYTES)
        .set_column_dictionary_enabled(image.clone(), false)
        .set_column_statistics_enabled(image, EnabledStatistics::None)
        .build();
    let file = AtomicFile::create(path)?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| Error::parquet(path, e))?;
    for group in rows.chunks(rows_per_group) {
        let images: Vec<Result<(Vec<u8>, u32, u32)>> = group
            .par_iter()
            .map(|r| {
                // Every image is decoded here, once, whatever the shards store: an image that cannot be read
                // is named now, with the line that lists it, not when training reaches it.
                let listed = |e: Error| {
                    Error::record(
                        &r.listed.0,
                        r.listed.1,
                        format!("image {}: {e}", r.image_id),
                    )
                };
                let bytes = fs::read(&r.path).map_err(|e| listed(Error::io(&r.path, e)))?;
                let dims = r.columns.zip(r.rows);
                let side = spec.max_image_side;
                if spec.pre_resize {
                    let px = decode_resize(&r.path, &bytes, dims, spec.image_size, side)
                        .map_err(listed)?;
                    Ok((px, spec.image_size, spec.image_size))
                } else {
                    let (w, h) = decode_dimensions(&r.path, &bytes, dims, side).map_err(listed)?;
                    Ok((bytes, w, h))
                }
            })
            .collect();
        let mut study = StringBuilder::new();
        let mut patient = StringBuilder::new();
        let mut image_id = StringBuilder::new();
        let mut view = StringBuilder::new();
        let mut split_col = StringBuilder::new();
        let mut image = BinaryBuilder::new();
        let mut width = UInt16Builder::new();
        let mut height = UInt16Builder::new();
        let mut label_cols: Vec<Int8Builder> =
            (0..labels.len() * 14).map(|_| Int8Builder::new()).collect();
        for (r, img) in group.iter().zip(images) {
            let (px, w, h) = img?;
            study.append_value(&r.study);
            patient.append_value(&r.patient);
            image_id.append_value(&r.image_id);
            view.append_value(r.view);
            split_col.append_value(r.split.name());
            image.append_value(&px);
            width.append_value(w.min(u16::MAX as u32) as u16);
            height.append_value(h.min(u16::MAX as u32) as u16);
            for (k, map) in labels.iter().enumerate() {
                let row = map.get(r).copied().unwrap_or_default();
                for o in OBSERVATIONS {
                    label_cols[k * 14 + o.index()].append_option(row.get(o).to_i8());
                }
            }
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(study.finish()),
            Arc::new(patient.finish()),
            Arc::new(image_id.finish()),
            Arc::new(view.finish()),
            Arc::new(split_col.finish()),
            Arc::new(image.finish()),
            Arc::new(width.finish()),
            Arc::new(height.finish()),
        ];
        cols.extend(
            label_cols
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        let batch =
            RecordBatch::try_new(schema.clone(), cols).map_err(|e| Error::parquet(path, e))?;
        writer.write(&batch).map_err(|e| Error::parquet(path, e))?;
        bar.inc(group.len() as u64);
    }
    let file = writer.into_inner().map_err(|e| Error::parquet(path, e))?;
    file.commit()?;
    Ok(ShardEntry {
        file: path
            .file_name()
            .expect("shard file name")
            .to_string_lossy()
            .into_owned(),
        split,
        rows: rows.len() as u64,
        bytes: fs::metadata(path).map_err(|e| Error::io(path, e))?.len(),
        sha256: sha256_of(path)?,
        page_sums: write_sums(path)?,
    })
}
