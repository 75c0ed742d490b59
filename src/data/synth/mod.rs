//! The synthetic chest X-ray world (`chexlab synth`): a dataset in the MIMIC-CXR-JPG layout whose truth is known,
//! both what is on each image and what each report says.
//!
//! Output under `OUT/`:
//! * `files/pXX/pSUBJECT/sSTUDY/<dicom_id>.{png,jpg,raw}` and `files/pXX/pSUBJECT/sSTUDY.txt` (the report);
//! * `mimic-cxr-2.0.0-metadata.csv`, `mimic-cxr-2.0.0-split.csv` (train/validate/test by patient);
//! * `truth/image_labels.csv` (1/0 per observation: what is on the images), `truth/report_labels.csv` (CheXpert
//!   labeler encoding: what the impression states), `truth/severity.csv`;
//! * `reports.csv` — `study_id,impression` in the labeler input format;
//! * `synth.json` — the generator settings, written last: a directory without it is incomplete.
//!
//! Every study draws from its own random stream, seeded from (seed, study index), so the output is identical
//! whatever the thread count. Studies are generated in parallel chunks and streamed to disk.

pub mod radiologist;
pub mod render;
pub mod style;
pub mod world;

use std::fs;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::View;
use crate::data::mimic::{METADATA_CSV, SPLIT_CSV, study_dir};
use crate::error::{Error, Result};
use crate::io::{AtomicFile, commit_csv, csv_writer, write_atomic};
use crate::observations::{Label, LabelRow, OBSERVATIONS};
pub use radiologist::RadiologistRates;
pub use style::ReportStyle;
use world::{Findings, Prior};

/// Name of the manifest that marks a complete synthetic world.
pub const MANIFEST: &str = crate::data::mimic::LAYOUT_HINT;

/// Generator settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Studies to generate.
    pub studies: u64,
    /// Image side in pixels.
    pub image_size: u32,
    /// Seed of every draw.
    pub seed: u64,
    /// Image encoding.
    pub format: ImageFormat,
    /// Marginal prevalence per observation (canonical order; No Finding ignored).
    pub priors: [f64; 14],
    /// How the simulated radiologist writes.
    pub rates: RadiologistRates,
    /// The radiologists' style (a world made before styles existed is `textbook`).
    #[serde(default = "style::textbook")]
    pub report_style: ReportStyle,
    /// How often the realistic styles use their hard constructions.
    #[serde(default = "style::default_difficulty")]
    pub report_difficulty: f64,
    /// Share of patients in the validate and test splits (the rest is train).
    pub valid_share: f64,
    /// Share of patients in the test split.
    pub test_share: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            studies: 3000,
            image_size: 64,
            seed: 0,
            format: ImageFormat::Png,
            priors: world::DEFAULT_PRIORS,
            rates: RadiologistRates::default(),
            report_style: ReportStyle::default(),
            report_difficulty: style::DEFAULT_DIFFICULTY,
            valid_share: 0.1,
            test_share: 0.1,
        }
    }
}

impl SynthConfig {
    fn validate(&self) -> Result<()> {
        if !(16..=512).contains(&self.image_size) {
            return Err(Error::Config(format!(
                "image size {} must be within 16..=512",
                self.image_size
            )));
        }
        style::check_difficulty("report difficulty", self.report_difficulty)?;
        if self.studies == 0 {
            return Err(Error::Config(
                "a synthetic world needs at least one study".into(),
            ));
        }
        if self.valid_share < 0.0
            || self.test_share < 0.0
            || self.valid_share + self.test_share >= 1.0
        {
            return Err(Error::Config(
                "valid_share + test_share must be within [0, 1)".into(),
            ));
        }
        Ok(())
    }
}

/// The file extension of an image format.
pub fn image_ext(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpg",
        ImageFormat::Raw => "raw",
    }
}

/// What `synth.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// The generator and its version.
    pub generator: String,
    /// The settings the world was made with.
    pub config: SynthConfig,
    /// Image file extension.
    pub image_ext: String,
    /// Patients generated.
    pub patients: u64,
    /// Images generated.
    pub images: u64,
}

/// Reads `synth.json` from a world directory, if there is one.
pub fn read_manifest(root: &Path) -> Result<Option<Manifest>> {
    let path = root.join(MANIFEST);
    if !path.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::json(&path, e))
}

/// SplitMix64: decorrelates (seed, index) pairs into independent stream seeds.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One image of a study.
#[derive(Clone, Debug)]
pub struct SynthImage {
    /// DICOM-style image id.
    pub dicom_id: String,
    /// Radiograph view.
    pub view: View,
    /// Encoded image bytes.
    pub pixels: Vec<u8>,
}

/// One generated study, in memory.
#[derive(Clone, Debug)]
pub struct SynthStudy {
    /// Index of the study in generation order.
    pub index: u64,
    /// Patient.
    pub subject_id: u64,
    /// Study.
    pub study_id: u64,
    /// `train`, `validate` or `test`.
    pub split: &'static str,
    /// Examination description, e.g. `CHEST (PA AND LAT)`.
    pub view_desc: &'static str,
    /// What the images show.
    pub findings: Findings,
    /// What the radiologist wrote.
    pub report: radiologist::Report,
    /// The study's images.
    pub images: Vec<SynthImage>,
}

/// Assigns studies to patients: patient p has 1–3 studies, drawn from its own stream.
struct PatientCursor {
    seed: u64,
    patient: u64,
    left: u64,
}

impl PatientCursor {
    fn new(seed: u64) -> Self {
        PatientCursor {
            seed,
            patient: 0,
            left: 0,
        }
    }

    fn studies_of(&self, p: u64) -> u64 {
        match mix(mix(self.seed, 0x5157), p) % 10 {
            0..=4 => 1,
            5..=7 => 2,
            _ => 3,
        }
    }

    /// The patient of the next study.
    fn next(&mut self) -> u64 {
        if self.left == 0 {
            self.patient += 1;
            self.left = self.studies_of(self.patient);
        }
        self.left -= 1;
        self.patient
    }
}

fn split_of(cfg: &SynthConfig, patient: u64) -> &'static str {
    let u = (mix(mix(cfg.seed, 0x5711), patient) >> 11) as f64 / (1u64 << 53) as f64;
    if u < cfg.test_share {
        "test"
    } else if u < cfg.test_share + cfg.valid_share {
        "validate"
    } else {
        "train"
    }
}

fn dicom_id(stream: u64) -> String {
    let parts: Vec<String> = (0..5)
        .map(|k| format!("{:08x}", mix(stream, k) as u32))
        .collect();
    parts.join("-")
}

/// Generates study `index` (of patient `patient`) entirely from its own random stream.
pub fn generate_study(cfg: &SynthConfig, prior: &Prior, index: u64, patient: u64) -> SynthStudy {
    let stream = mix(cfg.seed, index);
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    let findings = prior.sample(&mut rng);
    let frontal = if findings.icu {
        if rng.random_bool(0.9) {
            View::Ap
        } else {
            View::Pa
        }
    } else if rng.random_bool(0.85) {
        View::Pa
    } else {
        View::Ap
    };
    let with_lateral = rng.random_bool(if frontal == View::Pa { 0.6 } else { 0.1 });
    let view_desc = match (frontal, with_lateral) {
        (View::Pa, true) => "CHEST (PA AND LAT)",
        (View::Pa, false) => "CHEST (PA)",
        (_, true) => "CHEST (AP AND LAT)",
        _ => "CHEST (PORTABLE AP)",
    };
    let voice = cfg.report_style.voice(cfg.report_difficulty, &mut rng);
    let report = radiologist::write(&findings, view_desc, &cfg.rates, &voice, &mut rng);
    let mut views = vec![frontal];
    if with_lateral {
        views.push(View::Lateral);
    }
    let images = views
        .into_iter()
        .enumerate()
        .map(|(k, view)| {
            let img_stream = mix(stream, 1000 + k as u64);
            let mut img_rng = ChaCha8Rng::seed_from_u64(img_stream);
            SynthImage {
                dicom_id: dicom_id(img_stream),
                view,
                pixels: render::render(&findings, view, cfg.image_size as usize, &mut img_rng),
            }
        })
        .collect();
    SynthStudy {
        index,
        subject_id: 10_000_000 + patient,
        study_id: 50_000_000 + index,
        split: split_of(cfg, patient),
        view_desc,
        findings,
        report,
        images,
    }
}

/// Encodes a grayscale image.
pub fn encode(pixels: &[u8], size: u32, format: ImageFormat) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::with_capacity(pixels.len() / 2 + 128);
    let res = match format {
        ImageFormat::Raw => {
            out.extend_from_slice(pixels);
            Ok(())
        }
        ImageFormat::Png => image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        )
        .write_image(pixels, size, size, image::ExtendedColorType::L8),
        ImageFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
            .write_image(pixels, size, size, image::ExtendedColorType::L8),
    };
    res.map_err(|e| Error::image(format!("<synthetic {size}x{size} image>"), e))?;
    Ok(out)
}

fn truth_row(study: &SynthStudy, cells: impl Iterator<Item = String>) -> Vec<String> {
    let mut row = vec![study.subject_id.to_string(), study.study_id.to_string()];
    row.extend(cells);
    row
}

/// The image truth as labels (1 / 0 per observation).
pub fn image_labels(f: &Findings) -> LabelRow {
    let mut row = LabelRow::default();
    for o in OBSERVATIONS {
        row.set(
            o,
            if f.has(o) {
                Label::Positive
            } else {
                Label::Negative
            },
        );
    }
    row
}

/// The CSV writers of a world, committed together at the end.
struct Tables {
    metadata: csv::Writer<AtomicFile>,
    split: csv::Writer<AtomicFile>,
    image_truth: csv::Writer<AtomicFile>,
    report_truth: csv::Writer<AtomicFile>,
    severity: csv::Writer<AtomicFile>,
    reports: csv::Writer<AtomicFile>,
}

fn writer(path: &Path, header: Option<&[&str]>) -> Result<csv::Writer<AtomicFile>> {
    let mut w = csv_writer(path)?;
    if let Some(h) = header {
        w.write_record(h).map_err(|e| Error::csv(path, e))?;
    }
    Ok(w)
}

impl Tables {
    fn create(out: &Path) -> Result<Tables> {
        let mut truth_header = vec!["subject_id", "study_id"];
        truth_header.extend(OBSERVATIONS.iter().map(|o| o.name()));
        Ok(Tables {
            metadata: writer(
                &out.join(METADATA_CSV),
                Some(&[
                    "dicom_id",
                    "subject_id",
                    "study_id",
                    "PerformedProcedureStepDescription",
                    "ViewPosition",
                    "Rows",
                    "Columns",
                ]),
            )?,
            split: writer(
                &out.join(SPLIT_CSV),
                Some(&["dicom_id", "study_id", "subject_id", "split"]),
            )?,
            image_truth: writer(&out.join("truth/image_labels.csv"), Some(&truth_header))?,
            report_truth: writer(&out.join("truth/report_labels.csv"), Some(&truth_header))?,
            severity: writer(&out.join("truth/severity.csv"), Some(&truth_header))?,
            reports: writer(&out.join("reports.csv"), None)?,
        })
    }

    fn add(&mut self, s: &SynthStudy, size: u32) -> csv::Result<()> {
        let (subject, study) = (s.subject_id.to_string(), s.study_id.to_string());
        for img in &s.images {
            self.metadata.write_record([
                img.dicom_id.as_str(),
                &subject,
                &study,
                s.view_desc,
                img.view.name(),
                &size.to_string(),
                &size.to_string(),
            ])?;
            self.split
                .write_record([img.dicom_id.as_str(), &study, &subject, s.split])?;
        }
        let img = image_labels(&s.findings);
        self.image_truth
            .write_record(truth_row(s, img.0.iter().map(|l| l.as_csv().to_string())))?;
        self.report_truth.write_record(truth_row(
            s,
            s.report.labels.0.iter().map(|l| l.as_csv().to_string()),
        ))?;
        self.severity.write_record(truth_row(
            s,
            s.findings.severity.iter().map(|v| format!("{v:.3}")),
        ))?;
        self.reports
            .write_record([study.as_str(), &s.report.impression])?;
        Ok(())
    }

    fn commit(self, out: &Path) -> Result<()> {
        for w in [
            self.metadata,
            self.split,
            self.image_truth,
            self.report_truth,
            self.severity,
            self.reports,
        ] {
            commit_csv(w, out)?;
        }
        Ok(())
    }
}

/// Writes a study's report and images under `out/files/...`.
fn write_study_files(out: &Path, s: &SynthStudy, cfg: &SynthConfig) -> Result<()> {
    let dir = out.join(study_dir(s.subject_id, s.study_id));
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let report = dir.with_extension("txt");
    fs::write(&report, &s.report.text).map_err(|e| Error::io(&report, e))?;
    for img in &s.images {
        let path = dir.join(format!("{}.{}", img.dicom_id, image_ext(cfg.format)));
        let bytes = encode(&img.pixels, cfg.image_size, cfg.format)?;
        fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Summary of a generated world.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    /// Studies written.
    pub studies: u64,
    /// Patients written.
    pub patients: u64,
    /// Images written.
    pub images: u64,
    /// Studies in the train split.
    pub train: u64,
    /// Studies in the validate split.
    pub validate: u64,
    /// Studies in the test split.
    pub test: u64,
}

/// Studies generated per parallel chunk (bounds memory: one chunk of studies is in memory at a time).
const CHUNK: u64 = 1024;

/// Generates a world into `out`. The CSV tables appear atomically at the end and `synth.json` last.
///
/// A directory that already holds a world (complete, or left by a killed run) is replaced: the earlier world's
/// files go first, so none of them mixes with the new one; a non-empty directory holding anything else is
/// refused, as is a world larger than the free space of its file system (estimated from studies generated in
/// memory before anything is written).
pub fn generate(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    cfg.validate()?;
    check_free_space(out, cfg)?;
    clear_world(out)?;
    fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest_path = out.join(MANIFEST);
    let prior = Prior::new(cfg.priors);
    let mut tables = Tables::create(out)?;
    let mut cursor = PatientCursor::new(cfg.seed);
    let mut summary = SynthSummary::default();
    let bar = crate::progress::bar(cfg.studies, "synth");
    let mut start = 0;
    while start < cfg.studies {
        let end = (start + CHUNK).min(cfg.studies);
        let jobs: Vec<(u64, u64)> = (start..end).map(|i| (i, cursor.next())).collect();
        let studies: Vec<Result<SynthStudy>> = jobs
            .par_iter()
            .map(|&(i, p)| {
                let s = generate_study(cfg, &prior, i, p);
                write_study_files(out, &s, cfg)?;
                Ok(s)
            })
            .collect();
        for s in studies {
            let s = s?;
            tables
                .add(&s, cfg.image_size)
                .map_err(|e| Error::csv(out.join("(tables)"), e))?;
            summary.studies += 1;
            summary.images += s.images.len() as u64;
            match s.split {
                "train" => summary.train += 1,
                "validate" => summary.validate += 1,
                _ => summary.test += 1,
            }
        }
        bar.inc(end - start);
        start = end;
    }
    bar.finish_and_clear();
    summary.patients = cursor.patient;
    tables.commit(out)?;
    let manifest = Manifest {
        generator: format!("chexlab {}", env!("CARGO_PKG_VERSION")),
        config: cfg.clone(),
        image_ext: image_ext(cfg.format).to_string(),
        patients: summary.patients,
        images: summary.images,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    write_atomic(&manifest_path, json.as_bytes())?;
    Ok(summary)
}

/// The entries a world consists of, directly under its directory.
/// The manifest comes first: once it is gone the directory is an incomplete world, never a complete old one.
fn world_entries() -> [&'static str; 6] {
    [
        MANIFEST,
        "files",
        "truth",
        "reports.csv",
        METADATA_CSV,
        SPLIT_CSV,
    ]
}

/// Empties `out` of an earlier world, or refuses a directory that holds something else.
fn clear_world(out: &Path) -> Result<()> {
    let Ok(listing) = fs::read_dir(out) else {
        return Ok(()); // absent: nothing to clear (creating it reports any other problem)
    };
    let names: Vec<String> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let is_world =
        out.join(MANIFEST).is_file() || (out.join("files").is_dir() && out.join("truth").is_dir());
    if !is_world {
        return Err(Error::Input(format!(
            "{}: not empty and not a synthetic world (it holds {}); write the world into a new or empty directory",
            out.display(),
            names.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    for entry in world_entries() {
        let path = out.join(entry);
        let gone = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    // Temporary tables of a killed run.
    for name in names
        .iter()
        .filter(|n| n.starts_with('.') && n.contains(".tmp-"))
    {
        let _ = fs::remove_file(out.join(name));
    }
    Ok(())
}

/// Bytes a world of `cfg` takes on disk, from up to 64 of its studies generated and encoded in memory: every
/// file rounded up to a 4 KiB block, plus its rows in the tables.
pub fn estimate_bytes(cfg: &SynthConfig) -> Result<u64> {
    const BLOCK: u64 = 4096;
    let prior = Prior::new(cfg.priors);
    let mut cursor = PatientCursor::new(cfg.seed);
    let sample = cfg.studies.min(64);
    let mut bytes = 0u64;
    for i in 0..sample {
        let s = generate_study(cfg, &prior, i, cursor.next());
        let report = s.report.text.len() as u64;
        bytes += report.div_ceil(BLOCK) * BLOCK + 2 * report + 400;
        for img in &s.images {
            let encoded = encode(&img.pixels, cfg.image_size, cfg.format)?.len() as u64;
            bytes += encoded.div_ceil(BLOCK) * BLOCK + 300;
        }
    }
    Ok((bytes / sample.max(1)).saturating_mul(cfg.studies))
}

/// Refuses a world that would not fit in the free space under `out` (with a tenth to spare).
fn check_free_space(out: &Path, cfg: &SynthConfig) -> Result<()> {
    let need = estimate_bytes(cfg)?;
    // The nearest existing ancestor holds the file system the world will be on.
    let mut at = out;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let Some(free) = crate::io::free_bytes(at) else {
        return Ok(()); // not knowable here: the writes themselves report a full disk
    };
    // What an earlier world in `out` occupies is freed first; count none of it, to be safe.
    if need.saturating_add(need / 10) > free {
        return Err(Error::Input(format!(
            "{}: a world of {} studies at {} px needs about {:.1} GB; the file system has {:.1} GB free",
            out.display(),
            cfg.studies,
            cfg.image_size,
            need as f64 / 1e9,
            free as f64 / 1e9
        )));
    }
    Ok(())
}

/// Writes a contact sheet: one row per observation (in canonical order; the No Finding row shows normal studies),
/// `per_row` frontal images with that finding from faint (left) to marked (right). A sidecar `.txt` lists the rows.
pub fn preview(path: &Path, cfg: &SynthConfig, per_row: usize) -> Result<PathBuf> {
    cfg.validate()?;
    let prior = Prior::new(cfg.priors);
    let n = cfg.image_size as usize;
    let mut picks: Vec<Vec<(f32, Vec<u8>)>> = vec![Vec::new(); OBSERVATIONS.len()];
    let mut cursor = PatientCursor::new(cfg.seed);
    let want = per_row * 4;
    for i in 0..50_000u64 {
        let p = cursor.next();
        let s = generate_study(cfg, &prior, i, p);
        for o in OBSERVATIONS {
            if s.findings.has(o) && picks[o.index()].len() < want {
                picks[o.index()].push((s.findings.severity(o), s.images[0].pixels.clone()));
            }
        }
        if picks.iter().all(|v| v.len() >= want) {
            break;
        }
    }
    let (w, h) = (per_row * n, OBSERVATIONS.len() * n);
    let mut sheet = vec![0u8; w * h];
    let mut legend = String::from("row\tobservation\tseverities (left to right)\n");
    for (r, row) in picks.iter_mut().enumerate() {
        row.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Spread the picks over the severity range.
        let chosen: Vec<&(f32, Vec<u8>)> = (0..per_row.min(row.len()))
            .map(|k| &row[k * row.len() / per_row.min(row.len()).max(1)])
            .collect();
        legend.push_str(&format!(
            "{r}\t{}\t{}\n",
            OBSERVATIONS[r].name(),
            chosen
                .iter()
                .map(|c| format!("{:.2}", c.0))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        for (c, (_, px)) in chosen.iter().enumerate() {
            for y in 0..n {
                let dst = (r * n + y) * w + c * n;
                sheet[dst..dst + n].copy_from_slice(&px[y * n..(y + 1) * n]);
            }
        }
    }
    let mut png = Vec::new();
    {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&sheet, w as u32, h as u32, image::ExtendedColorType::L8)
            .map_err(|e| Error::image(path, e))?;
    }
    write_atomic(path, &png)?;
    let legend_path = path.with_extension("txt");
    write_atomic(&legend_path, legend.as_bytes())?;
    Ok(legend_path)
}

/// Image encoding of the synthetic world.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// Lossless PNG.
    #[default]
    Png,
    /// JPEG at quality 92.
    Jpeg,
    /// Raw 8-bit grey pixels.
    Raw,
}
