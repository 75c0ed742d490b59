//! Gold labels in the ChestX-ray14 categories, as NIH ChestX-ray14 and OpenI (through NegBio) ship them: the 14
//! findings plus `normal`, either one 0/1 column each (`filename,Atelectasis,...,Hernia,normal`) or NIH's pipe list
//! (`Image Index,Finding Labels,...` with `Cardiomegaly|Effusion` or `No Finding`).
//!
//! Mapped onto CheXpert's observations (ten of them; the other four have no gold and are left out):
//!
//! | ChestX-ray14 | CheXpert |
//! |---|---|
//! | Atelectasis, Cardiomegaly, Pneumonia, Pneumothorax, Consolidation, Edema | the same name |
//! | Effusion | Pleural Effusion |
//! | Mass, Nodule | Lung Lesion (either one) |
//! | Pleural_Thickening | Pleural Other |
//! | normal (`No Finding`) | No Finding |
//!
//! Infiltration, Emphysema, Fibrosis and Hernia map onto nothing. CheXpert's definitions differ in places (its
//! Pleural Other includes fibrosis, which the gold counts apart): the labeler keeps CheXpert's semantics.

use std::collections::HashMap;
use std::path::Path;

use crate::data::{CsvStream, OnBadRecord, RowParser};
use crate::error::{Error, Result};
use crate::observations::{Label, LabelRow, Observation};

/// The ChestX-ray14 categories and the CheXpert observation each maps onto.
pub const MAPPING: [(&str, Option<Observation>); 15] = [
    ("Atelectasis", Some(Observation::Atelectasis)),
    ("Cardiomegaly", Some(Observation::Cardiomegaly)),
    ("Effusion", Some(Observation::PleuralEffusion)),
    ("Infiltration", None),
    ("Mass", Some(Observation::LungLesion)),
    ("Nodule", Some(Observation::LungLesion)),
    ("Pneumonia", Some(Observation::Pneumonia)),
    ("Pneumothorax", Some(Observation::Pneumothorax)),
    ("Consolidation", Some(Observation::Consolidation)),
    ("Edema", Some(Observation::Edema)),
    ("Emphysema", None),
    ("Fibrosis", None),
    ("Pleural_Thickening", Some(Observation::PleuralOther)),
    ("Hernia", None),
    ("normal", Some(Observation::NoFinding)),
];

/// Id columns of gold files, in the order they are looked for.
const ID_COLUMNS: [&str; 5] = ["filename", "Image Index", "id", "study_id", "image_id"];

/// The CheXpert observations the gold labels, in canonical order.
pub fn observations() -> Vec<Observation> {
    let mut obs: Vec<Observation> = MAPPING.iter().filter_map(|(_, o)| *o).collect();
    obs.sort();
    obs.dedup();
    obs
}

/// The CheXpert observation of a category name (underscores or spaces; `No Finding` is `normal`).
fn category(name: &str) -> Option<Option<Observation>> {
    let name = name.trim().replace(' ', "_");
    if name.eq_ignore_ascii_case("No_Finding") {
        return Some(Some(Observation::NoFinding));
    }
    MAPPING
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(&name))
        .map(|(_, o)| *o)
}

/// Whether a CSV header is a ChestX-ray14-category gold file: most of the categories as columns (and not
/// CheXpert's own names), or NIH's `Finding Labels`.
pub fn is_gold_header<S: AsRef<str>>(header: &[S]) -> bool {
    let has = |n: &str| header.iter().any(|h| h.as_ref().trim() == n);
    if has("Finding Labels") {
        return true;
    }
    let categories = MAPPING.iter().filter(|(c, _)| has(c)).count();
    categories >= 8 && !has("Pleural Effusion") && !has("Lung Lesion")
}

/// One gold row: its line and its labels (mapped observations positive or negative, the others blank).
#[derive(Clone, Debug, PartialEq)]
pub struct GoldRow {
    /// 1-based line in the file.
    pub line: u64,
    /// The labels.
    pub labels: LabelRow,
}

/// Parses gold records once the header has said where the id, the pipe list and the category columns are.
struct GoldParser {
    header: Vec<String>,
    id: usize,
    pipe: Option<usize>,
    columns: Vec<(usize, Observation)>,
}

impl GoldParser {
    fn new(path: &Path, header: &csv::StringRecord) -> Result<Self> {
        let header: Vec<String> = header
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        let id = ID_COLUMNS
            .iter()
            .find_map(|c| header.iter().position(|h| h == c))
            .ok_or_else(|| Error::MissingColumns {
                path: path.to_path_buf(),
                missing: vec![ID_COLUMNS.join(" or ")],
                found: header.clone(),
            })?;
        Ok(GoldParser {
            id,
            pipe: header.iter().position(|h| h == "Finding Labels"),
            columns: header
                .iter()
                .enumerate()
                .filter_map(|(k, h)| category(h).flatten().map(|o| (k, o)))
                .collect(),
            header,
        })
    }
}

impl RowParser for GoldParser {
    type Item = (String, GoldRow);

    fn parse(&mut self, path: &Path, line: u64, rec: &csv::StringRecord) -> Result<Self::Item> {
        let mut labels = LabelRow::default();
        for o in observations() {
            labels.set(o, Label::Negative);
        }
        if let Some(k) = self.pipe {
            for name in rec[k].split('|').filter(|s| !s.trim().is_empty()) {
                match category(name) {
                    Some(Some(o)) => labels.set(o, Label::Positive),
                    Some(None) => {}
                    None => {
                        return Err(Error::record(
                            path,
                            line,
                            format!("'{name}' is not a ChestX-ray14 category"),
                        ));
                    }
                }
            }
        }
        for &(k, o) in &self.columns {
            match rec[k].trim() {
                "1" | "1.0" => labels.set(o, Label::Positive),
                "0" | "0.0" | "" => {}
                v => {
                    return Err(Error::LabelValue {
                        path: path.to_path_buf(),
                        line,
                        column: self.header[k].clone(),
                        value: v.to_string(),
                    });
                }
            }
        }
        Ok((rec[self.id].trim().to_string(), GoldRow { line, labels }))
    }
}

/// Reads a gold file into rows by id (through the shared CSV stream, so line numbers are true in CRLF files too).
pub fn read(path: &Path) -> Result<HashMap<String, GoldRow>> {
    let rows = CsvStream::open(path, true, false, OnBadRecord::Fail, GoldParser::new)?;
    let mut out = HashMap::new();
    for row in rows {
        let (key, row) = row?;
        let line = row.line;
        if out.insert(key.clone(), row).is_some() {
            return Err(Error::record(
                path,
                line,
                format!("id '{key}' appears twice"),
            ));
        }
    }
    Ok(out)
}

/// The gold row of a prediction's id: the id itself, else without a file extension on either side
/// (`00000001_000.png` and `00000001_000`).
pub fn find<'a>(gold: &'a HashMap<String, GoldRow>, id: &str) -> Option<&'a GoldRow> {
    let stem = |s: &str| {
        s.rsplit_once('.')
            .map_or(s.to_string(), |(a, _)| a.to_string())
    };
    gold.get(id).or_else(|| gold.get(&stem(id))).or_else(|| {
        ["png", "jpg", "dcm"]
            .iter()
            .find_map(|e| gold.get(&format!("{id}.{e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_pipe_lists_map_onto_chexpert() {
        let dir = tempfile::tempdir().unwrap();
        let cols = dir.path().join("gold.csv");
        std::fs::write(
            &cols,
            "filename,Atelectasis,Cardiomegaly,Effusion,Infiltration,Mass,Nodule,Pneumonia,Pneumothorax,\
             Consolidation,Edema,Emphysema,Fibrosis,Pleural_Thickening,Hernia,normal\n\
             CXR1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1\n\
             CXR2,0,1,1,1,0,1,0,0,0,0,0,1,1,0,0\n",
        )
        .unwrap();
        let header = std::fs::read_to_string(&cols).unwrap();
        let header: Vec<&str> = header.lines().next().unwrap().split(',').collect();
        assert!(is_gold_header(&header));
        let g = read(&cols).unwrap();
        let (a, b) = (&g["CXR1"].labels, &g["CXR2"].labels);
        assert_eq!(a.get(Observation::NoFinding), Label::Positive);
        assert_eq!(a.get(Observation::Cardiomegaly), Label::Negative);
        assert_eq!(b.get(Observation::NoFinding), Label::Negative);
        assert_eq!(b.get(Observation::PleuralEffusion), Label::Positive);
        assert_eq!(b.get(Observation::LungLesion), Label::Positive, "Nodule");
        assert_eq!(b.get(Observation::PleuralOther), Label::Positive);
        // No gold for the four unmapped observations.
        assert_eq!(b.get(Observation::LungOpacity), Label::Blank);
        assert_eq!(observations().len(), 10);

        let pipe = dir.path().join("nih.csv");
        std::fs::write(
            &pipe,
            "Image Index,Finding Labels,Patient ID\n00000001_000.png,Cardiomegaly|Emphysema,1\n\
             00000002_000.png,No Finding,2\n",
        )
        .unwrap();
        let g = read(&pipe).unwrap();
        let row = find(&g, "00000001_000").unwrap();
        assert_eq!(row.labels.get(Observation::Cardiomegaly), Label::Positive);
        assert_eq!(
            find(&g, "00000002_000.png")
                .unwrap()
                .labels
                .get(Observation::NoFinding),
            Label::Positive
        );
    }

    #[test]
    fn bad_cells_name_their_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gold.csv");
        std::fs::write(
            &p,
            "filename,Atelectasis,Cardiomegaly,Effusion,Mass,Nodule,Pneumonia,Pneumothorax,Consolidation,Edema,normal\n\
             CXR1,0,0,0,0,0,0,0,0,0,1\nCXR2,0,yes,0,0,0,0,0,0,0,0\n",
        )
        .unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("Cardiomegaly"),
            "{err}"
        );
        // The same file with CRLF line ends names the same line.
        let crlf = dir.path().join("crlf.csv");
        std::fs::write(
            &crlf,
            std::fs::read_to_string(&p).unwrap().replace('\n', "\r\n"),
        )
        .unwrap();
        let err = read(&crlf).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("Cardiomegaly"),
            "{err}"
        );
    }
}
