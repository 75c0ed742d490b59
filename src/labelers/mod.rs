//! Report labelers, their file format and their evaluation.

pub mod bert;
pub mod corrupt;
pub mod format;
pub mod gold;
pub mod metrics;
pub mod rules;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::mimic::MimicLayout;
use crate::data::report::{SectionChoice, extract};
use crate::data::{BadRecords, OnBadRecord};
use crate::error::{Error, Result};
use crate::observations::{LabelRow, UncertaintyPolicy};
use format::LabeledWriter;

/// Anything that turns reports into the 14 labels. Labelers get reports in batches (a BERT labeler runs a batch
/// as length-sorted forward passes); the output has one row per report, in order.
pub trait ReportLabeler: Sync {
    /// Labels `reports`, one row per report, in order.
    fn label_batch(&self, reports: &[&str]) -> Result<Vec<LabelRow>>;

    /// Reports cut to the labeler's maximum length so far (only BERT labelers have one).
    fn truncated(&self) -> u64 {
        0
    }
}

impl ReportLabeler for rules::RuleLabeler {
    fn label_batch(&self, reports: &[&str]) -> Result<Vec<LabelRow>> {
        Ok(reports.par_iter().map(|r| self.label(r)).collect())
    }
}

/// What a labeling run did.
#[derive(Clone, Debug, Default)]
pub struct LabelRun {
    /// Reports labelled.
    pub reports: u64,
    /// Malformed input rows skipped.
    pub bad: BadRecords,
}

/// Reports labelled per parallel batch (bounds memory for any input size).
const BATCH: usize = 4096;

/// Labels a labeler-input CSV (one or two columns) into `output` in the CheXpert labeler's output format (with a
/// leading `study_id` column when the input has ids). Parallel over all cores, streaming, atomic output. A report
/// longer than `max_report_bytes` is a bad record (see [`format::DEFAULT_MAX_REPORT_BYTES`]).
pub fn label_csv(
    labeler: &dyn ReportLabeler,
    input: &Path,
    output: &Path,
    policy: OnBadRecord,
    max_report_bytes: usize,
) -> Result<LabelRun> {
    crate::io::refuse_overwrite(output, &[input])?;
    let mut stream = format::read_reports_limited(input, policy, max_report_bytes)?;
    let mut first: Vec<format::ReportRow> = Vec::with_capacity(BATCH);
    for row in stream.by_ref().take(BATCH) {
        first.push(row?);
    }
    if first.is_empty() {
        let skipped = stream.bad_records().skipped;
        return Err(Error::format(
            input,
            if skipped > 0 {
                format!("no reports: all {skipped} row(s) were malformed and skipped")
            } else {
                "no reports (an empty file, or a header only)".to_string()
            },
        ));
    }
    let with_id = first.first().is_some_and(|r| r.id.is_some());
    let mut writer = LabeledWriter::create(output, with_id.then_some("study_id"), true)?;
    let bar = crate::progress::counter("label");
    let mut run = LabelRun::default();
    let mut batch = first;
    loop {
        if batch.is_empty() {
            break;
        }
        let texts: Vec<&str> = batch.iter().map(|r| r.text.as_str()).collect();
        let labels = labeler.label_batch(&texts)?;
        for (r, l) in batch.iter().zip(&labels) {
            writer.write(r.id.as_deref(), Some(&r.text), l)?;
        }
        run.reports += batch.len() as u64;
        bar.inc(batch.len() as u64);
        batch = Vec::with_capacity(BATCH);
        for row in stream.by_ref().take(BATCH) {
            batch.push(row?);
        }
    }
    bar.finish_and_clear();
    run.bad = stream.bad_records().clone();
    writer.finish()?;
    Ok(run)
}

/// Labels every study's report of a MIMIC-CXR(-JPG) style dataset (real or synthetic), reading `sections`.
/// Output has `study_id`, `Reports` (the text read) and the 14 labels. A missing or unreadable report is a bad
/// record (fails, or is skipped and counted).
pub fn label_dataset(
    labeler: &dyn ReportLabeler,
    root: &Path,
    reports_root: Option<&Path>,
    sections: SectionChoice,
    output: &Path,
    policy: OnBadRecord,
) -> Result<LabelRun> {
    if !MimicLayout::detect(root) {
        return Err(Error::format(
            root,
            "not a MIMIC-CXR-JPG style dataset (CheXpert ships no reports: label their CSVs or import labels)",
        ));
    }
    let layout = MimicLayout::open(root, reports_root)?;
    let (studies, mut bad) = layout.studies(policy)?;
    let mut writer = LabeledWriter::create(output, Some("study_id"), true)?;
    let bar = crate::progress::bar(studies.len() as u64, "label");
    let mut run = LabelRun::default();
    for chunk in studies.chunks(BATCH) {
        let read: Vec<Result<String>> = chunk
            .par_iter()
            .map(|s| {
                Ok(extract(
                    &layout.read_report(s.subject_id, s.study_id)?,
                    sections,
                ))
            })
            .collect();
        let mut ok = Vec::with_capacity(chunk.len());
        for (s, r) in chunk.iter().zip(read) {
            match r {
                Ok(text) => ok.push((s.study_id, text)),
                Err(e) if policy == OnBadRecord::Skip => bad.note(&e),
                Err(e) => return Err(e),
            }
        }
        let texts: Vec<&str> = ok.iter().map(|(_, t)| t.as_str()).collect();
        for ((id, text), labels) in ok.iter().zip(labeler.label_batch(&texts)?) {
            writer.write(Some(&id.to_string()), Some(text), &labels)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    run.reports = writer.rows();
    run.bad = bad;
    writer.finish()?;
    Ok(run)
}

/// What produces a label source's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A built-in labeler run on the reports (`labeler` names it).
    Labeler,
    /// A labeled CSV produced elsewhere (`path`).
    External,
    /// The dataset's own label columns (CheXpert CSV, MIMIC `-chexpert`/`-negbio` via `path`).
    Dataset,
    /// The synthetic world's image truth (an oracle source).
    Truth,
    /// Another source's labels (`base`) made worse at known `rates` ([`corrupt`]): the dose–response's points.
    Corrupted,
}

/// Built-in labelers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelerKind {
    /// The CheXpert-style rule labeler.
    Chexpert,
    /// CheXbert (BERT, four classes per observation).
    Chexbert,
    /// VisualCheXbert (BERT trained toward image labels).
    Visualchexbert,
}

/// One label source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Identifier used in column names, directories and reports (`[a-z0-9_]+`).
    pub name: String,
    /// What produces the labels.
    pub kind: SourceKind,
    #[serde(default)]
    /// The built-in labeler (`kind = "labeler"`).
    pub labeler: Option<LabelerKind>,
    /// CSV for `external`/`dataset` sources, or a trained model directory for BERT labelers.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    /// How its uncertain labels enter the loss.
    pub uncertainty: UncertaintyPolicy,
    /// `kind = "corrupted"`: the source whose labels it corrupts (not itself a corrupted one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `kind = "corrupted"`: how it corrupts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<corrupt::Rates>,
}
