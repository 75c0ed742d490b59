//! Reader for the MIMIC-CXR-JPG layout:
//! images `files/p10/p10000032/s50414267/<dicom_id>.jpg`, reports `files/p10/p10000032/s50414267.txt`, and the
//! `mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv(.gz)` tables, every column read by name.
//!
//! The table readers stream. The join ([`MimicLayout::images`], [`MimicLayout::studies`]) keeps one small
//! fixed-size entry per *study* in memory (split and labels keyed by study id; ~30 bytes each, ~7 MB for all of
//! MIMIC-CXR) and streams the per-image metadata.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::data::csvstream::{find_column, require_column};
use crate::data::{BadRecords, CsvStream, OnBadRecord, RowParser, Split, View};
use crate::error::{Error, Result};
use crate::io::find_plain_or_gz;
use crate::observations::{ColumnMap, LabelRow};

/// File names of the MIMIC-CXR-JPG tables (each may also be gzipped).
pub const METADATA_CSV: &str = "mimic-cxr-2.0.0-metadata.csv";
/// The split table.
pub const SPLIT_CSV: &str = "mimic-cxr-2.0.0-split.csv";
/// The CheXpert labeler's labels per study.
pub const CHEXPERT_CSV: &str = "mimic-cxr-2.0.0-chexpert.csv";
/// NegBio's labels per study.
pub const NEGBIO_CSV: &str = "mimic-cxr-2.0.0-negbio.csv";

fn parse_id(path: &Path, line: u64, what: &str, s: &str) -> Result<u64> {
    let s = s.trim();
    // Some exports write ids as floats ("10000032.0").
    let digits = s.strip_suffix(".0").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 12 {
        return Err(Error::record(
            path,
            line,
            format!("{what} '{s}' is not a numeric id"),
        ));
    }
    digits
        .parse()
        .map_err(|_| Error::record(path, line, format!("{what} '{s}' is out of range")))
}

fn parse_dicom_id(path: &Path, line: u64, s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::record(
            path,
            line,
            format!("dicom_id '{s}' is not a file-safe id"),
        ));
    }
    Ok(s.to_string())
}

/// One row of the metadata table: one image.
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataRow {
    /// Line in the metadata table.
    pub line: u64,
    /// DICOM id (the image file's stem).
    pub dicom_id: String,
    /// Patient.
    pub subject_id: u64,
    /// Study.
    pub study_id: u64,
    /// `ViewPosition` as written (may be empty).
    pub view_position: String,
    /// Radiograph view.
    pub view: View,
    /// Image height in pixels, when recorded.
    pub rows: Option<u32>,
    /// Image width in pixels, when recorded.
    pub columns: Option<u32>,
}

/// Parses metadata rows.
pub struct MetadataParser {
    dicom: usize,
    subject: usize,
    study: usize,
    view: Option<usize>,
    rows: Option<usize>,
    columns: Option<usize>,
}

impl RowParser for MetadataParser {
    type Item = MetadataRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<MetadataRow> {
        let dim = |f: Option<usize>, name: &str| -> Result<Option<u32>> {
            match f.map(|i| r[i].trim()).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .strip_suffix(".0")
                    .unwrap_or(v)
                    .parse()
                    .map(Some)
                    .map_err(|_| {
                        Error::record(path, line, format!("{name} '{v}' is not a pixel count"))
                    }),
            }
        };
        let view_position = self
            .view
            .map(|i| r[i].trim().to_string())
            .unwrap_or_default();
        Ok(MetadataRow {
            line,
            dicom_id: parse_dicom_id(path, line, &r[self.dicom])?,
            subject_id: parse_id(path, line, "subject_id", &r[self.subject])?,
            study_id: parse_id(path, line, "study_id", &r[self.study])?,
            view: View::parse(&view_position),
            view_position,
            rows: dim(self.rows, "Rows")?,
            columns: dim(self.columns, "Columns")?,
        })
    }
}

/// Streams `mimic-cxr-2.0.0-metadata.csv(.gz)`.
pub fn read_metadata(path: &Path, policy: OnBadRecord) -> Result<CsvStream<MetadataParser>> {
    CsvStream::open(path, true, false, policy, |p, h| {
        Ok(MetadataParser {
            dicom: require_column(p, h, "dicom_id")?,
            subject: require_column(p, h, "subject_id")?,
            study: require_column(p, h, "study_id")?,
            view: find_column(h, "ViewPosition"),
            rows: find_column(h, "Rows"),
            columns: find_column(h, "Columns"),
        })
    })
}

/// One row of the split table.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitRow {
    /// Line in the split table.
    pub line: u64,
    /// DICOM id.
    pub dicom_id: String,
    /// Patient.
    pub subject_id: u64,
    /// Study.
    pub study_id: u64,
    /// The split the image belongs to.
    pub split: Split,
}

/// Parses split rows.
pub struct SplitParser {
    dicom: usize,
    subject: usize,
    study: usize,
    split: usize,
}

impl RowParser for SplitParser {
    type Item = SplitRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<SplitRow> {
        let split = Split::parse(&r[self.split]).ok_or_else(|| {
            Error::record(
                path,
                line,
                format!("split '{}' is not train/validate/test", &r[self.split]),
            )
        })?;
        Ok(SplitRow {
            line,
            dicom_id: parse_dicom_id(path, line, &r[self.dicom])?,
            subject_id: parse_id(path, line, "subject_id", &r[self.subject])?,
            study_id: parse_id(path, line, "study_id", &r[self.study])?,
            split,
        })
    }
}

/// Streams `mimic-cxr-2.0.0-split.csv(.gz)`.
pub fn read_split(path: &Path, policy: OnBadRecord) -> Result<CsvStream<SplitParser>> {
    CsvStream::open(path, true, false, policy, |p, h| {
        Ok(SplitParser {
            dicom: require_column(p, h, "dicom_id")?,
            subject: require_column(p, h, "subject_id")?,
            study: require_column(p, h, "study_id")?,
            split: require_column(p, h, "split")?,
        })
    })
}

/// One row of a per-study label table (`-chexpert`, `-negbio`, or chexlab's truth files).
#[derive(Clone, Debug, PartialEq)]
pub struct StudyLabelRow {
    /// Line in the label table.
    pub line: u64,
    /// Patient, when the table has the column.
    pub subject_id: Option<u64>,
    /// Study.
    pub study_id: u64,
    /// The study's labels.
    pub labels: LabelRow,
}

/// Parses per-study label rows.
pub struct StudyLabelParser {
    subject: Option<usize>,
    study: usize,
    labels: ColumnMap,
}

impl RowParser for StudyLabelParser {
    type Item = StudyLabelRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<StudyLabelRow> {
        Ok(StudyLabelRow {
            line,
            subject_id: self
                .subject
                .map(|i| parse_id(path, line, "subject_id", &r[i]))
                .transpose()?,
            study_id: parse_id(path, line, "study_id", &r[self.study])?,
            labels: self.labels.parse_row(path, line, r)?,
        })
    }
}

/// Streams a per-study label CSV (`subject_id` optional, `study_id` and the 14 observations by name).
pub fn read_study_labels(path: &Path, policy: OnBadRecord) -> Result<CsvStream<StudyLabelParser>> {
    CsvStream::open(path, true, false, policy, |p, h| {
        Ok(StudyLabelParser {
            subject: find_column(h, "subject_id"),
            study: require_column(p, h, "study_id")?,
            labels: ColumnMap::from_header(p, h.iter())?,
        })
    })
}

/// Reads a per-study label CSV into a map from study id to labels (a later row for the same study wins).
pub fn study_label_map(
    path: &Path,
    policy: OnBadRecord,
) -> Result<(HashMap<u64, LabelRow>, BadRecords)> {
    let mut stream = read_study_labels(path, policy)?;
    let mut map = HashMap::new();
    for row in stream.by_ref() {
        let row = row?;
        map.insert(row.study_id, row.labels);
    }
    Ok((map, stream.bad_records().clone()))
}

/// `pXX/pSUBJECT/sSTUDY` relative to `files/`.
pub fn study_dir(subject_id: u64, study_id: u64) -> PathBuf {
    let subject = subject_id.to_string();
    let group = &subject[..subject.len().min(2)];
    PathBuf::from(format!("files/p{group}/p{subject}/s{study_id}"))
}

/// A MIMIC-CXR-JPG dataset on disk.
#[derive(Clone, Debug)]
pub struct MimicLayout {
    /// The dataset root.
    pub root: PathBuf,
    /// Where `files/.../sSTUDY.txt` reports live (MIMIC-CXR ships them apart from the JPGs); default `root`.
    pub reports_root: PathBuf,
    /// The metadata table (plain or gzipped).
    pub metadata: PathBuf,
    /// The split table.
    pub split: PathBuf,
    /// The CheXpert labeler's table, when present.
    pub chexpert: Option<PathBuf>,
    /// NegBio's table, when present.
    pub negbio: Option<PathBuf>,
    /// Image file extension: `jpg` for MIMIC-CXR-JPG; a synthetic world records its own in `synth.json`.
    pub image_ext: String,
}

/// One image joined with its study's split and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct MimicImage {
    /// The image's metadata row.
    pub meta: MetadataRow,
    /// Its split.
    pub split: Split,
    /// Path relative to the dataset root.
    pub image_path: PathBuf,
    /// Its study's CheXpert-labeler labels, when the dataset has them.
    pub chexpert: Option<LabelRow>,
    /// Its study's NegBio labels, when the dataset has them.
    pub negbio: Option<LabelRow>,
}

/// One study with its split and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct MimicStudy {
    /// Patient.
    pub subject_id: u64,
    /// Study.
    pub study_id: u64,
    /// Its split.
    pub split: Split,
    /// CheXpert-labeler labels, when present.
    pub chexpert: Option<LabelRow>,
    /// NegBio labels, when present.
    pub negbio: Option<LabelRow>,
}

/// File in which a dataset of this layout may name its image extension (`{"image_ext": "png", ...}`): chexlab's
/// synthetic world writes it; MIMIC-CXR-JPG has none, and its images are `jpg`.
pub const LAYOUT_HINT: &str = "synth.json";

/// The image extension a dataset's [`LAYOUT_HINT`] names, if it has one.
fn image_ext_hint(root: &Path) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Hint {
        image_ext: String,
    }
    let path = root.join(LAYOUT_HINT);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let hint: Hint = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    Ok(Some(hint.image_ext))
}

impl MimicLayout {
    /// Finds the tables under `root` (plain or gzipped). Metadata and split are required; label tables optional.
    pub fn open(root: &Path, reports_root: Option<&Path>) -> Result<MimicLayout> {
        if !root.is_dir() {
            return Err(Error::io(
                root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "dataset directory not found"),
            ));
        }
        let optional = |name: &str| find_plain_or_gz(&root.join(name)).ok();
        Ok(MimicLayout {
            root: root.to_path_buf(),
            reports_root: reports_root.unwrap_or(root).to_path_buf(),
            metadata: find_plain_or_gz(&root.join(METADATA_CSV))?,
            split: find_plain_or_gz(&root.join(SPLIT_CSV))?,
            chexpert: optional(CHEXPERT_CSV),
            negbio: optional(NEGBIO_CSV),
            image_ext: image_ext_hint(root)?.unwrap_or_else(|| "jpg".to_string()),
        })
    }

    /// True when `root` looks like a MIMIC-CXR-JPG dataset.
    pub fn detect(root: &Path) -> bool {
        find_plain_or_gz(&root.join(SPLIT_CSV)).is_ok()
            && find_plain_or_gz(&root.join(METADATA_CSV)).is_ok()
    }

    /// Image path relative to the root.
    pub fn image_rel_path(&self, subject_id: u64, study_id: u64, dicom_id: &str) -> PathBuf {
        study_dir(subject_id, study_id).join(format!("{dicom_id}.{}", self.image_ext))
    }

    /// Report path (absolute, under `reports_root`).
    pub fn report_path(&self, subject_id: u64, study_id: u64) -> PathBuf {
        let dir = study_dir(subject_id, study_id);
        self.reports_root.join(dir.with_extension("txt"))
    }

    /// Reads a study's report.
    pub fn read_report(&self, subject_id: u64, study_id: u64) -> Result<String> {
        let path = self.report_path(subject_id, study_id);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        String::from_utf8(bytes).map_err(|e| {
            Error::format(
                &path,
                format!(
                    "report is not UTF-8 (byte {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    }

    fn label_map(
        path: Option<&Path>,
        policy: OnBadRecord,
        bad: &mut BadRecords,
    ) -> Result<HashMap<u64, LabelRow>> {
        match path {
            Some(path) => {
                let (map, skipped) = study_label_map(path, policy)?;
                bad.merge(&skipped);
                Ok(map)
            }
            None => Ok(HashMap::new()),
        }
    }

    /// Split per study. A study whose images are assigned to different splits is an error naming the line.
    fn split_map(
        &self,
        policy: OnBadRecord,
        bad: &mut BadRecords,
    ) -> Result<HashMap<u64, (u64, Split)>> {
        let mut map: HashMap<u64, (u64, Split)> = HashMap::new();
        let mut stream = read_split(&self.split, policy)?;
        for row in stream.by_ref() {
            let row = row?;
            if let Some(&(_, prev)) = map.get(&row.study_id)
                && prev != row.split
            {
                let err = Error::record(
                    &self.split,
                    row.line,
                    format!("study {} is in both {prev} and {}", row.study_id, row.split),
                );
                if policy == OnBadRecord::Skip {
                    bad.note(&err);
                    continue;
                }
                return Err(err);
            }
            map.insert(row.study_id, (row.subject_id, row.split));
        }
        bad.merge(stream.bad_records());
        Ok(map)
    }

    /// Every study listed in the split table, with its labels, in first-appearance order.
    pub fn studies(&self, policy: OnBadRecord) -> Result<(Vec<MimicStudy>, BadRecords)> {
        let mut bad = BadRecords::default();
        let splits = self.split_map(policy, &mut bad)?;
        let chexpert = Self::label_map(self.chexpert.as_deref(), policy, &mut bad)?;
        let negbio = Self::label_map(self.negbio.as_deref(), policy, &mut bad)?;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for row in read_split(&self.split, OnBadRecord::Skip)? {
            let Ok(row) = row else { continue };
            if seen.insert(row.study_id)
                && let Some(&(subject_id, split)) = splits.get(&row.study_id)
            {
                out.push(MimicStudy {
                    subject_id,
                    study_id: row.study_id,
                    split,
                    chexpert: chexpert.get(&row.study_id).copied(),
                    negbio: negbio.get(&row.study_id).copied(),
                });
            }
        }
        Ok((out, bad))
    }

    /// Streams every image of the metadata table joined with its study's split and labels. An image whose study
    /// is missing from the split table is a record error.
    pub fn images(&self, policy: OnBadRecord) -> Result<MimicImages> {
        let mut bad = BadRecords::default();
        let splits = self.split_map(policy, &mut bad)?;
        let chexpert = Self::label_map(self.chexpert.as_deref(), policy, &mut bad)?;
        let negbio = Self::label_map(self.negbio.as_deref(), policy, &mut bad)?;
        Ok(MimicImages {
            layout: self.clone(),
            meta: read_metadata(&self.metadata, policy)?,
            splits,
            chexpert,
            negbio,
            policy,
            bad,
        })
    }
}

/// Iterator returned by [`MimicLayout::images`].
pub struct MimicImages {
    layout: MimicLayout,
    meta: CsvStream<MetadataParser>,
    splits: HashMap<u64, (u64, Split)>,
    chexpert: HashMap<u64, LabelRow>,
    negbio: HashMap<u64, LabelRow>,
    policy: OnBadRecord,
    bad: BadRecords,
}

impl MimicImages {
    /// Everything skipped so far, across all tables.
    pub fn bad_records(&self) -> BadRecords {
        let mut all = self.bad.clone();
        all.merge(self.meta.bad_records());
        all
    }
}

impl Iterator for MimicImages {
    type Item = Result<MimicImage>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let meta = match self.meta.next()? {
                Ok(m) => m,
                Err(e) => return Some(Err(e)),
            };
            let Some(&(_, split)) = self.splits.get(&meta.study_id) else {
                let err = Error::record(
                    self.meta.path(),
                    meta.line,
                    format!(
                        "study {} (dicom {}) is not in the split table",
                        meta.study_id, meta.dicom_id
                    ),
                );
                if self.policy == OnBadRecord::Skip {
                    self.bad.note(&err);
                    continue;
                }
                return Some(Err(err));
            };
            return Some(Ok(MimicImage {
                image_path: self.layout.image_rel_path(
                    meta.subject_id,
                    meta.study_id,
                    &meta.dicom_id,
                ),
                split,
                chexpert: self.chexpert.get(&meta.study_id).copied(),
                negbio: self.negbio.get(&meta.study_id).copied(),
                meta,
            }));
        }
    }
}
