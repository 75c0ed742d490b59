//! Streaming CSV reading with a bad-record policy. Every reader in chexlab is a [`CsvStream`] over a
//! [`RowParser`]: memory stays constant in the number of rows, and each error names the file and line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::open_read;

/// What a reader does with a record it cannot parse.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRecord {
    /// Stop with an error naming the file and line (default).
    #[default]
    Fail,
    /// Skip the record, count it and log a warning.
    Skip,
}

/// The records a stream skipped under [`OnBadRecord::Skip`].
#[derive(Clone, Debug, Default)]
pub struct BadRecords {
    /// Number of records skipped.
    pub skipped: u64,
    /// The first few errors, for the summary.
    pub examples: Vec<String>,
}

impl BadRecords {
    const MAX_EXAMPLES: usize = 5;

    /// Records a skipped record.
    pub fn note(&mut self, err: &Error) {
        self.skipped += 1;
        if self.examples.len() < Self::MAX_EXAMPLES {
            self.examples.push(err.to_string());
        }
        tracing::warn!("skipping bad record: {err}");
    }

    /// Folds another tally into this one.
    pub fn merge(&mut self, other: &BadRecords) {
        self.skipped += other.skipped;
        for e in &other.examples {
            if self.examples.len() < Self::MAX_EXAMPLES {
                self.examples.push(e.clone());
            }
        }
    }
}

/// Turns one CSV record into an item; built from the header when the stream opens.
pub trait RowParser {
    /// What a record becomes.
    type Item;
    /// Parses the record at `line` of `path`.
    fn parse(&mut self, path: &Path, line: u64, record: &csv::StringRecord) -> Result<Self::Item>;
}

/// A streaming CSV reader that yields parsed items and applies the bad-record policy.
pub struct CsvStream<P> {
    path: PathBuf,
    reader: csv::Reader<Box<dyn std::io::Read + Send>>,
    record: csv::StringRecord,
    parser: P,
    policy: OnBadRecord,
    bad: BadRecords,
    done: bool,
    /// Lines end in CRLF: the csv crate then counts a record's line before the `\n` that ends the previous one.
    crlf: bool,
    /// Records read so far, the header included.
    records: u64,
    /// The line of the last record, when its last field spans lines (a quoted field).
    last_multiline: Option<u64>,
}

impl<P: RowParser> CsvStream<P> {
    /// Opens `path` (gzip when it ends in `.gz`). With `has_headers`, the header is read and handed to
    /// `make_parser`; without, `make_parser` sees an empty header. `flexible` allows rows of differing lengths.
    pub fn open(
        path: &Path,
        has_headers: bool,
        flexible: bool,
        policy: OnBadRecord,
        make_parser: impl FnOnce(&Path, &csv::StringRecord) -> Result<P>,
    ) -> Result<Self> {
        let (crlf, _) = sniff(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(has_headers)
            .flexible(flexible)
            .from_reader(open_read(path)?);
        let header = if has_headers {
            let h = reader.headers().map_err(|e| Error::csv(path, e))?.clone();
            if h.is_empty() || (h.len() == 1 && h[0].is_empty()) {
                return Err(Error::format(path, "empty file: no header row"));
            }
            h
        } else {
            csv::StringRecord::new()
        };
        let parser = make_parser(path, &header)?;
        Ok(CsvStream {
            path: path.to_path_buf(),
            reader,
            record: csv::StringRecord::new(),
            parser,
            policy,
            bad: BadRecords::default(),
            done: false,
            crlf,
            records: u64::from(has_headers),
            last_multiline: None,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was skipped so far.
    pub fn bad_records(&self) -> &BadRecords {
        &self.bad
    }

    /// The parser (for state it accumulated, e.g. the number of columns seen).
    pub fn parser(&self) -> &P {
        &self.parser
    }

    fn fail_or_skip(&mut self, err: Error) -> Option<Result<P::Item>> {
        if self.policy == OnBadRecord::Skip && err.is_record_error() {
            self.bad.note(&err);
            None
        } else {
            self.done = true;
            Some(Err(err))
        }
    }
}

impl<P> CsvStream<P> {
    /// A last record whose last field spans lines, in a file that does not end with the quote closing it: a
    /// quote opened there never closed and swallowed the rest of the file. (The csv crate ends such a field at the
    /// end of the file without complaint.) Compressed files are not checked.
    fn unterminated_quote(&self) -> Option<Error> {
        use std::io::{Read, Seek, SeekFrom};
        let line = self.last_multiline?;
        if self.path.extension().is_some_and(|e| e == "gz") {
            return None;
        }
        let mut f = std::fs::File::open(&self.path).ok()?;
        let len = f.metadata().ok()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(64))).ok()?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail).ok()?;
        let last = tail.iter().rev().find(|b| !b.is_ascii_whitespace())?;
        (*last != b'"').then(|| {
            Error::record(
                &self.path,
                line,
                "a quoted field starts on this line and never ends (an unterminated quote?): it runs to the end of \
                 the file",
            )
        })
    }

    /// The true line of a record the csv crate places at `line`.
    fn line(&self, line: u64) -> u64 {
        line + u64::from(self.crlf && self.records > 0)
    }
}

/// The start of a file: whether its lines end in CRLF, and its first line (up to 64 kB, without a BOM).
pub fn sniff(path: &Path) -> Result<(bool, String)> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(1 << 16, open_read(path)?);
    let buf = r.fill_buf().map_err(|e| Error::io(path, e))?;
    let nl = buf.iter().position(|&b| b == b'\n');
    let crlf = nl.is_some_and(|i| i > 0 && buf[i - 1] == b'\r');
    let first = String::from_utf8_lossy(&buf[..nl.unwrap_or(buf.len())])
        .trim_end_matches('\r')
        .trim_start_matches('\u{feff}')
        .to_string();
    Ok((crlf, first))
}

impl<P: RowParser> Iterator for CsvStream<P> {
    type Item = Result<P::Item>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.reader.read_record(&mut self.record) {
                Ok(false) => {
                    self.done = true;
                    if let Some(err) = self.unterminated_quote() {
                        return Some(Err(err));
                    }
                }
                Ok(true) => {
                    let line = self.line(self.record.position().map_or(0, |p| p.line()));
                    self.records += 1;
                    // A field that swallows the rest of the file is the record's last one.
                    self.last_multiline = self
                        .record
                        .iter()
                        .next_back()
                        .is_some_and(|f| f.contains('\n'))
                        .then_some(line);
                    match self.parser.parse(&self.path, line, &self.record) {
                        Ok(item) => return Some(Ok(item)),
                        Err(e) => {
                            if let Some(r) = self.fail_or_skip(e) {
                                return Some(r);
                            }
                        }
                    }
                }
                Err(e) => {
                    let mut err = Error::csv(&self.path, e);
                    if let Error::Csv { line, .. } = &mut err {
                        *line = self.line(*line);
                    }
                    self.records += 1;
                    if let Some(r) = self.fail_or_skip(err) {
                        return Some(r);
                    }
                }
            }
        }
        None
    }
}

/// Finds a column by exact name (case-insensitive), or errors listing the header.
pub fn require_column(path: &Path, header: &csv::StringRecord, name: &str) -> Result<usize> {
    find_column(header, name).ok_or_else(|| Error::MissingColumns {
        path: path.to_path_buf(),
        missing: vec![name.to_string()],
        found: header.iter().map(str::to_string).collect(),
    })
}

/// Finds a column by exact name (case-insensitive).
pub fn find_column(header: &csv::StringRecord, name: &str) -> Option<usize> {
    header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ints;
    impl RowParser for Ints {
        type Item = i64;
        fn parse(&mut self, path: &Path, line: u64, r: &csv::StringRecord) -> Result<i64> {
            r[1].parse()
                .map_err(|_| Error::record(path, line, format!("'{}' is not an integer", &r[1])))
        }
    }

    fn write(dir: &Path, body: &str) -> PathBuf {
        let p = dir.join("t.csv");
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn a_quote_that_never_closes_is_an_error_but_quoted_lines_are_not() {
        struct Text;
        impl RowParser for Text {
            type Item = String;
            fn parse(&mut self, _: &Path, _: u64, r: &csv::StringRecord) -> Result<String> {
                Ok(r.iter().collect::<Vec<_>>().join("|"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let read = |body: &str| {
            CsvStream::open(
                &write(dir.path(), body),
                false,
                true,
                OnBadRecord::Fail,
                |_, _| Ok(Text),
            )
            .unwrap()
            .collect::<Result<Vec<_>>>()
        };
        // A multi-line field followed by more fields, and a quoted multi-line last field, are well formed.
        assert_eq!(read("\"a\nb\",1\n").unwrap(), ["a\nb|1"]);
        assert_eq!(read("x,1\ny,\"c\nd\"\r\n").unwrap().len(), 2);
        let err = read("x,1\ny,\"c\nd\ne\n").unwrap_err().to_string();
        assert!(
            err.contains("t.csv: line 2: a quoted field starts"),
            "{err}"
        );
    }

    #[test]
    fn fail_policy_stops_at_the_first_bad_record_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "id,v\na,1\nb,x\nc,3\n");
        let items: Vec<_> = CsvStream::open(&p, true, false, OnBadRecord::Fail, |_, _| Ok(Ints))
            .unwrap()
            .collect();
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("t.csv: line 3") && err.contains("'x'"),
            "{err}"
        );
    }

    #[test]
    fn skip_policy_counts_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "id,v\na,1\nb,x\nc,3,extra\nd,4\n");
        let mut s = CsvStream::open(&p, true, false, OnBadRecord::Skip, |_, _| Ok(Ints)).unwrap();
        let got: Vec<i64> = s.by_ref().map(Result::unwrap).collect();
        assert_eq!(got, vec![1, 4]);
        assert_eq!(s.bad_records().skipped, 2);
        assert!(
            s.bad_records().examples[1].contains("expected 2 fields, found 3"),
            "{:?}",
            s.bad_records()
        );
    }

    #[test]
    fn wrong_field_count_fails_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "id,v\na,1\nb\n");
        let err = CsvStream::open(&p, true, false, OnBadRecord::Fail, |_, _| Ok(Ints))
            .unwrap()
            .find_map(Result::err)
            .unwrap()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("expected 2 fields, found 1"),
            "{err}"
        );
    }

    #[test]
    fn missing_and_empty_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.csv");
        let err = CsvStream::open(&missing, true, false, OnBadRecord::Skip, |_, _| Ok(Ints))
            .err()
            .unwrap();
        assert!(err.to_string().contains("nope.csv"), "{err}");
        let empty = write(dir.path(), "");
        let err = CsvStream::open(&empty, true, false, OnBadRecord::Fail, |_, _| Ok(Ints))
            .err()
            .unwrap();
        assert!(err.to_string().contains("empty file"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_a_record_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, b"id,v\na,1\n\xff\xfe,2\nc,3\n").unwrap();
        let mut s = CsvStream::open(&p, true, false, OnBadRecord::Skip, |_, _| Ok(Ints)).unwrap();
        let got: Vec<i64> = s.by_ref().map(Result::unwrap).collect();
        assert_eq!(got, vec![1, 3]);
        assert!(
            s.bad_records().examples[0].contains("invalid UTF-8"),
            "{:?}",
            s.bad_records()
        );
    }
}
