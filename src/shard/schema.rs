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

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

use crate::observations::{OBSERVATIONS, Observation};

/// Version of this layout, recorded in `index.json`.
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the label column of `source` for `obs`.
pub fn label_column(source: &str, obs: Observation) -> String {
    format!("lbl_{source}_{}", obs.snake_name())
}

/// The fixed columns, in order.
pub const FIXED: [&str; 8] = [
    "study_id",
    "patient_id",
    "image_id",
    "view",
    "split",
    "image",
    "width",
    "height",
];

/// The Arrow schema of shards carrying `sources`.
pub fn schema(sources: &[String]) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("study_id", DataType::Utf8, false),
        Field::new("patient_id", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("view", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("image", DataType::Binary, false),
        Field::new("width", DataType::UInt16, false),
        Field::new("height", DataType::UInt16, false),
    ];
    for s in sources {
        for o in OBSERVATIONS {
            fields.push(Field::new(label_column(s, o), DataType::Int8, true));
        }
    }
    Arc::new(Schema::new(fields))
}
