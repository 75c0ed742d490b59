//! Dataset readers: the real CheXpert and MIMIC-CXR-JPG layouts, report section extraction, and the CSV
//! plumbing they share (streaming, bad-record policy, safe relative paths).

pub mod augment;
pub(crate) mod chexpert;
pub(crate) mod csvstream;
pub mod ids;
pub mod image;
pub mod mimic;
pub mod report;
pub mod synth;

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use csvstream::{BadRecords, CsvStream, OnBadRecord, RowParser};
pub use report::SectionChoice;
pub use synth::ImageFormat;

/// The dataset split an image or study belongs to.
#[derive(
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split.
    Train,
    /// The validation split (also spelled `validate`, `validation`, `val`).
    #[value(alias = "validate", alias = "validation", alias = "val")]
    Valid,
    /// The test split.
    Test,
}

impl Split {
    /// All splits in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    /// Parses the spellings in use: `train`, `valid`/`validate`/`validation`, `test`.
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "valid" | "validate" | "validation" | "val" => Some(Split::Valid),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    /// Short name: `train`, `valid`, `test`.
    pub const fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Radiograph view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum View {
    /// Posteroanterior frontal.
    Pa,
    /// Anteroposterior frontal.
    Ap,
    /// Lateral.
    Lateral,
    /// Frontal with unknown direction, or anything else.
    Other,
}

impl View {
    /// Parses DICOM `ViewPosition` values and CheXpert's `Frontal/Lateral` + `AP/PA` spellings.
    pub fn parse(s: &str) -> View {
        match s.trim().to_ascii_uppercase().as_str() {
            "PA" => View::Pa,
            "AP" | "AP AXIAL" | "AP LLD" | "AP RLD" => View::Ap,
            "LATERAL" | "LL" | "LAT" | "RL" => View::Lateral,
            _ => View::Other,
        }
    }

    /// True for PA/AP/other frontal views.
    pub fn is_frontal(self) -> bool {
        !matches!(self, View::Lateral)
    }

    /// Short name used in files: `PA`, `AP`, `LATERAL`, `OTHER`.
    pub const fn name(self) -> &'static str {
        match self {
            View::Pa => "PA",
            View::Ap => "AP",
            View::Lateral => "LATERAL",
            View::Other => "OTHER",
        }
    }
}

/// Checks that `s` is a relative path that stays inside the directory it is joined to: not absolute, no `..`,
/// no root or drive prefix, not empty. Returns it as a `PathBuf`.
pub fn safe_relative_path(s: &str) -> Option<PathBuf> {
    if s.is_empty() || s.starts_with('/') || s.starts_with('\\') || s.contains('\0') {
        return None;
    }
    // A Windows drive ("C:") would make `join` replace the base on Windows; reject it everywhere.
    if s.len() >= 2 && s.as_bytes()[1] == b':' {
        return None;
    }
    let p = Path::new(s);
    let ok = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then(|| p.to_path_buf())
}

/// Which dataset layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// chexlab's synthetic world, generated into `root` (MIMIC-CXR-JPG layout plus truth files).
    Synthetic,
    /// CheXpert (`root` holds `train.csv`, `valid.csv`).
    Chexpert,
    /// MIMIC-CXR-JPG.
    Mimic,
}

/// Dataset section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// The layout.
    pub kind: DatasetKind,
    /// Dataset directory (relative paths are relative to the working directory).
    pub root: PathBuf,
    /// MIMIC only: where the report `.txt` files live, when not under `root`.
    #[serde(default)]
    pub reports_root: Option<PathBuf>,
    /// Which report section the labelers read.
    #[serde(default)]
    pub sections: SectionChoice,
    #[serde(default)]
    /// What readers do with a malformed record.
    pub on_bad_record: OnBadRecord,
    /// Synthetic only: number of studies.
    #[serde(default = "defaults::studies")]
    pub studies: u64,
    /// Synthetic only: rendered image size in pixels.
    #[serde(default = "defaults::synth_image_size")]
    pub image_size: u32,
    /// Synthetic only: image encoding.
    #[serde(default)]
    pub format: ImageFormat,
    /// Synthetic only: how the simulated radiologists write (see [`synth::style`]).
    #[serde(default)]
    pub report_style: synth::ReportStyle,
    /// Synthetic only: how often the realistic styles use the constructions simple rules misread (0..=2; 1 is
    /// calibrated so the rule labeler reads the world about as well as real reports).
    #[serde(default = "synth::style::default_difficulty")]
    pub report_difficulty: f64,
    /// Fraction of the training patients (drawn by `seed`) held out as the validation split.
    #[serde(default)]
    pub holdout_fraction: f64,
    /// The dataset's validation split serves as the test split (CheXpert without `test.csv`; set
    /// `holdout_fraction` for a validation split).
    #[serde(default)]
    pub valid_as_test: bool,
    /// CheXpert's test set: the radiologists' labels of its studies (`groundtruth.csv`, keyed by `Study`, or a
    /// file keyed by image `Path`), relative to `root` or absolute; its images are `root/test/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_labels: Option<PathBuf>,
}

mod defaults {
    pub fn studies() -> u64 {
        3000
    }
    pub fn synth_image_size() -> u32 {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_paths() {
        assert!(
            safe_relative_path("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
                .is_some()
        );
        assert!(safe_relative_path("./a/b.jpg").is_some());
        for bad in [
            "",
            "/etc/passwd",
            "../x.jpg",
            "a/../../x.jpg",
            "a/..",
            "C:/x.jpg",
            "\\\\server\\x",
        ] {
            assert!(safe_relative_path(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn split_and_view_spellings() {
        assert_eq!(Split::parse("validate"), Some(Split::Valid));
        assert_eq!(Split::parse("TEST"), Some(Split::Test));
        assert_eq!(Split::parse("holdout"), None);
        assert_eq!(View::parse("pa"), View::Pa);
        assert_eq!(View::parse("LL"), View::Lateral);
        assert_eq!(View::parse(""), View::Other);
    }
}
