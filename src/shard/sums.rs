//! Page checksums: corruption caught where a shard is read, not only by `inspect --verify`.
//!
//! The Parquet writer we use leaves its pages' CRC fields empty, so after a shard is written its bytes are cut
//! into *units* — the leading magic, every page of every column chunk (header and data, the dictionary page
//! apart), the page indexes and the footer — and the CRC-32 of each goes into a sidecar file next to the shard
//! (`.<shard>.sums`, named in `index.json`). [`Checked`] serves the Parquet reader's reads: every byte it hands
//! out comes from a unit whose CRC it has just compared, so a flipped byte in a page a batch touches is an error
//! naming the shard, the row group and the column, during training and scoring alike. A random batch reads whole
//! pages anyway (the offset index points at them), so checking costs one CRC pass over bytes already read.
//!
//! Sidecar layout (little endian): `CHEXSUM1`, the file's length (u64), the column names (u32 count, then u16
//! length + UTF-8 each), the units (u64 count, then start u64, length u64, CRC u32, row group u32, column u32
//! each; row group `u32::MAX` marks the file's own parts), and the CRC-32 of everything before it (u32).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"CHEXSUM1";
/// Row group of the units that belong to the file rather than a column chunk.
const FILE_PART: u32 = u32::MAX;
/// The file's parts, in the `column` field of a [`FILE_PART`] unit.
const PART_NAMES: [&str; 4] = ["leading magic", "page indexes", "footer", "unindexed bytes"];
const PART_MAGIC: u32 = 0;
const PART_PAGE_INDEX: u32 = 1;
const PART_FOOTER: u32 = 2;
const PART_OTHER: u32 = 3;

/// A contiguous byte range of a shard and its CRC-32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Unit {
    start: u64,
    len: u64,
    crc: u32,
    row_group: u32,
    column: u32,
}

impl Unit {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The checksums of one shard: units that tile the file from its first byte to its last.
#[derive(PartialEq, Eq)]
pub struct Sums {
    file_len: u64,
    columns: Vec<String>,
    units: Vec<Unit>,
}

impl std::fmt::Debug for Sums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A shard has a unit per page: thousands, too many to print.
        write!(
            f,
            "Sums({} bytes in {} units)",
            self.file_len,
            self.units.len()
        )
    }
}

/// File name of the sidecar of shard `file`: hidden, as the `.done.json` markers are, so that a Parquet reader
/// pointed at the directory (pyarrow, polars) skips it.
pub fn sidecar_name(file: &str) -> String {
    format!(".{file}.sums")
}

impl Sums {
    /// Cuts the written shard at `path` into units and computes their checksums.
    pub fn compute(path: &Path) -> Result<Sums> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            f.try_clone().map_err(|e| Error::io(path, e))?,
            options,
        )
        .map_err(|e| Error::parquet(path, e))?;
        let meta = builder.metadata();
        let columns: Vec<String> = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        let mut tail = [0u8; 8];
        if file_len < 12 {
            return Err(Error::format(path, "too short to be a Parquet file"));
        }
        f.read_exact_at(&mut tail, file_len - 8)
            .map_err(|e| Error::io(path, e))?;
        let footer_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
        let footer_start = (file_len - 8)
            .checked_sub(footer_len)
            .ok_or_else(|| Error::format(path, "its footer is longer than the file"))?;
        let unit = |start: u64, len: u64, row_group: u32, column: u32| Unit {
            start,
            len,
            crc: 0,
            row_group,
            column,
        };
        // Offsets and sizes as the metadata gives them: a range before the footer, or the file is damaged.
        let span = |start: i64, len: i64, g: usize, c: usize| -> Result<(u64, u64)> {
            let (s, l) = (u64::try_from(start), u64::try_from(len));
            match (s, l) {
                (Ok(s), Ok(l)) if s.checked_add(l).is_some_and(|e| e <= footer_start) => Ok((s, l)),
                _ => Err(Error::format(
                    path,
                    format!(
                        "its metadata puts row group {g}, column {c} at bytes {start}+{len}, outside the data \
                         (0..{footer_start})"
                    ),
                )),
            }
        };
        let mut units = Vec::new();
        for (g, rg) in meta.row_groups().iter().enumerate() {
            for (c, col) in rg.columns().iter().enumerate() {
                let (start, len) = span(
                    col.dictionary_page_offset()
                        .unwrap_or(col.data_page_offset()),
                    col.compressed_size(),
                    g,
                    c,
                )?;
                let end = start + len;
                let (g, c) = (g as u32, c as u32);
                let page_index = meta.page_index_for_row_group(g as usize);
                let pages = page_index
                    .page_locations(c as usize)
                    .map(|p| p.as_slice())
                    .unwrap_or_default();
                let mut chunk = Vec::new();
                let mut tiles = true;
                let first = pages.first().map_or(end, |p| p.offset.max(0) as u64);
                if first > start {
                    // The dictionary page (or, without an offset index, the whole chunk).
                    chunk.push(unit(start, first - start, g, c));
                }
                for p in pages {
                    match span(
                        p.offset,
                        i64::from(p.compressed_page_size),
                        g as usize,
                        c as usize,
                    ) {
                        Ok((s, l)) if l > 0 => chunk.push(unit(s, l, g, c)),
                        _ => tiles = false,
                    }
                }
                tiles = tiles
                    && chunk.first().is_some_and(|u| u.start == start)
                    && chunk.windows(2).all(|w| w[0].end() == w[1].start)
                    && chunk.last().is_some_and(|u| u.end() == end);
                if tiles {
                    units.extend(chunk);
                } else if len > 0 {
                    units.push(unit(start, len, g, c));
                }
            }
        }
        units.sort_by_key(|u| u.start);
        // Fill the gaps: the leading magic, the page indexes before the footer, anything else unindexed.
        let mut all = Vec::with_capacity(units.len() + 3);
        let mut pos = 0u64;
        for u in units.into_iter().chain([unit(
            footer_start,
            file_len - footer_start,
            FILE_PART,
            PART_FOOTER,
        )]) {
            if u.start < pos {
                return Err(Error::format(
                    path,
                    format!("overlapping byte ranges at {} in its metadata", u.start),
                ));
            }
            if u.start > pos {
                let part = match pos {
                    0 => PART_MAGIC,
                    _ if u.row_group == FILE_PART => PART_PAGE_INDEX,
                    _ => PART_OTHER,
                };
                all.push(unit(pos, u.start - pos, FILE_PART, part));
            }
            pos = u.end();
            all.push(u);
        }
        // Checksums in one sequential pass.
        let mut buf = Vec::new();
        for u in &mut all {
            buf.resize(u.len as usize, 0);
            f.read_exact_at(&mut buf, u.start)
                .map_err(|e| Error::io(path, e))?;
            u.crc = crc32fast::hash(&buf);
        }
        Ok(Sums {
            file_len,
            columns,
            units: all,
        })
    }

    /// The sidecar's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.units.len() * 28);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.file_len.to_le_bytes());
        b.extend_from_slice(&(self.columns.len() as u32).to_le_bytes());
        for c in &self.columns {
            b.extend_from_slice(&(c.len() as u16).to_le_bytes());
            b.extend_from_slice(c.as_bytes());
        }
        b.extend_from_slice(&(self.units.len() as u64).to_le_bytes());
        for u in &self.units {
            b.extend_from_slice(&u.start.to_le_bytes());
            b.extend_from_slice(&u.len.to_le_bytes());
            b.extend_from_slice(&u.crc.to_le_bytes());
            b.extend_from_slice(&u.row_group.to_le_bytes());
            b.extend_from_slice(&u.column.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a sidecar; `path` names it in errors.
    pub fn from_bytes(path: &Path, b: &[u8]) -> Result<Sums> {
        let bad = |what: &str| Error::format(path, format!("not a shard checksum file: {what}"));
        if b.len() < MAGIC.len() + 4 || &b[..MAGIC.len()] != MAGIC {
            return Err(bad("no CHEXSUM1 signature"));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(Error::format(
                path,
                "the checksum file itself is corrupt (its CRC does not match): re-run chexlab shard",
            ));
        }
        let mut r = Cursor {
            b: body,
            pos: MAGIC.len(),
        };
        let file_len = r.u64().ok_or_else(|| bad("short"))?;
        let n_cols = r.u32().ok_or_else(|| bad("short"))?;
        let mut columns = Vec::new();
        for _ in 0..n_cols {
            let n = r.u16().ok_or_else(|| bad("short"))? as usize;
            let s = r.take(n).ok_or_else(|| bad("short"))?;
            columns.push(
                String::from_utf8(s.to_vec()).map_err(|_| bad("a column name is not UTF-8"))?,
            );
        }
        let n = r.u64().ok_or_else(|| bad("short"))?;
        if n > (body.len() / 28) as u64 {
            return Err(bad("more units than bytes"));
        }
        let mut units = Vec::with_capacity(n as usize);
        let mut pos = 0u64;
        for _ in 0..n {
            let u = (|| {
                Some(Unit {
                    start: r.u64()?,
                    len: r.u64()?,
                    crc: r.u32()?,
                    row_group: r.u32()?,
                    column: r.u32()?,
                })
            })()
            .ok_or_else(|| bad("short"))?;
            if u.start != pos || u.len == 0 {
                return Err(bad("units do not tile the file"));
            }
            pos = u
                .start
                .checked_add(u.len)
                .ok_or_else(|| bad("unit past 2^64"))?;
            units.push(u);
        }
        if pos != file_len || r.pos != body.len() {
            return Err(bad("units do not cover the file"));
        }
        Ok(Sums {
            file_len,
            columns,
            units,
        })
    }

    /// Writes the sidecar of `shard` atomically.
    pub fn write(&self, sidecar: &Path) -> Result<()> {
        crate::io::write_atomic(sidecar, &self.to_bytes())
    }

    /// Reads a sidecar.
    pub fn read(sidecar: &Path) -> Result<Sums> {
        let b = std::fs::read(sidecar).map_err(|e| {
            Error::io(
                sidecar,
                std::io::Error::new(
                    e.kind(),
                    format!("{e} (the shard's page checksums; re-run chexlab shard to write them)"),
                ),
            )
        })?;
        Sums::from_bytes(sidecar, &b)
    }

    /// The length of the file these checksums cover.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Checks the file's own parts — leading magic, page indexes, footer — against their checksums: a few
    /// kilobytes read, where a full hash reads the whole shard.
    pub fn verify_metadata(&self, path: &Path) -> Result<()> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buf = Vec::new();
        for (i, u) in self
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.row_group == FILE_PART)
        {
            buf.resize(u.len as usize, 0);
            f.read_exact_at(&mut buf, u.start)
                .map_err(|e| Error::io(path, e))?;
            if crc32fast::hash(&buf) != u.crc {
                return Err(Error::format(
                    path,
                    format!(
                        "checksum mismatch in {}: the shard was altered after it was written; delete it and \
                         re-run chexlab shard to write it again",
                        self.describe(i)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Where unit `i` lies, in words.
    fn describe(&self, i: usize) -> String {
        let u = &self.units[i];
        let span = format!("bytes {}..{}", u.start, u.end());
        if u.row_group == FILE_PART {
            let part = PART_NAMES
                .get(u.column as usize)
                .unwrap_or(&"unindexed bytes");
            format!("the {part} ({span})")
        } else {
            let col = self
                .columns
                .get(u.column as usize)
                .map_or("?", |s| s.as_str());
            format!("row group {}, column '{col}' ({span})", u.row_group)
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The row count in the footer of the Parquet file at `path`, if it has a readable one.
pub fn footer_rows(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Skip);
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(f, options).ok()?;
    u64::try_from(b.metadata().file_metadata().num_rows()).ok()
}

/// A shard opened for the Parquet reader with every read checked against its [`Sums`].
#[derive(Clone)]
pub struct Checked(Arc<Inner>);

struct Inner {
    file: File,
    path: PathBuf,
    sums: Arc<Sums>,
    /// The last unit read: the footer and page indexes are asked for in several small reads.
    last: Mutex<Option<(usize, Bytes)>>,
    /// The first mismatch, in words, for the caller's error.
    failure: Mutex<Option<String>>,
}

impl Checked {
    /// Opens `path`, whose checksums are `sums`; a file of another length than they cover is refused.
    pub fn open(path: &Path, sums: Arc<Sums>) -> Result<Checked> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len != sums.file_len {
            return Err(Error::format(
                path,
                format!(
                    "shard is {len} bytes, its page checksums cover {}: truncated or replaced",
                    sums.file_len
                ),
            ));
        }
        Ok(Checked(Arc::new(Inner {
            file,
            path: path.to_path_buf(),
            sums,
            last: Mutex::new(None),
            failure: Mutex::new(None),
        })))
    }

    /// The first checksum mismatch seen, as an error naming the shard, row group and column.
    pub fn failure(&self) -> Option<Error> {
        let f = self.0.failure.lock().expect("not poisoned").clone()?;
        Some(Error::format(&self.0.path, f))
    }
}

impl Inner {
    /// Index of the unit holding byte `at`.
    fn unit_at(&self, at: u64) -> Option<usize> {
        let units = &self.sums.units;
        let i = units.partition_point(|u| u.end() <= at);
        (i < units.len()).then_some(i)
    }

    /// Unit `i`'s bytes, checked.
    fn unit(&self, i: usize) -> parquet::errors::Result<Bytes> {
        if let Some((k, b)) = &*self.last.lock().expect("not poisoned")
            && *k == i
        {
            return Ok(b.clone());
        }
        let u = self.sums.units[i];
        let mut buf = vec![0u8; u.len as usize];
        self.file.read_exact_at(&mut buf, u.start)?;
        if crc32fast::hash(&buf) != u.crc {
            let msg = format!(
                "checksum mismatch in {}: the shard was altered after it was written; \
                 delete it and re-run chexlab shard to write it again",
                self.sums.describe(i)
            );
            self.failure
                .lock()
                .expect("not poisoned")
                .get_or_insert_with(|| msg.clone());
            return Err(ParquetError::General(msg));
        }
        let b = Bytes::from(buf);
        *self.last.lock().expect("not poisoned") = Some((i, b.clone()));
        Ok(b)
    }
}

impl Length for Checked {
    fn len(&self) -> u64 {
        self.0.sums.file_len
    }
}

impl ChunkReader for Checked {
    type T = CheckedRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<CheckedRead> {
        let unit = self.0.unit_at(start).unwrap_or(self.0.sums.units.len());
        Ok(CheckedRead {
            inner: self.0.clone(),
            unit,
            buf: Bytes::new(),
            skip: start,
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let end = start + length as u64;
        let eof =
            || ParquetError::EOF(format!("{length} bytes at {start} run past the file's end"));
        let first = self.0.unit_at(start).ok_or_else(eof)?;
        let last = self.0.unit_at(end - 1).ok_or_else(eof)?;
        let base = self.0.sums.units[first].start;
        if first == last {
            let b = self.0.unit(first)?;
            return Ok(b.slice((start - base) as usize..(end - base) as usize));
        }
        let mut out = Vec::with_capacity(length);
        for i in first..=last {
            let b = self.0.unit(i)?;
            let u = self.0.sums.units[i];
            let from = start.max(u.start) - u.start;
            let to = end.min(u.end()) - u.start;
            out.extend_from_slice(&b[from as usize..to as usize]);
        }
        Ok(out.into())
    }
}

/// A reader from a byte offset to the end of the shard, one checked unit at a time.
pub struct CheckedRead {
    inner: Arc<Inner>,
    unit: usize,
    buf: Bytes,
    /// Absolute offset where reading starts (bytes of the first unit before it are skipped).
    skip: u64,
}

impl std::io::Read for CheckedRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            let Some(u) = self.inner.sums.units.get(self.unit).copied() else {
                return Ok(0);
            };
            let b = self.inner.unit(self.unit).map_err(std::io::Error::other)?;
            let from = self.skip.saturating_sub(u.start) as usize;
            self.buf = b.slice(from..);
            self.unit += 1;
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips_and_refuses_damage() {
        let sums = Sums {
            file_len: 30,
            columns: vec!["image".into(), "lbl_a_b".into()],
            units: vec![
                Unit {
                    start: 0,
                    len: 4,
                    crc: 1,
                    row_group: FILE_PART,
                    column: PART_MAGIC,
                },
                Unit {
                    start: 4,
                    len: 20,
                    crc: 2,
                    row_group: 0,
                    column: 1,
                },
                Unit {
                    start: 24,
                    len: 6,
                    crc: 3,
                    row_group: FILE_PART,
                    column: PART_FOOTER,
                },
            ],
        };
        let p = Path::new("x.sums");
        let b = sums.to_bytes();
        assert_eq!(Sums::from_bytes(p, &b).unwrap(), sums);
        for i in [0, 9, 20, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 0x40;
            let err = Sums::from_bytes(p, &bad).unwrap_err().to_string();
            assert!(err.contains("x.sums"), "{err}");
        }
        assert!(Sums::from_bytes(p, &b[..b.len() - 5]).is_err());
        assert_eq!(
            sums.describe(1),
            "row group 0, column 'lbl_a_b' (bytes 4..24)"
        );
        assert_eq!(sums.describe(2), "the footer (bytes 24..30)");
        assert_eq!(
            sidecar_name("train-00001.parquet"),
            ".train-00001.parquet.sums"
        );
    }
}
