//! `chexlab inspect PATH`: what a dataset, label CSV, reports CSV or run directory holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::data::chexpert;
use crate::data::mimic::{MimicLayout, read_study_labels};
use crate::data::synth;
use crate::data::{BadRecords, OnBadRecord, Split};
use crate::error::{Error, Result};
use crate::labelers::format::{read_labeled, read_reports};
use crate::observations::{Label, LabelRow, N_OBS, OBSERVATIONS};
use crate::run_dir::RunDir;

/// Label distribution: per observation, counts of positive / negative / uncertain / blank.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelCounts {
    /// Rows counted.
    pub rows: u64,
    /// Per observation: positive, negative, uncertain, blank.
    pub counts: [[u64; 4]; N_OBS],
}

impl LabelCounts {
    /// Adds one row.
    pub fn add(&mut self, row: &LabelRow) {
        self.rows += 1;
        for (i, l) in row.0.iter().enumerate() {
            let k = Label::ALL
                .iter()
                .position(|x| x == l)
                .expect("all labels listed");
            self.counts[i][k] += 1;
        }
    }

    /// Count of `label` for observation index `obs`.
    pub fn count(&self, obs: usize, label: Label) -> u64 {
        self.counts[obs][Label::ALL
            .iter()
            .position(|x| *x == label)
            .expect("all labels listed")]
    }
}

impl Serialize for LabelCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = BTreeMap::new();
        for o in OBSERVATIONS {
            let per: BTreeMap<&str, u64> = Label::ALL
                .iter()
                .map(|l| (l.name(), self.count(o.index(), *l)))
                .collect();
            map.insert(o.name(), per);
        }
        #[derive(Serialize)]
        struct Out<'a> {
            rows: u64,
            labels: BTreeMap<&'a str, BTreeMap<&'a str, u64>>,
        }
        Out {
            rows: self.rows,
            labels: map,
        }
        .serialize(s)
    }
}

impl fmt::Display for LabelCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "observation", "positive", "negative", "uncertain", "blank", "pos %"
        )?;
        for o in OBSERVATIONS {
            let i = o.index();
            let pct = if self.rows == 0 {
                0.0
            } else {
                100.0 * self.count(i, Label::Positive) as f64 / self.rows as f64
            };
            writeln!(
                f,
                "  {:<28} {:>9} {:>9} {:>9} {:>9} {:>7.1}%",
                o.name(),
                self.count(i, Label::Positive),
                self.count(i, Label::Negative),
                self.count(i, Label::Uncertain),
                self.count(i, Label::Blank),
                pct
            )?;
        }
        Ok(())
    }
}

/// Per-split summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SplitSummary {
    /// Images.
    pub images: u64,
    /// Studies.
    pub studies: u64,
    /// Patients.
    pub patients: u64,
    /// Label distribution per label table (e.g. `chexpert`, `negbio`, `labels`), over studies or images.
    pub labels: BTreeMap<String, LabelCounts>,
}

/// What `inspect` found.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// The path inspected.
    pub path: PathBuf,
    /// `chexpert-dataset`, `mimic-dataset`, `labeled-csv`, `reports-csv`, `run-dir`.
    pub kind: String,
    /// Free-form facts (`key: value`).
    pub facts: BTreeMap<String, String>,
    /// Per split (or `all` when a file has no split).
    pub splits: BTreeMap<String, SplitSummary>,
    /// Malformed records skipped.
    pub skipped_records: u64,
    /// A few of them, for the message.
    pub skipped_examples: Vec<String>,
}

impl Inspection {
    fn new(path: &Path, kind: &str) -> Inspection {
        Inspection {
            path: path.to_path_buf(),
            kind: kind.into(),
            facts: BTreeMap::new(),
            splits: BTreeMap::new(),
            skipped_records: 0,
            skipped_examples: Vec::new(),
        }
    }

    fn skipped(&mut self, bad: &BadRecords) {
        self.skipped_records += bad.skipped;
        self.skipped_examples.extend(bad.examples.iter().cloned());
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({})", self.path.display(), self.kind)?;
        for (k, v) in &self.facts {
            writeln!(f, "  {k}: {v}")?;
        }
        for (name, s) in &self.splits {
            writeln!(
                f,
                "\n[{name}] images {} · studies {} · patients {}",
                s.images, s.studies, s.patients
            )?;
            for (table, counts) in &s.labels {
                writeln!(f, " labels from {table} ({} rows):", counts.rows)?;
                write!(f, "{counts}")?;
            }
        }
        if self.skipped_records > 0 {
            writeln!(f, "\nskipped {} bad record(s), e.g.:", self.skipped_records)?;
            for e in &self.skipped_examples {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// Inspects `path`, recognising what it is by its content.
pub fn inspect(path: &Path, policy: OnBadRecord) -> Result<Inspection> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    }
    if path.is_dir() {
        if RunDir::new(path).resolved_config().is_file() {
            return inspect_run_dir(path);
        }
        if MimicLayout::detect(path) {
            return inspect_mimic(path, policy);
        }
        if path.join("train.csv").is_file() || path.join("valid.csv").is_file() {
            return inspect_chexpert(path, policy);
        }
        let parquet = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            .count();
        if parquet > 0 {
            return Err(Error::format(
                path,
                format!(
                    "{parquet} Parquet shard(s) but no {} (the shard set's index, written last by `chexlab \
                     shard`): the shard run did not finish, or the index was removed; run `chexlab shard` again",
                    crate::shard::INDEX
                ),
            ));
        }
        return Err(Error::format(
            path,
            "not a recognised directory (expected a CheXpert or MIMIC-CXR-JPG dataset, a shard directory, or a \
             chexlab run directory)",
        ));
    }
    inspect_csv(path, policy)
}

fn inspect_chexpert(root: &Path, policy: OnBadRecord) -> Result<Inspection> {
    let mut out = Inspection::new(root, "chexpert-dataset");
    let mut studies: BTreeMap<Split, HashSet<String>> = BTreeMap::new();
    let mut patients: BTreeMap<Split, HashSet<String>> = BTreeMap::new();
    let mut frontal = 0u64;
    for csv in chexpert::dataset_csvs(root)? {
        let mut stream = chexpert::read_csv(&csv, policy)?;
        for img in stream.by_ref() {
            let img = img?;
            frontal += img.view.is_frontal() as u64;
            let s = out.splits.entry(img.split.name().into()).or_default();
            s.images += 1;
            s.labels
                .entry("dataset".into())
                .or_default()
                .add(&img.labels);
            studies.entry(img.split).or_default().insert(img.study_id());
            patients
                .entry(img.split)
                .or_default()
                .insert(img.patient.clone());
        }
        out.skipped(stream.bad_records());
    }
    for (split, set) in studies {
        let s = out.splits.get_mut(split.name()).expect("split seen");
        s.studies = set.len() as u64;
        s.patients = patients[&split].len() as u64;
    }
    out.facts
        .insert("frontal images".into(), frontal.to_string());
    Ok(out)
}

fn inspect_mimic(root: &Path, policy: OnBadRecord) -> Result<Inspection> {
    let layout = MimicLayout::open(root, None)?;
    let mut out = Inspection::new(root, "mimic-dataset");
    let (studies, bad) = layout.studies(policy)?;
    out.skipped(&bad);
    let mut patients: BTreeMap<Split, HashSet<u64>> = BTreeMap::new();
    for st in &studies {
        let s = out.splits.entry(st.split.name().into()).or_default();
        s.studies += 1;
        patients.entry(st.split).or_default().insert(st.subject_id);
        if let Some(l) = &st.chexpert {
            s.labels.entry("chexpert".into()).or_default().add(l);
        }
        if let Some(l) = &st.negbio {
            s.labels.entry("negbio".into()).or_default().add(l);
        }
    }
    for (split, set) in patients {
        out.splits
            .get_mut(split.name())
            .expect("split seen")
            .patients = set.len() as u64;
    }
    // A synthetic world also has its truth tables; count them per split.
    if let Some(m) = synth::read_manifest(root)? {
        out.facts.insert(
            "synthetic world".into(),
            format!(
                "{} (seed {}, {} px, {})",
                m.generator, m.config.seed, m.config.image_size, m.image_ext
            ),
        );
        let split_of: HashMap<u64, Split> = studies.iter().map(|s| (s.study_id, s.split)).collect();
        for (name, file) in [
            ("truth image", "truth/image_labels.csv"),
            ("truth report", "truth/report_labels.csv"),
        ] {
            let mut stream = read_study_labels(&root.join(file), policy)?;
            for row in stream.by_ref() {
                let row = row?;
                if let Some(split) = split_of.get(&row.study_id) {
                    let s = out.splits.entry(split.name().into()).or_default();
                    s.labels.entry(name.into()).or_default().add(&row.labels);
                }
            }
            out.skipped(stream.bad_records());
        }
    }
    let mut images = layout.images(policy)?;
    let mut views: BTreeMap<&'static str, u64> = BTreeMap::new();
    for img in images.by_ref() {
        let img = img?;
        *views.entry(img.meta.view.name()).or_default() += 1;
        out.splits
            .entry(img.split.name().into())
            .or_default()
            .images += 1;
    }
    let img_bad = images.bad_records();
    out.skipped(&img_bad);
    out.facts.insert(
        "views".into(),
        views
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let reports = studies
        .iter()
        .filter(|s| layout.report_path(s.subject_id, s.study_id).is_file())
        .count();
    out.facts.insert(
        "reports found".into(),
        format!("{reports} of {} studies", studies.len()),
    );
    Ok(out)
}

fn inspect_csv(path: &Path, policy: OnBadRecord) -> Result<Inspection> {
    // A labeled CSV has the observation columns in its header; anything else is taken as labeler input.
    match read_labeled(path, policy) {
        Ok(mut stream) => {
            let mut out = Inspection::new(path, "labeled-csv");
            if let Some(id) = stream.parser().id_column() {
                out.facts.insert("id column".into(), id.to_string());
            }
            let mut counts = LabelCounts::default();
            for row in stream.by_ref() {
                counts.add(&row?.labels);
            }
            out.skipped(stream.bad_records());
            out.splits.insert(
                "all".into(),
                SplitSummary {
                    labels: BTreeMap::from([("labels".to_string(), counts)]),
                    ..Default::default()
                },
            );
            Ok(out)
        }
        Err(Error::MissingColumns { .. }) => {
            let mut out = Inspection::new(path, "reports-csv");
            let mut stream = read_reports(path, policy)?;
            let (mut n, mut chars, mut longest, mut empty) = (0u64, 0u64, 0usize, 0u64);
            for row in stream.by_ref() {
                let row = row?;
                n += 1;
                chars += row.text.chars().count() as u64;
                longest = longest.max(row.text.chars().count());
                empty += row.text.trim().is_empty() as u64;
            }
            out.skipped(stream.bad_records());
            out.facts.insert("reports".into(), n.to_string());
            out.facts.insert(
                "columns".into(),
                stream.parser().columns().unwrap_or(0).to_string(),
            );
            out.facts.insert("empty reports".into(), empty.to_string());
            out.facts.insert(
                "mean length (chars)".into(),
                format!("{:.1}", chars as f64 / n.max(1) as f64),
            );
            out.facts
                .insert("longest (chars)".into(), longest.to_string());
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

fn inspect_run_dir(dir: &Path) -> Result<Inspection> {
    let cfg = Config::load(&RunDir::new(dir).resolved_config(), &[])?;
    let mut out = Inspection::new(dir, "run-dir");
    out.facts.insert("config hash".into(), cfg.hash());
    out.facts.insert("seed".into(), cfg.seed.to_string());
    out.facts.insert(
        "dataset".into(),
        format!("{:?} at {}", cfg.dataset.kind, cfg.dataset.root.display()),
    );
    out.facts.insert(
        "sources".into(),
        cfg.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.facts.insert(
        "model".into(),
        format!("{} at {} px", cfg.model.arch, cfg.model.image_size),
    );
    Ok(out)
}

/// Human-readable summary of an opened shard directory.
pub fn shard_summary(set: &crate::shard::ShardSet, verified: bool) -> String {
    use std::fmt::Write;
    let i = &set.index;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (shard-dir, schema v{}, {} at {} px)",
        set.dir.display(),
        i.schema_version,
        i.encoding,
        i.image_size
    );
    let _ = writeln!(out, "  config hash: {}", i.config_hash);
    let _ = writeln!(out, "  sources: {}", i.sources.join(", "));
    for (split, rows) in &i.splits {
        let n = i.shards.iter().filter(|s| s.split.name() == split).count();
        let _ = writeln!(out, "  {split}: {rows} images in {n} shard(s)");
    }
    for (source, missing) in &i.missing_labels {
        let _ = writeln!(out, "  {source}: {missing} image(s) without labels");
    }
    let _ = writeln!(
        out,
        "  checksums: {}",
        if verified {
            "SHA-256 of every shard verified"
        } else {
            "footers checked, pages checked as they are read (--verify: SHA-256 of every shard now)"
        }
    );
    for (source, per) in &i.label_stats {
        let _ = writeln!(out, "\n labels from {source}:");
        let mut counts = LabelCounts::default();
        for o in OBSERVATIONS {
            for (k, l) in Label::ALL.iter().enumerate() {
                counts.counts[o.index()][k] = per
                    .get(o.name())
                    .and_then(|m| m.get(l.name()))
                    .copied()
                    .unwrap_or(0);
            }
        }
        counts.rows = i.splits.values().sum();
        let _ = write!(out, "{counts}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_directory_without_its_index_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shard-00000.parquet"), b"PAR1").unwrap();
        let err = inspect(dir.path(), OnBadRecord::Fail)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 Parquet shard(s) but no index.json"),
            "{err}"
        );
        std::fs::remove_file(dir.path().join("shard-00000.parquet")).unwrap();
        let err = inspect(dir.path(), OnBadRecord::Fail)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a recognised directory"), "{err}");
    }
}
