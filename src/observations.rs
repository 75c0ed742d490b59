//! The 14 CheXpert observations, the label values a report labeler produces, and the mapping between the column
//! orders in use. Columns are always mapped by *name*: the CheXpert labeler output, the CheXpert dataset CSVs,
//! the MIMIC-CXR label CSVs and CheXbert's output each order them differently.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Number of observations.
pub const N_OBS: usize = 14;

/// One of the 14 observations, in the CheXpert labeler's column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Observation {
    /// No Finding.
    NoFinding,
    /// Enlarged Cardiomediastinum.
    EnlargedCardiomediastinum,
    /// Cardiomegaly.
    Cardiomegaly,
    /// Lung Lesion.
    LungLesion,
    /// Lung Opacity.
    LungOpacity,
    /// Edema.
    Edema,
    /// Consolidation.
    Consolidation,
    /// Pneumonia.
    Pneumonia,
    /// Atelectasis.
    Atelectasis,
    /// Pneumothorax.
    Pneumothorax,
    /// Pleural Effusion.
    PleuralEffusion,
    /// Pleural Other.
    PleuralOther,
    /// Fracture.
    Fracture,
    /// Support Devices.
    SupportDevices,
}

/// All observations in the CheXpert labeler's column order (the canonical order of [`LabelRow`]).
pub const OBSERVATIONS: [Observation; N_OBS] = [
    Observation::NoFinding,
    Observation::EnlargedCardiomediastinum,
    Observation::Cardiomegaly,
    Observation::LungLesion,
    Observation::LungOpacity,
    Observation::Edema,
    Observation::Consolidation,
    Observation::Pneumonia,
    Observation::Atelectasis,
    Observation::Pneumothorax,
    Observation::PleuralEffusion,
    Observation::PleuralOther,
    Observation::Fracture,
    Observation::SupportDevices,
];

impl Observation {
    /// Canonical name, as in the CheXpert labeler header.
    pub const fn name(self) -> &'static str {
        match self {
            Observation::NoFinding => "No Finding",
            Observation::EnlargedCardiomediastinum => "Enlarged Cardiomediastinum",
            Observation::Cardiomegaly => "Cardiomegaly",
            Observation::LungLesion => "Lung Lesion",
            Observation::LungOpacity => "Lung Opacity",
            Observation::Edema => "Edema",
            Observation::Consolidation => "Consolidation",
            Observation::Pneumonia => "Pneumonia",
            Observation::Atelectasis => "Atelectasis",
            Observation::Pneumothorax => "Pneumothorax",
            Observation::PleuralEffusion => "Pleural Effusion",
            Observation::PleuralOther => "Pleural Other",
            Observation::Fracture => "Fracture",
            Observation::SupportDevices => "Support Devices",
        }
    }

    /// snake_case name, used for identifiers such as Parquet column names and lexicon sections.
    pub fn snake_name(self) -> String {
        self.name().to_ascii_lowercase().replace(' ', "_")
    }

    /// Position in the canonical order.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Looks an observation up by column name. Matching ignores case, spaces, `_` and `-`, so `Pleural Effusion`,
    /// `pleural_effusion` and `PLEURAL-EFFUSION` all match; `Airspace Opacity` (NegBio's name) maps to Lung Opacity.
    pub fn from_name(name: &str) -> Option<Observation> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect();
        if key == "airspaceopacity" {
            return Some(Observation::LungOpacity);
        }
        OBSERVATIONS.into_iter().find(|o| {
            o.name()
                .chars()
                .filter(|c| *c != ' ')
                .flat_map(char::to_lowercase)
                .eq(key.chars())
        })
    }
}

impl fmt::Display for Observation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A report label: what a report says about one observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Label {
    /// `1.0`: the finding is present.
    Positive,
    /// `0.0`: the finding is stated absent.
    Negative,
    /// `-1.0`: the finding is hedged.
    Uncertain,
    /// empty: the finding is not mentioned.
    #[default]
    Blank,
}

impl Label {
    /// All label values, in the order used for per-class metrics.
    pub const ALL: [Label; 4] = [
        Label::Positive,
        Label::Negative,
        Label::Uncertain,
        Label::Blank,
    ];

    /// Parses a CSV cell. Accepts `1`, `1.0`, `0`, `0.0`, `-1`, `-1.0` and empty (surrounding spaces ignored);
    /// anything else is `None`.
    pub fn parse(cell: &str) -> Option<Label> {
        match cell.trim() {
            "" => Some(Label::Blank),
            "1" | "1.0" => Some(Label::Positive),
            "0" | "0.0" | "-0.0" => Some(Label::Negative),
            "-1" | "-1.0" => Some(Label::Uncertain),
            _ => None,
        }
    }

    /// The cell text the CheXpert labeler writes: `1.0`, `0.0`, `-1.0` or empty.
    pub const fn as_csv(self) -> &'static str {
        match self {
            Label::Positive => "1.0",
            Label::Negative => "0.0",
            Label::Uncertain => "-1.0",
            Label::Blank => "",
        }
    }

    /// Compact signed encoding: 1, 0, -1, or `None` for blank (the shard column type).
    pub const fn to_i8(self) -> Option<i8> {
        match self {
            Label::Positive => Some(1),
            Label::Negative => Some(0),
            Label::Uncertain => Some(-1),
            Label::Blank => None,
        }
    }

    /// Inverse of [`Label::to_i8`].
    pub const fn from_i8(v: Option<i8>) -> Option<Label> {
        match v {
            Some(1) => Some(Label::Positive),
            Some(0) => Some(Label::Negative),
            Some(-1) => Some(Label::Uncertain),
            None => Some(Label::Blank),
            Some(_) => None,
        }
    }

    /// Short lower-case name (`positive`, `negative`, `uncertain`, `blank`).
    pub const fn name(self) -> &'static str {
        match self {
            Label::Positive => "positive",
            Label::Negative => "negative",
            Label::Uncertain => "uncertain",
            Label::Blank => "blank",
        }
    }
}

/// The 14 labels of one report or study, in canonical order (index with [`Observation::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct LabelRow(pub [Label; N_OBS]);

impl LabelRow {
    /// The label of one observation.
    pub fn get(&self, obs: Observation) -> Label {
        self.0[obs.index()]
    }

    /// Sets the label of one observation.
    pub fn set(&mut self, obs: Observation, label: Label) {
        self.0[obs.index()] = label;
    }

    /// Combines the labels of a report's statements with the CheXpert labeler's rules. Per observation: negative
    /// and uncertain → uncertain; else a positive wins; else the single kind; nothing → blank. No Finding is
    /// positive when nothing but Support Devices is positive or uncertain, else blank; `NoFinding` items stand for
    /// other abnormalities and only take part in that test.
    pub fn aggregate(items: impl IntoIterator<Item = (Observation, Label)>) -> LabelRow {
        let mut seen = [[false; 3]; N_OBS];
        let mut no_finding = true;
        for (o, l) in items {
            let k = match l {
                Label::Positive => 0,
                Label::Negative => 1,
                Label::Uncertain => 2,
                Label::Blank => continue,
            };
            if o != Observation::SupportDevices && k != 1 {
                no_finding = false;
            }
            seen[o.index()][k] = true;
        }
        let mut row = LabelRow::default();
        for o in OBSERVATIONS {
            let [p, n, u] = seen[o.index()];
            row.0[o.index()] = match (p, n, u) {
                (_, true, true) => Label::Uncertain,
                (true, _, _) => Label::Positive,
                (_, true, _) => Label::Negative,
                (_, _, true) => Label::Uncertain,
                _ => Label::Blank,
            };
        }
        row.set(
            Observation::NoFinding,
            if no_finding {
                Label::Positive
            } else {
                Label::Blank
            },
        );
        row
    }
}

/// A column order in use by one of the file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnOrder {
    /// The CheXpert labeler's output (`Reports` + the 14 in canonical order).
    ChexpertLabeler,
    /// The CheXpert dataset's `train.csv` / `valid.csv` (Lung Opacity before Lung Lesion).
    ChexpertDataset,
    /// MIMIC-CXR's `mimic-cxr-2.0.0-chexpert.csv` / `-negbio.csv` (alphabetical).
    Mimic,
    /// CheXbert's output (No Finding last).
    Chexbert,
}

impl ColumnOrder {
    /// The observations in this order.
    pub fn observations(self) -> [Observation; N_OBS] {
        use Observation::*;
        match self {
            ColumnOrder::ChexpertLabeler => OBSERVATIONS,
            ColumnOrder::ChexpertDataset => [
                NoFinding,
                EnlargedCardiomediastinum,
                Cardiomegaly,
                LungOpacity,
                LungLesion,
                Edema,
                Consolidation,
                Pneumonia,
                Atelectasis,
                Pneumothorax,
                PleuralEffusion,
                PleuralOther,
                Fracture,
                SupportDevices,
            ],
            ColumnOrder::Mimic => {
                let mut all = OBSERVATIONS;
                all.sort_by_key(|o| o.name());
                all
            }
            // CheXbert writes the dataset order with No Finding moved to the end.
            ColumnOrder::Chexbert => {
                let mut order = ColumnOrder::ChexpertDataset.observations();
                order.rotate_left(1);
                order
            }
        }
    }
}

/// Where each observation's column sits in a CSV header, found by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    /// `fields[obs.index()]` = field position of that observation.
    fields: [usize; N_OBS],
    names: [String; N_OBS],
}

impl ColumnMap {
    /// Finds the 14 observation columns in `header` by name (see [`Observation::from_name`]). Every observation
    /// must be present exactly once; `path` is used in the error.
    pub fn from_header<'a>(
        path: &Path,
        header: impl IntoIterator<Item = &'a str>,
    ) -> Result<ColumnMap> {
        let mut fields = [usize::MAX; N_OBS];
        let mut names: [String; N_OBS] = Default::default();
        let mut found = Vec::new();
        for (i, name) in header.into_iter().enumerate() {
            found.push(name.to_string());
            if let Some(obs) = Observation::from_name(name) {
                if fields[obs.index()] != usize::MAX {
                    return Err(Error::format(
                        path,
                        format!(
                            "observation '{obs}' appears in two columns ('{}' and '{name}')",
                            names[obs.index()]
                        ),
                    ));
                }
                fields[obs.index()] = i;
                names[obs.index()] = name.to_string();
            }
        }
        let missing: Vec<String> = OBSERVATIONS
            .iter()
            .filter(|o| fields[o.index()] == usize::MAX)
            .map(|o| o.name().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingColumns {
                path: path.to_path_buf(),
                missing,
                found,
            });
        }
        Ok(ColumnMap { fields, names })
    }

    /// Field position of an observation.
    pub fn field(&self, obs: Observation) -> usize {
        self.fields[obs.index()]
    }

    /// Parses the 14 labels out of a record; errors name `path`, `line` and the column.
    pub fn parse_row(
        &self,
        path: &Path,
        line: u64,
        record: &csv::StringRecord,
    ) -> Result<LabelRow> {
        let mut row = LabelRow::default();
        for obs in OBSERVATIONS {
            let cell = record.get(self.fields[obs.index()]).unwrap_or("");
            row.0[obs.index()] = Label::parse(cell).ok_or_else(|| Error::LabelValue {
                path: path.to_path_buf(),
                line,
                column: self.names[obs.index()].clone(),
                value: cell.to_string(),
            })?;
        }
        Ok(row)
    }
}

/// How uncertain (`-1`) labels enter the loss.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UncertaintyPolicy {
    /// Masked out of the loss.
    #[default]
    Ignore,
    /// Treated as negative.
    Zeros,
    /// Treated as positive.
    Ones,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for o in OBSERVATIONS {
            assert_eq!(Observation::from_name(o.name()), Some(o));
            assert_eq!(Observation::from_name(&o.snake_name()), Some(o));
            assert_eq!(Observation::from_name(&o.name().to_uppercase()), Some(o));
        }
        assert_eq!(
            Observation::from_name("Airspace Opacity"),
            Some(Observation::LungOpacity)
        );
        assert_eq!(Observation::from_name("Reports"), None);
        assert_eq!(Observation::from_name("Lung"), None);
    }

    #[test]
    fn label_parsing_accepts_exactly_the_documented_forms() {
        for (s, l) in [
            ("1", Label::Positive),
            ("1.0", Label::Positive),
            ("0", Label::Negative),
            ("0.0", Label::Negative),
            ("-1", Label::Uncertain),
            ("-1.0", Label::Uncertain),
            ("", Label::Blank),
            (" 1.0 ", Label::Positive),
        ] {
            assert_eq!(Label::parse(s), Some(l), "{s:?}");
        }
        for bad in ["2", "yes", "1.5", "-", "nan", "0.5", "true"] {
            assert_eq!(Label::parse(bad), None, "{bad:?}");
        }
        for l in Label::ALL {
            assert_eq!(Label::parse(l.as_csv()), Some(l));
            assert_eq!(Label::from_i8(l.to_i8()), Some(l));
        }
    }

    #[test]
    fn aggregation_follows_the_original_rules() {
        use Label::*;
        use Observation::*;
        let row = LabelRow::aggregate([
            (Edema, Negative),
            (Edema, Uncertain),
            (Atelectasis, Negative),
            (Atelectasis, Positive),
            (Consolidation, Uncertain),
            (Consolidation, Positive),
            (Pneumonia, Positive),
            (Pneumonia, Negative),
            (Pneumonia, Uncertain),
            (Pneumothorax, Negative),
        ]);
        assert_eq!(row.get(Edema), Uncertain);
        assert_eq!(row.get(Atelectasis), Positive);
        assert_eq!(row.get(Consolidation), Positive);
        assert_eq!(row.get(Pneumonia), Uncertain);
        assert_eq!(row.get(Pneumothorax), Negative);
        assert_eq!(row.get(Fracture), Blank);
        assert_eq!(row.get(NoFinding), Blank);
        // Devices and negatives leave No Finding; another abnormality (a NoFinding item) rules it out.
        let row = LabelRow::aggregate([(SupportDevices, Positive), (Pneumothorax, Negative)]);
        assert_eq!(row.get(NoFinding), Positive);
        assert_eq!(LabelRow::aggregate([]).get(NoFinding), Positive);
        let row = LabelRow::aggregate([(NoFinding, Positive)]);
        assert_eq!(row.get(NoFinding), Blank);
    }

    #[test]
    fn every_order_is_a_permutation() {
        for order in [
            ColumnOrder::ChexpertLabeler,
            ColumnOrder::ChexpertDataset,
            ColumnOrder::Mimic,
            ColumnOrder::Chexbert,
        ] {
            let mut obs = order.observations();
            obs.sort();
            assert_eq!(obs, OBSERVATIONS, "{order:?}");
        }
        assert_eq!(
            ColumnOrder::Mimic.observations()[0],
            Observation::Atelectasis
        );
        assert_eq!(
            ColumnOrder::Mimic.observations()[13],
            Observation::SupportDevices
        );
    }

    #[test]
    fn column_map_maps_by_name_whatever_the_order() {
        let p = Path::new("x.csv");
        for order in [
            ColumnOrder::ChexpertDataset,
            ColumnOrder::Mimic,
            ColumnOrder::Chexbert,
        ] {
            let mut header = vec!["study_id".to_string()];
            header.extend(order.observations().iter().map(|o| o.name().to_string()));
            let map = ColumnMap::from_header(p, header.iter().map(String::as_str)).unwrap();
            // A record whose cell for each observation is 1 only for Edema.
            let mut cells = vec!["s1".to_string()];
            cells.extend(
                order
                    .observations()
                    .iter()
                    .map(|o| if *o == Observation::Edema { "1.0" } else { "" }.to_string()),
            );
            let rec = csv::StringRecord::from(cells);
            let row = map.parse_row(p, 2, &rec).unwrap();
            for o in OBSERVATIONS {
                let want = if o == Observation::Edema {
                    Label::Positive
                } else {
                    Label::Blank
                };
                assert_eq!(row.get(o), want, "{order:?} {o}");
            }
        }
    }

    #[test]
    fn column_map_errors_name_file_line_and_column() {
        let p = Path::new("labels.csv");
        let header: Vec<&str> = OBSERVATIONS.iter().map(|o| o.name()).collect();
        let map = ColumnMap::from_header(p, header.iter().copied()).unwrap();
        let mut cells = vec![""; N_OBS];
        cells[5] = "maybe";
        let err = map
            .parse_row(p, 7, &csv::StringRecord::from(cells))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("labels.csv") && err.contains("line 7") && err.contains("'Edema'"),
            "{err}"
        );
        assert!(err.contains("maybe"), "{err}");

        let err = ColumnMap::from_header(p, header[..13].iter().copied())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing column(s) Support Devices"), "{err}");
        let mut dup = header.clone();
        dup.push("edema");
        let err = ColumnMap::from_header(p, dup.iter().copied())
            .unwrap_err()
            .to_string();
        assert!(err.contains("two columns"), "{err}");
    }
}
