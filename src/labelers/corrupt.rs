//! Labels made worse on purpose, at known rates: the label source `kind = "corrupted"` derives its labels from a
//! base source's by missing positives (→ negative), turning positives uncertain, and adding false positives, so
//! that the study can measure how classifier AUROC falls as label quality falls (the dose–response).
//!
//! Each cell draws one uniform number from a generator keyed by the seed, the study and the observation — not by
//! the rates — so sources corrupted from one base at rising rates are nested (every label wrong at a lower rate is
//! wrong at a higher one) and the curve is not noisier than its rates. Every image of a study gets its study's
//! labels: a file keyed by image `Path` (CheXpert's) is keyed by the study directory the image lies in.

use std::path::Path;

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::observations::{Label, Observation};

/// How a corrupted source changes its base's labels, per observation cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rates {
    /// Share of positives that become negative.
    pub missed: f64,
    /// Share of positives that become uncertain (drawn after the missed ones: `missed + uncertain` ≤ 1).
    pub uncertain: f64,
    /// Share of the other cells (negative or blank) that become positive.
    pub false_positive: f64,
}

impl Rates {
    /// Checks that every rate is a share and the positives' two add up to at most one.
    pub fn validate(&self, what: &str) -> Result<()> {
        for (name, v) in [
            ("missed", self.missed),
            ("uncertain", self.uncertain),
            ("false_positive", self.false_positive),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Config(format!(
                    "{what}.rates.{name} = {v}: a rate is within [0, 1]"
                )));
            }
        }
        if self.missed + self.uncertain > 1.0 {
            return Err(Error::Config(format!(
                "{what}.rates: missed {} + uncertain {} exceed 1 (both take from the positives)",
                self.missed, self.uncertain
            )));
        }
        Ok(())
    }

    /// The label a cell of `label` becomes for the uniform draw `u`.
    pub fn apply(&self, label: Label, u: f64) -> Label {
        match label {
            Label::Positive if u < self.missed => Label::Negative,
            Label::Positive if u < self.missed + self.uncertain => Label::Uncertain,
            Label::Negative | Label::Blank if u < self.false_positive => Label::Positive,
            l => l,
        }
    }
}

/// What a corruption changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Rows written.
    pub rows: u64,
    /// Positive cells of the base.
    pub positives: u64,
    /// Positives made negative.
    pub missed: u64,
    /// Positives made uncertain.
    pub uncertain: u64,
    /// Negative or blank cells of the base.
    pub others: u64,
    /// Of those, made positive.
    pub false_positives: u64,
}

/// The uniform draw of (`seed`, `study`, observation column `column`).
fn draw(seed: u64, study: &str, column: &str) -> f64 {
    let h = Sha256::digest(format!("{seed}\u{1f}{study}\u{1f}{column}").as_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(h.into());
    rng.random::<f64>()
}

/// Writes `out` (atomically): `base`'s rows and columns with each observation cell changed at `rates`, the draws
/// seeded by `seed`. The study of a row is its `study_id`, its `Study`, or the directory of its image `Path`; a file
/// with none of them is an error, as is a cell that is not a label.
pub fn corrupt_labels(base: &Path, out: &Path, rates: &Rates, seed: u64) -> Result<Changes> {
    let mut r = csv::Reader::from_reader(crate::io::open_read(base)?);
    let header = r.headers().map_err(|e| Error::csv(base, e))?.clone();
    let find = |name: &str| header.iter().position(|h| h == name);
    let (key, by_path) = match (find("study_id"), find("Study"), find("Path")) {
        (Some(k), _, _) | (None, Some(k), _) => (k, false),
        (None, None, Some(k)) => (k, true),
        _ => {
            return Err(Error::MissingColumns {
                path: base.to_path_buf(),
                missing: vec!["study_id (or Study, or Path)".into()],
                found: header.iter().map(String::from).collect(),
            });
        }
    };
    let observed: Vec<Option<Observation>> = header.iter().map(Observation::from_name).collect();
    if observed.iter().all(Option::is_none) {
        return Err(Error::format(base, "no observation column to corrupt"));
    }
    let mut w = crate::io::csv_writer(out)?;
    w.write_record(&header).map_err(|e| Error::csv(out, e))?;
    let mut changes = Changes::default();
    for (k, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| Error::csv(base, e))?;
        let line = k as u64 + 2;
        let study = match by_path {
            false => &rec[key],
            true => rec[key].rsplit_once('/').map_or(&rec[key], |(dir, _)| dir),
        };
        let mut row: Vec<&str> = Vec::with_capacity(rec.len());
        for (c, cell) in rec.iter().enumerate() {
            if observed.get(c).copied().flatten().is_none() {
                row.push(cell);
                continue;
            }
            let label = Label::parse(cell).ok_or_else(|| {
                Error::record(
                    base,
                    line,
                    format!("{}: '{cell}' is not a label", &header[c]),
                )
            })?;
            let new = rates.apply(label, draw(seed, study, &header[c]));
            match label {
                Label::Positive => changes.positives += 1,
                Label::Negative | Label::Blank => changes.others += 1,
                Label::Uncertain => {}
            }
            match (label, new) {
                (Label::Positive, Label::Negative) => changes.missed += 1,
                (Label::Positive, Label::Uncertain) => changes.uncertain += 1,
                (Label::Negative | Label::Blank, Label::Positive) => changes.false_positives += 1,
                _ => {}
            }
            row.push(if new == label { cell } else { new.as_csv() });
        }
        w.write_record(&row).map_err(|e| Error::csv(out, e))?;
        changes.rows += 1;
    }
    crate::io::commit_csv(w, out)?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &Path) -> std::path::PathBuf {
        // 400 studies, two images each (CheXpert's layout), Edema positive in every other study.
        let mut s = String::from("Path,Sex,Edema,Cardiomegaly\n");
        for i in 0..400 {
            let edema = if i % 2 == 0 { "1.0" } else { "0.0" };
            for v in 1..=2 {
                s.push_str(&format!(
                    "train/patient{i:05}/study1/view{v}_frontal.jpg,Male,{edema},\n"
                ));
            }
        }
        let p = dir.join("base.csv");
        std::fs::write(&p, s).unwrap();
        p
    }

    #[test]
    fn rates_change_the_expected_shares_per_study_and_nest() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path());
        let read = |p: &Path| -> Vec<Vec<String>> {
            csv::Reader::from_path(p)
                .unwrap()
                .records()
                .map(|r| r.unwrap().iter().map(String::from).collect())
                .collect()
        };
        let low = Rates {
            missed: 0.2,
            uncertain: 0.1,
            false_positive: 0.05,
        };
        let high = Rates { missed: 0.4, ..low };
        let (lo, hi) = (dir.path().join("lo.csv"), dir.path().join("hi.csv"));
        let c = corrupt_labels(&b, &lo, &low, 3).unwrap();
        corrupt_labels(&b, &hi, &high, 3).unwrap();
        assert_eq!((c.rows, c.positives, c.others), (800, 400, 1200));
        // Shares near the rates (two images per study count twice: ±0.07 is about three standard errors).
        let share = |n: u64, of: u64| n as f64 / of as f64;
        assert!((share(c.missed, c.positives) - 0.2).abs() < 0.07, "{c:?}");
        assert!(
            (share(c.uncertain, c.positives) - 0.1).abs() < 0.07,
            "{c:?}"
        );
        assert!(
            (share(c.false_positives, c.others) - 0.05).abs() < 0.03,
            "{c:?}"
        );
        let (l, h) = (read(&lo), read(&hi));
        for pair in l.chunks(2) {
            assert_eq!(pair[0][2..], pair[1][2..], "images of one study disagree");
        }
        // Other columns untouched; every positive missed at 0.2 is missed at 0.4 too.
        let orig = read(&b);
        for ((o, l), h) in orig.iter().zip(&l).zip(&h) {
            assert_eq!((&o[0], &o[1]), (&l[0], &l[1]));
            if o[2] == "1.0" && l[2] == "0.0" {
                assert_eq!(h[2], "0.0");
            }
        }
        // Seeded: the same file again, another one under another seed.
        let again = dir.path().join("again.csv");
        corrupt_labels(&b, &again, &low, 3).unwrap();
        assert_eq!(std::fs::read(&lo).unwrap(), std::fs::read(&again).unwrap());
        corrupt_labels(&b, &again, &low, 4).unwrap();
        assert_ne!(std::fs::read(&lo).unwrap(), std::fs::read(&again).unwrap());
    }

    #[test]
    fn bad_rates_and_files_are_errors_that_say_why() {
        let bad = Rates {
            missed: 0.7,
            uncertain: 0.4,
            false_positive: 0.0,
        };
        let e = bad.validate("sources.x").unwrap_err().to_string();
        assert!(e.contains("exceed 1"), "{e}");
        let e = Rates {
            false_positive: 1.5,
            ..Rates::default()
        }
        .validate("sources.x")
        .unwrap_err()
        .to_string();
        assert!(e.contains("sources.x.rates.false_positive"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.csv");
        std::fs::write(&p, "id,Edema\n1,1.0\n").unwrap();
        let e = corrupt_labels(&p, &dir.path().join("o.csv"), &Rates::default(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("study_id"), "{e}");
        std::fs::write(&p, "study_id,Edema\n1,yes\n").unwrap();
        let out = dir.path().join("o.csv");
        let e = corrupt_labels(&p, &out, &Rates::default(), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") || e.contains(":2"), "{e}");
        assert!(e.contains("'yes' is not a label"), "{e}");
        assert!(!out.exists(), "a failed corruption left its output");
    }
}
