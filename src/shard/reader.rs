//! The rank-local shard loader. [`ShardSet::open`] checks `index.json` against the files (existence, size, row
//! counts from the Parquet footers; SHA-256 with [`ShardSet::verify`]); [`ShardSet::assignment`] gives each rank
//! its rows for an epoch; [`ShardSet::read`] reads them with column projection (image + one label source) and
//! row selection.
//!
//! Assignment: the split's rows are permuted by (seed, epoch) — a different epoch gives a different order — and
//! dealt round-robin to the ranks. To keep ranks in lock-step, every rank gets `rows / world` rows: the last
//! `rows % world` rows of the permutation are **dropped** for that epoch (a different few each epoch).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use arrow_array::{Array, BinaryArray, Int8Array, StringArray, UInt16Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelectionPolicy,
    RowSelector,
};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::{ChunkReader, Length};
use std::sync::Arc;

use crate::shard::sums::{Checked, Sums};

use crate::data::Split;
use crate::error::{Error, Result};
use crate::observations::{Label, LabelRow, OBSERVATIONS};
use crate::shard::schema::{HEIGHT, IMAGE, IMAGE_ID, INDEX, ShardIndex, WIDTH};
use crate::shard::schema::{SCHEMA_VERSION, label_column};

/// A row of a split: shard number (in the index) and row within the shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowRef {
    /// Shard (index in the shard list).
    pub shard: usize,
    /// Row within it.
    pub row: u64,
}

/// An image with one source's labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Image id.
    pub image_id: String,
    /// Grey pixels (or encoded bytes, as the shard stores them).
    pub pixels: Vec<u8>,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// The source's labels.
    pub labels: LabelRow,
}

/// An opened, checked shard directory.
#[derive(Clone, Debug)]
pub struct ShardSet {
    /// The shard directory.
    pub dir: PathBuf,
    /// Its index.
    pub index: ShardIndex,
    /// Per shard, its page checksums.
    sums: Arc<Vec<Arc<Sums>>>,
    /// Check every page read against its checksum (see [`ShardSet::without_page_checks`]).
    check_pages: bool,
}

/// A shard's bytes for the Parquet reader: checked against its page checksums, or as they are.
enum Source {
    Checked(Checked),
    Plain(fs::File),
}

impl Length for Source {
    fn len(&self) -> u64 {
        match self {
            Source::Checked(c) => c.len(),
            Source::Plain(f) => f.len(),
        }
    }
}

impl ChunkReader for Source {
    type T = Box<dyn std::io::Read>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            Source::Checked(c) => Box::new(c.get_read(start)?),
            Source::Plain(f) => Box::new(f.get_read(start)?),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            Source::Checked(c) => c.get_bytes(start, length),
            Source::Plain(f) => f.get_bytes(start, length),
        }
    }
}

/// The error for a panic of the Parquet layer while it read shard `path`.
fn panicked(path: &Path, panic: &(dyn std::any::Any + Send)) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::format(
        path,
        format!(
            "the Parquet reader failed on this shard ({what}): damaged; re-run chexlab shard --verify"
        ),
    )
}

/// A Parquet error of shard `path`, as the checksum mismatch behind it when there was one.
fn parquet_error(
    path: &Path,
    checked: Option<&Checked>,
    e: impl Into<parquet::errors::ParquetError>,
) -> Error {
    checked
        .and_then(Checked::failure)
        .unwrap_or_else(|| Error::parquet(path, e))
}

/// Opens a shard for reading, through `checked` when given; `page_index`: also load its offset index, which lets
/// a row selection skip the pages it does not touch instead of decoding them (with the writer's small image pages
/// a random batch decodes about its own rows, not whole megabyte pages). A row count needs only the footer.
fn open_builder(
    path: &Path,
    checked: Option<&Checked>,
    page_index: bool,
) -> Result<ParquetRecordBatchReaderBuilder<Source>> {
    let source = match checked {
        Some(c) => Source::Checked(c.clone()),
        None => Source::Plain(fs::File::open(path).map_err(|e| Error::io(path, e))?),
    };
    let options = ArrowReaderOptions::new().with_offset_index_policy(if page_index {
        PageIndexPolicy::Optional
    } else {
        PageIndexPolicy::Skip
    });
    ParquetRecordBatchReaderBuilder::try_new_with_options(source, options).map_err(|e| {
        checked.and_then(Checked::failure).unwrap_or_else(|| {
            Error::format(
                path,
                format!("not a readable Parquet shard (truncated or corrupt?): {e}"),
            )
        })
    })
}

impl ShardSet {
    /// Opens `dir`, checking every shard against the index: present, of the recorded size, with the recorded
    /// number of rows. A directory without `index.json` is incomplete.
    pub fn open(dir: &Path) -> Result<ShardSet> {
        let index_path = dir.join(INDEX);
        let text = fs::read_to_string(&index_path).map_err(|e| {
            Error::io(
                &index_path,
                std::io::Error::new(
                    e.kind(),
                    format!("{e} (a shard directory without index.json is incomplete)"),
                ),
            )
        })?;
        let index: ShardIndex =
            serde_json::from_str(&text).map_err(|e| Error::json(&index_path, e))?;
        if index.schema_version != SCHEMA_VERSION {
            return Err(Error::format(
                &index_path,
                format!(
                    "schema version {} (this chexlab reads {SCHEMA_VERSION}); re-run chexlab shard \
                     (shards it finds intact are kept)",
                    index.schema_version
                ),
            ));
        }
        let mut sums = Vec::with_capacity(index.shards.len());
        for s in &index.shards {
            let path = dir.join(&s.file);
            let sidecar = dir.join(&s.page_sums);
            if s.page_sums.is_empty() {
                return Err(Error::format(
                    &index_path,
                    format!(
                        "shard {} has no page checksums; re-run chexlab shard",
                        s.file
                    ),
                ));
            }
            let shard_sums = Arc::new(Sums::read(&sidecar)?);
            let len = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            if len != s.bytes {
                return Err(Error::format(
                    &path,
                    format!(
                        "shard is {len} bytes, index says {}: truncated or replaced",
                        s.bytes
                    ),
                ));
            }
            // The footer is read through its checksum: a damaged one is named here, before any training.
            let checked = Checked::open(&path, shard_sums.clone())?;
            let rows = open_builder(&path, Some(&checked), false)?
                .metadata()
                .file_metadata()
                .num_rows() as u64;
            if rows != s.rows {
                return Err(Error::format(
                    &path,
                    format!("shard has {rows} rows, index says {}", s.rows),
                ));
            }
            sums.push(shard_sums);
        }
        Ok(ShardSet {
            dir: dir.to_path_buf(),
            index,
            sums: Arc::new(sums),
            check_pages: true,
        })
    }

    /// The same shards read without checking pages against their checksums: only to measure what checking
    /// costs (`benches/loader.rs`).
    pub fn without_page_checks(mut self) -> ShardSet {
        self.check_pages = false;
        self
    }

    /// Shard `k` opened for checked reading, or `None` when checks are off.
    fn checked(&self, k: usize, path: &Path) -> Result<Option<Checked>> {
        if !self.check_pages {
            return Ok(None);
        }
        Checked::open(path, self.sums[k].clone()).map(Some)
    }

    /// Recomputes every shard's SHA-256 and compares it with the index.
    pub fn verify(&self) -> Result<()> {
        for s in &self.index.shards {
            let path = self.dir.join(&s.file);
            let got = crate::io::sha256_of(&path)?;
            if got != s.sha256 {
                return Err(Error::format(
                    &path,
                    format!("SHA-256 {got} does not match the index ({})", s.sha256),
                ));
            }
        }
        Ok(())
    }

    /// Every row of a split, in shard order.
    pub fn rows(&self, split: Split) -> Vec<RowRef> {
        self.index
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.split == split)
            .flat_map(|(k, s)| (0..s.rows).map(move |row| RowRef { shard: k, row }))
            .collect()
    }

    /// The rows rank `rank` of `world` reads in `epoch`: a permutation of the split by (seed, epoch), dealt
    /// round-robin, the remainder dropped so every rank gets the same count.
    pub fn assignment(
        &self,
        split: Split,
        rank: usize,
        world: usize,
        epoch: u64,
        seed: u64,
    ) -> Vec<RowRef> {
        let rows = self.rows(split);
        crate::learn::deal(rows.len(), rank, world, epoch, seed)
            .into_iter()
            .map(|i| rows[i])
            .collect()
    }

    /// Reads `rows` like [`ShardSet::read`] and hands out `size`×`size` grey pixels whatever the shards store:
    /// shards written with the original encoded bytes (`encoding = encoded`) are decoded and resized here, in
    /// parallel; an undecodable image is an error naming its shard and image id.
    pub fn read_images(&self, rows: &[RowRef], source: &str, size: u32) -> Result<Vec<Sample>> {
        let samples = self.read(rows, source)?;
        if self.index.encoding != "encoded" {
            return Ok(samples);
        }
        use rayon::prelude::*;
        samples
            .into_par_iter()
            .zip(rows.par_iter())
            .map(|(mut smp, at)| {
                // PNG and JPEG carry their signature; anything else of exactly width × height bytes is raw pixels.
                let magic =
                    smp.pixels.starts_with(b"\x89PNG") || smp.pixels.starts_with(&[0xFF, 0xD8]);
                let dims = (u32::from(smp.width), u32::from(smp.height));
                let raw =
                    !magic && smp.pixels.len() as u64 == u64::from(dims.0) * u64::from(dims.1);
                let shard = self.dir.join(&self.index.shards[at.shard].file);
                let named = |e: Error| {
                    Error::format(
                        &shard,
                        format!("row {}, image {}: {e}", at.row, smp.image_id),
                    )
                };
                smp.pixels = crate::data::image::decode_resize_as(
                    Path::new(&smp.image_id),
                    &smp.pixels,
                    raw,
                    Some(dims),
                    size,
                    u32::from(u16::MAX),
                )
                .map_err(named)?;
                smp.width = size as u16;
                smp.height = size as u16;
                Ok(smp)
            })
            .collect()
    }

    /// Reads `rows` (any order; the result follows it) with one label source's labels.
    pub fn read(&self, rows: &[RowRef], source: &str) -> Result<Vec<Sample>> {
        if !self.index.sources.iter().any(|s| s == source) {
            return Err(Error::Input(format!(
                "label source '{source}' is not in the shards (they hold: {})",
                self.index.sources.join(", ")
            )));
        }
        let mut by_shard: BTreeMap<usize, Vec<(u64, usize)>> = BTreeMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_shard.entry(r.shard).or_default().push((r.row, i));
        }
        let mut out: Vec<Option<Sample>> = vec![None; rows.len()];
        for (shard, mut wanted) in by_shard {
            let entry = self
                .index
                .shards
                .get(shard)
                .ok_or_else(|| Error::Input(format!("no shard {shard}")))?;
            let path = self.dir.join(&entry.file);
            wanted.sort_unstable();
            let mut distinct: Vec<u64> = wanted.iter().map(|w| w.0).collect();
            distinct.dedup();
            // The Parquet layer can panic on metadata that passes its checks (an offset before its column
            // chunk, found by fuzzing): such a shard is an error naming it, not a crashed rank.
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.read_rows(shard, &path, entry.rows, &distinct, source)
            }))
            .unwrap_or_else(|panic| Err(panicked(&path, &*panic)))?;
            // Hand each read row to the requests for it: moved to the last one, cloned only for repeats.
            let mut got: Vec<Option<Sample>> = got.into_iter().map(Some).collect();
            let mut k = 0;
            for (j, &(r, i)) in wanted.iter().enumerate() {
                if j > 0 && wanted[j - 1].0 != r {
                    k += 1;
                }
                let repeated = wanted.get(j + 1).is_some_and(|n| n.0 == r);
                out[i] = if repeated {
                    got[k].clone()
                } else {
                    got[k].take()
                };
            }
        }
        Ok(out
            .into_iter()
            .map(|s| s.expect("every requested row read"))
            .collect())
    }

    /// Reads the `distinct` sorted rows of shard `shard` (at `path`, `rows` rows) with `source`'s labels.
    fn read_rows(
        &self,
        shard: usize,
        path: &Path,
        rows: u64,
        distinct: &[u64],
        source: &str,
    ) -> Result<Vec<Sample>> {
        let checked = self.checked(shard, path)?;
        let builder = open_builder(path, checked.as_ref(), true)?;
        let fields: Vec<String> = [IMAGE_ID, IMAGE, WIDTH, HEIGHT]
            .iter()
            .map(|s| s.to_string())
            .chain(OBSERVATIONS.iter().map(|o| label_column(source, *o)))
            .collect();
        let schema = builder.schema().clone();
        let roots: Vec<usize> = fields
            .iter()
            .map(|f| {
                schema
                    .index_of(f)
                    .map_err(|_| Error::format(path, format!("missing column {f}")))
            })
            .collect::<Result<_>>()?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        // Selection: skip/select runs over the sorted wanted rows (duplicates read once).
        let mut selectors = Vec::new();
        let mut pos = 0u64;
        for &r in distinct {
            if r >= rows {
                return Err(Error::format(
                    path,
                    format!("row {r} out of range ({rows} rows)"),
                ));
            }
            if r > pos {
                selectors.push(RowSelector::skip((r - pos) as usize));
                selectors.push(RowSelector::select(1));
            } else if let Some(last) = selectors.last_mut().filter(|s| !s.skip) {
                // Consecutive rows form one run.
                last.row_count += 1;
            } else {
                selectors.push(RowSelector::select(1));
            }
            pos = r + 1;
        }
        // Selectors, never a boolean mask: a mask (parquet's choice for short runs, i.e. every random batch)
        // decodes every page of the row group instead of skipping to the selected rows.
        let reader = builder
            .with_projection(mask)
            .with_row_selection(RowSelection::from(selectors))
            .with_row_selection_policy(RowSelectionPolicy::Selectors)
            .with_batch_size(1024)
            .build()
            .map_err(|e| parquet_error(path, checked.as_ref(), e))?;
        let mut got: Vec<Sample> = Vec::with_capacity(distinct.len());
        for batch in reader {
            let batch = batch.map_err(|e| parquet_error(path, checked.as_ref(), e))?;
            let col = |name: &str| batch.column(batch.schema().index_of(name).expect("projected"));
            let image = col(IMAGE).as_any().downcast_ref::<BinaryArray>().cloned();
            let width = col(WIDTH).as_any().downcast_ref::<UInt16Array>().cloned();
            let height = col(HEIGHT).as_any().downcast_ref::<UInt16Array>().cloned();
            let ids = col(IMAGE_ID)
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned();
            let (Some(ids), Some(image), Some(width), Some(height)) = (ids, image, width, height)
            else {
                return Err(Error::format(
                    path,
                    "image_id/image/width/height columns have unexpected types",
                ));
            };
            let label_arrays: Vec<Int8Array> = OBSERVATIONS
                .iter()
                .map(|o| {
                    col(&label_column(source, *o))
                        .as_any()
                        .downcast_ref::<Int8Array>()
                        .cloned()
                        .ok_or_else(|| Error::format(path, "label columns must be Int8"))
                })
                .collect::<Result<_>>()?;
            for i in 0..batch.num_rows() {
                let mut labels = LabelRow::default();
                for (o, a) in OBSERVATIONS.iter().zip(&label_arrays) {
                    let v = if a.is_null(i) { None } else { Some(a.value(i)) };
                    labels.set(
                        *o,
                        Label::from_i8(v)
                            .ok_or_else(|| Error::format(path, format!("label value {v:?}")))?,
                    );
                }
                got.push(Sample {
                    image_id: ids.value(i).to_string(),
                    pixels: image.value(i).to_vec(),
                    width: width.value(i),
                    height: height.value(i),
                    labels,
                });
            }
        }
        if got.len() != distinct.len() {
            return Err(Error::format(
                path,
                format!(
                    "read {} of {} selected rows: truncated shard?",
                    got.len(),
                    distinct.len()
                ),
            ));
        }
        Ok(got)
    }
}
