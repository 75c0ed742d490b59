//! Scoring models chexlab did not train: probability files (a CSV with an id column — `Study`, `Path`,
//! `study_id`, `id` — and one column per observation, named as CheXpert names them, e.g. the CheXpert competition's
//! prediction files) against a truth file, with the same AUROC, bootstrap intervals and paired comparisons as
//! chexlab's own classifiers (`chexlab evaluate --predictions … --truth …`), so published models can sit beside a
//! study's.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::EvaluationConfig;
use super::results::Results;
use super::score::{Scored, compare_all, summarise};
use crate::data::ids::{LabelKey, index_by_key, label_key};
use crate::data::{CsvStream, OnBadRecord, RowParser};
use crate::error::{Error, Result};
use crate::labelers::format::{ID_COLUMNS, read_labeled};
use crate::observations::{OBSERVATIONS, Observation};

/// One row of a probability file.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbabilityRow {
    /// Line of the record.
    pub line: u64,
    /// The id as written.
    pub id: String,
    /// One score per observation of the file, in [`ProbabilityParser::observations`] order.
    pub scores: Vec<f32>,
}

/// Parses probability rows: the id column and every column named after an observation (others are ignored).
pub struct ProbabilityParser {
    id: usize,
    columns: Vec<(Observation, usize)>,
}

impl ProbabilityParser {
    /// The observations the file scores, in canonical order.
    pub fn observations(&self) -> Vec<Observation> {
        self.columns.iter().map(|(o, _)| *o).collect()
    }
}

impl RowParser for ProbabilityParser {
    type Item = ProbabilityRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<ProbabilityRow> {
        let scores = self
            .columns
            .iter()
            .map(|&(o, i)| {
                let cell = r.get(i).unwrap_or("").trim();
                cell.parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        Error::record(
                            path,
                            line,
                            format!("{}: '{cell}' is not a finite number", o.name()),
                        )
                    })
            })
            .collect::<Result<Vec<f32>>>()?;
        Ok(ProbabilityRow {
            line,
            id: r.get(self.id).unwrap_or("").trim().to_string(),
            scores,
        })
    }
}

/// Streams a probability file (plain or gzipped).
pub fn read_probabilities(path: &Path) -> Result<CsvStream<ProbabilityParser>> {
    CsvStream::open(path, true, false, OnBadRecord::Fail, |p, h| {
        let id = ID_COLUMNS
            .iter()
            .find_map(|name| h.iter().position(|c| c.trim() == *name))
            .ok_or_else(|| {
                Error::format(
                    p,
                    format!("no id column (one of {})", ID_COLUMNS.join(", ")),
                )
            })?;
        let mut columns: Vec<(Observation, usize)> = h
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((Observation::from_name(c.trim())?, i)))
            .collect();
        columns.sort_by_key(|(o, _)| o.index());
        if columns.is_empty() {
            return Err(Error::format(
                p,
                "no observation columns (named as CheXpert names them: Atelectasis, Cardiomegaly, …)",
            ));
        }
        Ok(ProbabilityParser { id, columns })
    })
}

/// Scores each `(name, probability file)` of `models` against `truth` (a labeled CSV with an id column, e.g. the
/// CheXpert test set's `groundtruth.csv`) on the observations every model scores. Ids match in normal form
/// ([`label_key`]); every truth row needs exactly one prediction per model, and a prediction for an id the truth
/// lacks is an error: scores of models seen on different images would not compare.
pub fn score_files(
    models: &[(String, PathBuf)],
    truth: &Path,
    ev: &EvaluationConfig,
    seed: u64,
) -> Result<Results> {
    if models.is_empty() {
        return Err(Error::Input("no probability files to score".into()));
    }
    let mut stream = read_labeled(truth, OnBadRecord::Fail)?;
    if stream.parser().id_column().is_none() {
        return Err(Error::format(
            truth,
            format!("no id column (one of {})", ID_COLUMNS.join(", ")),
        ));
    }
    let truth_rows = stream.by_ref().collect::<Result<Vec<_>>>()?;
    if truth_rows.is_empty() {
        return Err(Error::format(truth, "no rows"));
    }
    let mut read = Vec::new();
    for (name, path) in models {
        let mut s = read_probabilities(path)?;
        let obs = s.parser().observations();
        let rows = s.by_ref().collect::<Result<Vec<_>>>()?;
        read.push((name, path, obs, rows));
    }
    // The observations every model scores.
    let obs: Vec<Observation> = OBSERVATIONS
        .iter()
        .copied()
        .filter(|o| read.iter().all(|(_, _, m, _)| m.contains(o)))
        .collect();
    if obs.is_empty() {
        return Err(Error::Input(format!(
            "the probability files share no observation: {}",
            read.iter()
                .map(|(_, p, m, _)| format!(
                    "{} scores {}",
                    p.display(),
                    m.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let mut preds = BTreeMap::new();
    let truth_keys: HashSet<LabelKey> = truth_rows
        .iter()
        .map(|t| label_key(t.id.as_deref().unwrap_or("")))
        .collect();
    for (name, path, own, rows) in read {
        let sc = align_to_truth(path, &own, &rows, truth, &truth_rows, &truth_keys, &obs)?;
        preds.insert(name.clone(), vec![sc]);
    }
    let reference = truth
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| truth.display().to_string());
    let sources = preds
        .iter()
        .map(|(name, sc)| {
            let s = summarise(&sc[0], &obs, ev, seed, name, &reference, "test");
            (name.clone(), s)
        })
        .collect();
    let (comparisons, effects) = compare_all(&preds, &obs, ev, seed);
    Ok(Results {
        split: "test".into(),
        reference: Some(reference),
        bootstrap: ev.bootstrap,
        ci: ev.ci,
        sources,
        replicates: Default::default(),
        comparisons,
        effects,
        dose_response: None,
    })
}

/// One model's scores in the truth's row order, with the truth's labels (`truth_keys`: the truth's ids in normal
/// form).
fn align_to_truth(
    path: &Path,
    own: &[Observation],
    rows: &[ProbabilityRow],
    truth: &Path,
    truth_rows: &[crate::labelers::format::LabeledRow],
    truth_keys: &HashSet<LabelKey>,
    obs: &[Observation],
) -> Result<Scored> {
    let cols: Vec<usize> = obs
        .iter()
        .map(|o| own.iter().position(|x| x == o).expect("shared observation"))
        .collect();
    let by_id = index_by_key(path, rows, |r| (r.id.as_str(), r.line))?;
    if let Some(r) = rows
        .iter()
        .find(|r| !truth_keys.contains(&label_key(&r.id)))
    {
        return Err(Error::record(
            path,
            r.line,
            format!("id '{}' matches no row of {}", r.id, truth.display()),
        ));
    }
    let mut sc = Scored::default();
    for t in truth_rows {
        let id = t.id.as_deref().unwrap_or("");
        let p = by_id.get(&label_key(id)).ok_or_else(|| {
            Error::record(
                truth,
                t.line,
                format!("id '{id}' has no prediction in {}", path.display()),
            )
        })?;
        sc.image_ids.push(id.to_string());
        sc.labels.push(t.labels);
        sc.probs.extend(cols.iter().map(|&c| p.scores[c]));
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn files_must_cover_the_truth_exactly_and_name_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<&str> = OBSERVATIONS.iter().map(|o| o.name()).collect();
        let mut t = format!("Study,{}\n", names.join(","));
        for (s, edema) in [
            ("patient1/study1", 1),
            ("patient2/study1", 0),
            ("patient3/study1", 1),
        ] {
            let cells: Vec<String> = names
                .iter()
                .map(|n| {
                    if *n == "Edema" {
                        edema.to_string()
                    } else {
                        "0".into()
                    }
                })
                .collect();
            t.push_str(&format!("CheXpert-v1.0/test/{s},{}\n", cells.join(",")));
        }
        let truth = write(dir.path(), "truth.csv", &t);
        let ev = EvaluationConfig {
            bootstrap: 20,
            ..EvaluationConfig::default()
        };
        let score = |text: &str| {
            let p = write(dir.path(), "p.csv", text);
            score_files(&[("m".into(), p)], &truth, &ev, 1)
        };
        // Any id spelling; observation columns by name; other columns ignored.
        let r = score(
            "Path,Edema,Sex\npatient1/study1,0.9,F\ntest/patient2/study1,0.2,M\npatient3/study1/,0.7,F\n",
        )
        .unwrap();
        assert_eq!(r.sources["m"].auroc_of("Edema"), Some(1.0));
        assert_eq!(r.sources["m"].auroc.len(), 1);
        let err = |text: &str| score(text).unwrap_err().to_string();
        let e = err("Study,Edema\npatient1/study1,0.9\npatient2/study1,0.2\n");
        assert!(
            e.contains(
                "truth.csv: line 4: id 'CheXpert-v1.0/test/patient3/study1' has no prediction in"
            ) && e.ends_with("p.csv"),
            "{e}"
        );
        let e = err(
            "Study,Edema\npatient1/study1,0.9\npatient2/study1,0.2\npatient3/study1,0.1\npatient9/study1,0.5\n",
        );
        assert!(
            e.contains("line 5: id 'patient9/study1' matches no row of"),
            "{e}"
        );
        let e = err("Study,Edema\npatient1/study1,0.9\npatient1/study1,0.2\n");
        assert!(
            e.contains("line 3: id 'patient1/study1' again (first on line 2)"),
            "{e}"
        );
        let e = err("Study,Edema\npatient1/study1,high\n");
        assert!(
            e.contains("line 2: Edema: 'high' is not a finite number"),
            "{e}"
        );
        assert!(err("Name,Edema\nx,0.1\n").contains("no id column"));
        assert!(err("Study,Score\nx,0.1\n").contains("no observation columns"));
    }
}
