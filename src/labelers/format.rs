//! The CheXpert labeler's file format, read and written byte-compatibly with the original tool.
//!
//! * Input: a headerless CSV, one report per row (quoted when it holds commas, quotes or newlines). With two
//!   columns, the first is an id (e.g. a study id) and the last is the text. A first row whose last field is
//!   `Reports` (or `Report Impression`, CheXbert's input column) is a header.
//! * Output: header `Reports` + the 14 observations, values `1.0` / `0.0` / `-1.0` / empty, `\n` line ends,
//!   minimal quoting. chexlab may add a leading id column (e.g. `study_id`) when the input had ids.

use std::path::Path;

use crate::data::csvstream::find_column;
use crate::data::{CsvStream, OnBadRecord, RowParser};
use crate::error::{Error, Result};
use crate::io::{AtomicFile, commit_csv, csv_writer};
use crate::observations::{ColumnMap, LabelRow, OBSERVATIONS};

/// Header name of the report text column.
pub const REPORTS_COLUMN: &str = "Reports";

/// Header names of the text column that mark a labeler input's first row as a header: the labeler's own output
/// column and CheXbert's input column.
const REPORT_HEADERS: [&str; 2] = [REPORTS_COLUMN, "Report Impression"];

/// Column names accepted as a row id in labeled CSVs, in order of preference.
pub const ID_COLUMNS: &[&str] = &["study_id", "Study", "id", "Path"];

/// One input report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRow {
    /// Line of the record.
    pub line: u64,
    /// Its id column, when the input has one.
    pub id: Option<String>,
    /// The report.
    pub text: String,
}

/// The longest report [`read_reports`] accepts, in bytes. Real reports are a few kB; a field this long is a
/// quoting accident that swallowed the rows after it, or not a report.
pub const DEFAULT_MAX_REPORT_BYTES: usize = 1 << 20;

/// Parses headerless one- or two-column report rows. The first row fixes the column count.
pub struct ReportParser {
    columns: Option<usize>,
    max_bytes: usize,
}

impl Default for ReportParser {
    fn default() -> Self {
        ReportParser::with_limit(DEFAULT_MAX_REPORT_BYTES)
    }
}

impl ReportParser {
    /// A parser that refuses reports longer than `max_bytes`.
    pub fn with_limit(max_bytes: usize) -> Self {
        ReportParser {
            columns: None,
            max_bytes,
        }
    }

    /// Number of columns of the input (1 or 2), once a row has been read.
    pub fn columns(&self) -> Option<usize> {
        self.columns
    }
}

impl RowParser for ReportParser {
    type Item = ReportRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<ReportRow> {
        let n = *self.columns.get_or_insert(r.len());
        let text = r.get(r.len().saturating_sub(1)).unwrap_or_default();
        if text.len() > self.max_bytes {
            return Err(Error::record(
                path,
                line,
                format!(
                    "the report is {} bytes, over the limit of {} (--max-report-bytes): a quote that ran on \
                     over the rows after it, or not a report",
                    text.len(),
                    self.max_bytes
                ),
            ));
        }
        if r.len() != n {
            return Err(Error::record(
                path,
                line,
                format!("expected {n} column(s), found {}", r.len()),
            ));
        }
        match n {
            1 => Ok(ReportRow {
                line,
                id: None,
                text: r[0].to_string(),
            }),
            2 => Ok(ReportRow {
                line,
                id: Some(r[0].trim().to_string()),
                text: r[1].to_string(),
            }),
            _ => Err(Error::record(
                path,
                line,
                format!("a reports CSV has 1 column (text) or 2 (id, text); found {n}"),
            )),
        }
    }
}

/// Streams the reports of a labeler input CSV; a report over [`DEFAULT_MAX_REPORT_BYTES`] is a bad record.
pub fn read_reports(path: &Path, policy: OnBadRecord) -> Result<CsvStream<ReportParser>> {
    read_reports_limited(path, policy, DEFAULT_MAX_REPORT_BYTES)
}

/// [`read_reports`] with another bound on a report's length, in bytes.
pub fn read_reports_limited(
    path: &Path,
    policy: OnBadRecord,
    max_bytes: usize,
) -> Result<CsvStream<ReportParser>> {
    // The input is headerless, but a `Reports` (or `id,Reports`, or CheXbert's `Report Impression`) header row,
    // as the labeler's own output and many exports have, is a header and not a report.
    let (_, first) = crate::data::csvstream::sniff(path)?;
    let header = first
        .rsplit(',')
        .next()
        .is_some_and(|last| REPORT_HEADERS.contains(&last.trim().trim_matches('"')));
    CsvStream::open(path, header, true, policy, move |_, _| {
        Ok(ReportParser::with_limit(max_bytes))
    })
}

/// One row of a labeled CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabeledRow {
    /// Line of the record.
    pub line: u64,
    /// Its id, when the file has an id column.
    pub id: Option<String>,
    /// The report, when the file has a `Reports` column.
    pub report: Option<String>,
    /// The labels.
    pub labels: LabelRow,
}

/// Parses labeled rows (any column order; observations by name).
pub struct LabeledParser {
    id: Option<usize>,
    report: Option<usize>,
    labels: ColumnMap,
    id_name: Option<String>,
}

impl LabeledParser {
    /// Name of the id column, if the file has one.
    pub fn id_column(&self) -> Option<&str> {
        self.id_name.as_deref()
    }
}

impl RowParser for LabeledParser {
    type Item = LabeledRow;
    fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<LabeledRow> {
        Ok(LabeledRow {
            line,
            id: self.id.map(|i| r[i].trim().to_string()),
            report: self.report.map(|i| r[i].to_string()),
            labels: self.labels.parse_row(path, line, r)?,
        })
    }
}

/// Streams a labeled CSV: the CheXpert labeler's output, CheXbert's, chexlab's, or any CSV with the 14
/// observation columns (plus optionally `Reports` and an id column, see [`ID_COLUMNS`]).
pub fn read_labeled(path: &Path, policy: OnBadRecord) -> Result<CsvStream<LabeledParser>> {
    CsvStream::open(path, true, false, policy, |p, h| {
        let id = ID_COLUMNS.iter().find_map(|name| find_column(h, name));
        Ok(LabeledParser {
            id,
            id_name: id.map(|i| h[i].to_string()),
            report: find_column(h, REPORTS_COLUMN),
            labels: ColumnMap::from_header(p, h.iter())?,
        })
    })
}

/// Writes labeled rows in the CheXpert labeler's output format, atomically (the file appears on
/// [`LabeledWriter::finish`]).
pub struct LabeledWriter {
    path: std::path::PathBuf,
    csv: csv::Writer<AtomicFile>,
    with_id: bool,
    with_report: bool,
    rows: u64,
}

impl LabeledWriter {
    /// `id_column`: name of a leading id column, or `None` for the original format. `with_report`: write the
    /// `Reports` column (the original format always has it).
    pub fn create(
        path: &Path,
        id_column: Option<&str>,
        with_report: bool,
    ) -> Result<LabeledWriter> {
        let mut csv = csv_writer(path)?;
        let mut header: Vec<&str> = Vec::with_capacity(16);
        header.extend(id_column);
        if with_report {
            header.push(REPORTS_COLUMN);
        }
        header.extend(OBSERVATIONS.iter().map(|o| o.name()));
        csv.write_record(&header).map_err(|e| Error::csv(path, e))?;
        Ok(LabeledWriter {
            path: path.to_path_buf(),
            csv,
            with_id: id_column.is_some(),
            with_report,
            rows: 0,
        })
    }

    /// Appends one row. `id` must be given iff the writer has an id column; `report` iff it has `Reports`.
    pub fn write(
        &mut self,
        id: Option<&str>,
        report: Option<&str>,
        labels: &LabelRow,
    ) -> Result<()> {
        let path = &self.path;
        if self.with_id != id.is_some() || self.with_report != report.is_some() {
            return Err(Error::format(
                path,
                "row does not match the header's id/report columns",
            ));
        }
        let mut fields: Vec<&str> = Vec::with_capacity(16);
        fields.extend(id);
        fields.extend(report);
        fields.extend(labels.0.iter().map(|l| l.as_csv()));
        self.csv
            .write_record(&fields)
            .map_err(|e| Error::csv(path, e))?;
        self.rows += 1;
        Ok(())
    }

    /// Number of rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Flushes and moves the file into place.
    pub fn finish(self) -> Result<()> {
        commit_csv(self.csv, &self.path)
    }
}

/// Writes reports in the labeler input format (headerless; with a leading id column when ids are given).
pub fn write_reports<'a>(
    path: &Path,
    rows: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
) -> Result<u64> {
    let mut csv = csv_writer(path)?;
    let mut n = 0;
    for (id, text) in rows {
        match id {
            Some(id) => csv.write_record([id, text]),
            None => csv.write_record([text]),
        }
        .map_err(|e| Error::csv(path, e))?;
        n += 1;
    }
    commit_csv(csv, path)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::{Label, Observation};

    #[test]
    fn two_column_input_takes_the_last_as_text_and_mixed_widths_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        std::fs::write(
            &p,
            "s1,\"No effusion, no edema.\"\ns2,\"Line one\nline two\"\n",
        )
        .unwrap();
        let rows: Vec<_> = read_reports(&p, OnBadRecord::Fail)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows[0].id.as_deref(), Some("s1"));
        assert_eq!(rows[0].text, "No effusion, no edema.");
        assert_eq!(rows[1].text, "Line one\nline two");

        std::fs::write(&p, "a,b\nc\n").unwrap();
        let err = read_reports(&p, OnBadRecord::Fail)
            .unwrap()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("expected 2 column(s), found 1"),
            "{err}"
        );
        std::fs::write(&p, "a,b,c\n").unwrap();
        let err = read_reports(&p, OnBadRecord::Fail)
            .unwrap()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(err.contains("found 3"), "{err}");
    }

    #[test]
    fn writer_output_with_ids_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.csv");
        let mut w = LabeledWriter::create(&p, Some("study_id"), true).unwrap();
        let mut row = LabelRow::default();
        row.set(Observation::Edema, Label::Uncertain);
        w.write(Some("50414267"), Some("Possible edema, \"mild\"."), &row)
            .unwrap();
        assert!(!p.exists(), "output must not appear before finish");
        assert!(w.write(None, Some("x"), &row).is_err());
        w.finish().unwrap();
        let mut s = read_labeled(&p, OnBadRecord::Fail).unwrap();
        let back: Vec<_> = s.by_ref().map(Result::unwrap).collect();
        assert_eq!(s.parser().id_column(), Some("study_id"));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].id.as_deref(), Some("50414267"));
        assert_eq!(back[0].report.as_deref(), Some("Possible edema, \"mild\"."));
        assert_eq!(back[0].labels, row);
    }
}
