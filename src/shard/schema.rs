//! The shard schema. Every shard is a Parquet file with one row per image:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `study_id` | Utf8 | study identifier (MIMIC study id, CheXpert `patientN/studyN`) |
//! | `patient_id` | Utf8 | patient / subject identifier |
//! | `image_id` | Utf8 | image identifier (DICOM id, or the CheXpert path) |
//! | `view` | Utf8 | `PA`, `AP`, `LATERAL`, `OTHER` |
//! | `split` | Utf8 | `train`, `valid`, `test` |
//! | `image` | Binary | pre-resized 8-bit grayscale pixels, row-major (`encoding = pixels`), or the original file bytes (`encoding = encoded`) |
//! | `width`, `height` | UInt16 | pixel size of `image` (the original size for encoded bytes) |
//! | `lbl_<source>_<observation>` | Int8, nullable | one column per label source and observation: 1 / 0 / -1, null = blank |
//!
//! Observation names are snake case (`pleural_effusion`); the 14 columns of a source come in canonical order.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::data::Split;
use crate::observations::{OBSERVATIONS, Observation};

/// Version of this layout, recorded in `index.json` (2: every shard has page checksums).
pub const SCHEMA_VERSION: u32 = 2;

/// Name of the label column of `source` for `obs`.
pub fn label_column(source: &str, obs: Observation) -> String {
    format!("lbl_{source}_{}", obs.snake_name())
}

/// Column: study identifier.
pub const STUDY_ID: &str = "study_id";
/// Column: patient identifier.
pub const PATIENT_ID: &str = "patient_id";
/// Column: image identifier.
pub const IMAGE_ID: &str = "image_id";
/// Column: view.
pub const VIEW: &str = "view";
/// Column: split.
pub const SPLIT: &str = "split";
/// Column: the image (pixels or encoded bytes).
pub const IMAGE: &str = "image";
/// Column: width of `image`.
pub const WIDTH: &str = "width";
/// Column: height of `image`.
pub const HEIGHT: &str = "height";

/// The fixed columns, in order, with their types.
pub const FIXED: [(&str, DataType); 8] = [
    (STUDY_ID, DataType::Utf8),
    (PATIENT_ID, DataType::Utf8),
    (IMAGE_ID, DataType::Utf8),
    (VIEW, DataType::Utf8),
    (SPLIT, DataType::Utf8),
    (IMAGE, DataType::Binary),
    (WIDTH, DataType::UInt16),
    (HEIGHT, DataType::UInt16),
];

/// The Arrow schema of shards carrying `sources`.
pub fn schema(sources: &[String]) -> Arc<Schema> {
    let mut fields: Vec<Field> = FIXED
        .iter()
        .map(|(name, ty)| Field::new(*name, ty.clone(), false))
        .collect();
    for s in sources {
        for o in OBSERVATIONS {
            fields.push(Field::new(label_column(s, o), DataType::Int8, true));
        }
    }
    Arc::new(Schema::new(fields))
}

/// File name of a shard directory's index.
pub const INDEX: &str = "index.json";

/// One shard in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name.
    pub file: String,
    /// Its split.
    pub split: Split,
    /// Rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Its page checksums' file ([`super::sums`]), in the same directory (empty in the markers of earlier
    /// versions, whose shards get their checksums when `chexlab shard` runs again).
    #[serde(default)]
    pub page_sums: String,
}

/// `index.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardIndex {
    /// Layout version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Hash of the spec and every input table.
    pub config_hash: String,
    /// `pixels` or `encoded`.
    pub encoding: String,
    /// Side of pre-resized images.
    pub image_size: u32,
    /// Shuffle seed.
    pub seed: u64,
    /// Label sources, in column order.
    pub sources: Vec<String>,
    /// The shards.
    pub shards: Vec<ShardEntry>,
    /// Images per split.
    pub splits: BTreeMap<String, u64>,
    /// Per source and observation: counts of positive / negative / uncertain / blank over all images.
    pub label_stats: BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>,
    /// Per source: images the source has no row for, neither the image's nor its study's (their labels are
    /// blank).
    pub missing_labels: BTreeMap<String, u64>,
    /// Per source: how its file met the dataset (absent in indexes of earlier versions).
    #[serde(default)]
    pub label_coverage: BTreeMap<String, Coverage>,
}

/// How a label source's file met the dataset's images.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Rows read.
    pub rows: u64,
    /// Ids (images or studies) that match no image of the dataset.
    pub unmatched_ids: u64,
    /// Ids given more than once with different labels (the later row counts).
    pub conflicting_ids: u64,
}
