//! Reader for the CheXpert dataset's `train.csv` / `valid.csv`:
//! `Path,Sex,Age,Frontal/Lateral,AP/PA,<14 observations>`, with `Path` like
//! `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`.

use std::path::{Path, PathBuf};

use crate::data::csvstream::{find_column, require_column};
use crate::data::{CsvStream, OnBadRecord, RowParser, Split, View, safe_relative_path};
use crate::error::{Error, Result};
use crate::observations::{ColumnMap, LabelRow};

/// One row of a CheXpert CSV: one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ChexpertImage {
    /// Line of the record in its CSV (for messages).
    pub line: u64,
    /// `Path` exactly as in the CSV.
    pub path: String,
    /// Split named in the path (`train`, `valid`, `test`).
    pub split: Split,
    /// Patient folder, e.g. `patient00001`.
    pub patient: String,
    /// Study folder, e.g. `study1`.
    pub study: String,
    /// Image file stem, e.g. `view1_frontal`.
    pub view_name: String,
    /// View from `Frontal/Lateral` and `AP/PA` (or from the file name when those columns are absent).
    pub view: View,
    /// `Sex`, when present and not empty.
    pub sex: Option<String>,
    /// `Age`, when present and not empty.
    pub age: Option<u32>,
    /// The 14 labels.
    pub labels: LabelRow,
}

impl ChexpertImage {
    /// Study identifier unique across the dataset: `patient00001/study1`.
    pub fn study_id(&self) -> String {
        format!("{}/{}", self.patient, self.study)
    }

    /// The image file on disk, given the directory that holds `train.csv` (e.g. `.../CheXpert-v1.0-small`):
    /// the CSV path's first component is that directory's own name, so it is dropped.
    pub fn image_path(&self, root: &Path) -> PathBuf {
        let mut parts = Path::new(&self.path).components();
        parts.next();
        root.join(parts.as_path())
    }
}

/// Parses CheXpert rows.
pub struct ChexpertParser {
    path: usize,
    sex: Option<usize>,
    age: Option<usize>,
    frontal_lateral: Option<usize>,
    ap_pa: Option<usize>,
    labels: ColumnMap,
}

impl ChexpertParser {
    fn from_header(path: &Path, header: &csv::StringRecord) -> Result<Self> {
        Ok(ChexpertParser {
            path: require_column(path, header, "Path")?,
            sex: find_column(header, "Sex"),
            age: find_column(header, "Age"),
            frontal_lateral: find_column(header, "Frontal/Lateral"),
            ap_pa: find_column(header, "AP/PA"),
            labels: ColumnMap::from_header(path, header.iter())?,
        })
    }
}

fn non_empty(record: &csv::StringRecord, field: Option<usize>) -> Option<&str> {
    field
        .and_then(|i| record.get(i))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Splits a CheXpert `Path` into (split, patient, study, file stem), checking that it stays inside the dataset.
pub fn parse_image_path(s: &str) -> std::result::Result<(Split, String, String, String), String> {
    let rel =
        safe_relative_path(s).ok_or_else(|| format!("path '{s}' escapes the dataset root"))?;
    let parts: Vec<&str> = rel
        .iter()
        .filter_map(|c| c.to_str())
        .filter(|c| *c != ".")
        .collect();
    let [_, split, patient, study, file] = parts[..] else {
        return Err(format!(
            "path '{s}' is not <root>/<split>/patientNNNNN/studyN/<view>.jpg"
        ));
    };
    let split =
        Split::parse(split).ok_or_else(|| format!("path '{s}': unknown split folder '{split}'"))?;
    let numbered = |v: &str, prefix: &str| {
        v.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if !numbered(patient, "patient") {
        return Err(format!("path '{s}': '{patient}' is not patientNNNNN"));
    }
    if !numbered(study, "study") {
        return Err(format!("path '{s}': '{study}' is not studyN"));
    }
    let stem = file
        .rsplit_once('.')
        .filter(|(_, ext)| matches!(ext.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .map(|(stem, _)| stem)
        .ok_or_else(|| format!("path '{s}': not a .jpg/.png image"))?;
    Ok((
        split,
        patient.to_string(),
        study.to_string(),
        stem.to_string(),
    ))
}

impl RowParser for ChexpertParser {
    type Item = ChexpertImage;

    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<ChexpertImage> {
        let img_path = r.get(self.path).unwrap_or("").trim();
        let (split, patient, study, view_name) =
            parse_image_path(img_path).map_err(|m| Error::record(path, line, m))?;
        let age = match non_empty(r, self.age) {
            None => None,
            Some(a) => Some(
                a.parse::<f32>()
                    .ok()
                    .filter(|v| (0.0..=150.0).contains(v))
                    .ok_or_else(|| {
                        Error::record(path, line, format!("Age '{a}' is not an age in years"))
                    })? as u32,
            ),
        };
        let view = match (non_empty(r, self.frontal_lateral), non_empty(r, self.ap_pa)) {
            (Some(fl), _) if fl.eq_ignore_ascii_case("lateral") => View::Lateral,
            (Some(_), Some(ap_pa)) => View::parse(ap_pa),
            (Some(_), None) => View::Other,
            (None, _) if view_name.contains("lateral") => View::Lateral,
            (None, _) => View::Other,
        };
        Ok(ChexpertImage {
            line,
            path: img_path.to_string(),
            split,
            patient,
            study,
            view_name,
            view,
            sex: non_empty(r, self.sex).map(str::to_string),
            age,
            labels: self.labels.parse_row(path, line, r)?,
        })
    }
}

/// Streams the images of a CheXpert CSV.
pub fn read_csv(path: &Path, policy: OnBadRecord) -> Result<CsvStream<ChexpertParser>> {
    CsvStream::open(path, true, false, policy, ChexpertParser::from_header)
}

/// The CSVs of a CheXpert dataset directory (the folder holding `train.csv` and `valid.csv`).
pub fn dataset_csvs(root: &Path) -> Result<Vec<PathBuf>> {
    let csvs: Vec<PathBuf> = ["train.csv", "valid.csv", "test.csv"]
        .iter()
        .map(|f| root.join(f))
        .filter(|p| p.is_file())
        .collect();
    if csvs.is_empty() {
        return Err(Error::format(
            root,
            "not a CheXpert dataset: no train.csv / valid.csv",
        ));
    }
    Ok(csvs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::{Label, Observation};

    const HEADER: &str = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,\
Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,\
Fracture,Support Devices";

    #[test]
    fn parses_paths() {
        let (split, p, s, v) =
            parse_image_path("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
                .unwrap();
        assert_eq!(
            (split, p.as_str(), s.as_str(), v.as_str()),
            (Split::Train, "patient00001", "study1", "view1_frontal")
        );
        for bad in [
            "../train/patient00001/study1/view1_frontal.jpg",
            "/abs/CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient00001/../../../etc/passwd",
            "CheXpert-v1.0/train/patient00001/view1_frontal.jpg",
            "CheXpert-v1.0/train/pat1/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient00001/study1/view1_frontal.txt",
            "CheXpert-v1.0/holdout/patient00001/study1/view1_frontal.jpg",
        ] {
            assert!(parse_image_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_rows_with_dataset_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("valid.csv");
        // Lung Opacity (4th label column) = 1.0, Lung Lesion (5th) = -1.0: mapping by name must keep them apart.
        std::fs::write(
            &p,
            format!(
                "{HEADER}\n\
                 CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,,1.0,,1.0,-1.0,,,,,,,,,1.0\n\
                 CheXpert-v1.0-small/valid/patient64541/study1/view2_lateral.jpg,Male,73,Lateral,,1.0,,,,,,,,,,,,,\n"
            ),
        )
        .unwrap();
        let rows: Vec<ChexpertImage> = read_csv(&p, OnBadRecord::Fail)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(a.split, Split::Valid);
        assert_eq!(a.study_id(), "patient64541/study1");
        assert_eq!(a.view, View::Ap);
        assert_eq!(a.age, Some(73));
        assert_eq!(a.labels.get(Observation::LungOpacity), Label::Positive);
        assert_eq!(a.labels.get(Observation::LungLesion), Label::Uncertain);
        assert_eq!(
            a.labels.get(Observation::EnlargedCardiomediastinum),
            Label::Positive
        );
        assert_eq!(a.labels.get(Observation::SupportDevices), Label::Positive);
        assert_eq!(a.labels.get(Observation::NoFinding), Label::Blank);
        assert_eq!(rows[1].view, View::Lateral);
        assert_eq!(rows[1].labels.get(Observation::NoFinding), Label::Positive);
        assert_eq!(
            a.image_path(Path::new("/data/CheXpert-v1.0-small")),
            Path::new("/data/CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
        );
    }

    #[test]
    fn escaping_path_is_an_error_naming_file_and_line_and_skip_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.csv");
        let labels = ",".repeat(13);
        std::fs::write(
            &p,
            format!(
                "{HEADER}\n\
                 CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,60,Frontal,PA,{labels}\n\
                 CheXpert-v1.0-small/train/../../secret.jpg,Female,60,Frontal,PA,{labels}\n\
                 CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Female,sixty,Frontal,PA,{labels}\n\
                 CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Female,60,Frontal,PA,{labels}\n"
            ),
        )
        .unwrap();
        let err = read_csv(&p, OnBadRecord::Fail)
            .unwrap()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(
            err.contains("train.csv: line 3") && err.contains("escapes the dataset root"),
            "{err}"
        );
        let mut s = read_csv(&p, OnBadRecord::Skip).unwrap();
        let ok: Vec<_> = s.by_ref().map(Result::unwrap).collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(s.bad_records().skipped, 2);
        assert!(
            s.bad_records().examples[1].contains("Age 'sixty'"),
            "{:?}",
            s.bad_records()
        );
    }

    #[test]
    fn missing_dataset_is_clear() {
        let dir = tempfile::tempdir().unwrap();
        let err = dataset_csvs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a CheXpert dataset"), "{err}");
    }
}
