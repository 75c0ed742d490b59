//! `chexlab label train`: a BERT labeler trained on a MIMIC-CXR(-JPG) style dataset (real or synthetic), then
//! scored on the test split's reports next to the rule labeler.
//!
//! Splits: training reports come from the train split, VisualCheXbert's calibration from the validation split,
//! and the scores from the test split, so nothing is scored on what it was fitted to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;

use super::BertSection;
use crate::comm::Communicator;
use crate::comm::ComputeDevice;
use crate::data::DatasetConfig;
use crate::data::Split;
use crate::data::mimic::{MimicLayout, study_label_map};
use crate::data::report::extract;
use crate::error::{Error, Result};
use crate::labelers::metrics::Confusion;
use crate::labelers::rules::RuleLabeler;
use crate::learn::OptimizerConfig;
use crate::observations::UncertaintyPolicy;
use crate::observations::{Label, LabelRow, N_OBS};

use super::model::{BertConfig, BertLabeler, HeadKind};
use super::tokenizer::{Encoded, ReportTokenizer};
use super::train::{Example, FitSettings, Target, fit, fit_calibration};
use super::{BertReportLabeler, LabelerMeta};

/// One study's report.
#[derive(Clone, Debug)]
pub struct StudyReport {
    /// Study.
    pub study_id: u64,
    /// Its split.
    pub split: Split,
    /// The report part the labelers read.
    pub text: String,
}

/// What BERT labeler training reads of a study: its `[bert]`, `[dataset]` and `[optimizer]` sections, the run
/// directory, the seed and the device (the study config builds it: `Config::bert_job`).
pub struct BertJob<'a> {
    /// The `[bert]` section.
    pub bert: &'a BertSection,
    /// The dataset whose reports are read.
    pub dataset: &'a DatasetConfig,
    /// Adam's settings (the learning rates come from `[bert]`).
    pub optimizer: &'a OptimizerConfig,
    /// The run directory (relative labeler paths are under it).
    pub run_dir: &'a Path,
    /// The study's seed.
    pub seed: u64,
    /// Where the ranks compute.
    pub device: ComputeDevice,
}

/// Reads every study's report (the configured section) of the dataset, in parallel.
pub fn read_corpus(cfg: &BertJob) -> Result<Vec<StudyReport>> {
    let layout = MimicLayout::open(&cfg.dataset.root, cfg.dataset.reports_root.as_deref())?;
    let (studies, _) = layout.studies(cfg.dataset.on_bad_record)?;
    studies
        .par_iter()
        .map(|s| {
            Ok(StudyReport {
                study_id: s.study_id,
                split: s.split,
                text: extract(
                    &layout.read_report(s.subject_id, s.study_id)?,
                    cfg.dataset.sections,
                ),
            })
        })
        .collect()
}

/// Labels in CheXbert head order.
fn head_order(row: &LabelRow) -> [Label; N_OBS] {
    HeadKind::Chexbert.observations().map(|o| row.get(o))
}

/// Scores of one labeler on the test split.
#[derive(Clone, Debug, Serialize)]
pub struct LabelerScores {
    /// Which labeler.
    pub labeler: String,
    /// Support-weighted F1 against report truth (every observation and non-blank class).
    pub report_weighted_f1: Option<f64>,
    /// Mean positive-class F1 against image truth (uncertain counted as positive).
    pub image_mean_positive_f1: Option<f64>,
}

/// What `label train` did.
#[derive(Clone, Debug, Serialize)]
pub struct LabelTrainReport {
    /// Head set trained.
    pub kind: HeadKind,
    /// Training-split reports.
    pub train_reports: usize,
    /// Of them, with expert labels (CheXbert's fine-tuning).
    pub expert_reports: usize,
    /// Reports cut to the maximum length.
    pub truncated: usize,
    /// Per phase, the mean loss of each epoch.
    pub epoch_loss: Vec<Vec<f64>>,
    /// Wall time.
    pub seconds: f64,
    /// Test-split reports scored.
    pub test_reports: usize,
    /// Scores of the rule labeler and the trained one on them.
    pub scores: Vec<LabelerScores>,
}

fn resolve(cfg: &BertJob, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cfg.dataset.root.join(p)
    }
}

/// Per-study probabilities of an image model: a CSV with `study_id` (or `image_id`, averaged per study through the
/// dataset's split table) and one column per observation, named as in the labeler format or `p_<snake name>`.
pub fn read_teacher(cfg: &BertJob, path: &Path) -> Result<HashMap<u64, [Option<f32>; N_OBS]>> {
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::csv(path, e))?;
    let header = r.headers().map_err(|e| Error::csv(path, e))?.clone();
    let find = |n: &str| header.iter().position(|h| h == n);
    // (CSV column, head) of every observation the file has.
    let cols: Vec<(usize, usize)> = HeadKind::Chexbert
        .observations()
        .iter()
        .enumerate()
        .filter_map(|(h, o)| {
            find(o.name())
                .or_else(|| find(&format!("p_{}", o.snake_name())))
                .map(|c| (c, h))
        })
        .collect();
    if cols.is_empty() {
        return Err(Error::format(
            path,
            "no observation columns (names as in the labeler format, or p_<name>)",
        ));
    }
    let image_to_study: Option<HashMap<String, u64>> = match (find("study_id"), find("image_id")) {
        (Some(_), _) => None,
        (None, Some(_)) => {
            let layout = MimicLayout::open(&cfg.dataset.root, None)?;
            let mut m = HashMap::new();
            for row in crate::data::mimic::read_split(&layout.split, cfg.dataset.on_bad_record)? {
                let row = row?;
                m.insert(row.dicom_id, row.study_id);
            }
            Some(m)
        }
        _ => return Err(Error::format(path, "needs a study_id or image_id column")),
    };
    let id_col = find("study_id")
        .or_else(|| find("image_id"))
        .expect("checked");
    let heads = HeadKind::Chexbert.observations();
    let mut sums: HashMap<u64, ([f64; N_OBS], [u32; N_OBS])> = HashMap::new();
    for (i, rec) in r.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| Error::csv(path, e))?;
        let id = rec.get(id_col).unwrap_or("");
        let study = match &image_to_study {
            None => id
                .parse::<u64>()
                .map_err(|_| Error::record(path, line, format!("study_id '{id}'")))?,
            Some(m) => *m.get(id).ok_or_else(|| {
                Error::record(path, line, format!("image '{id}' not in the dataset"))
            })?,
        };
        let entry = sums.entry(study).or_insert(([0.0; N_OBS], [0; N_OBS]));
        for &(c, h) in &cols {
            let cell = rec.get(c).unwrap_or("").trim();
            if cell.is_empty() {
                continue;
            }
            let v: f64 = cell
                .parse()
                .ok()
                .filter(|v: &f64| (0.0..=1.0).contains(v))
                .ok_or_else(|| {
                    Error::record(
                        path,
                        line,
                        format!("{}: '{cell}' is not a probability", heads[h]),
                    )
                })?;
            entry.0[h] += v;
            entry.1[h] += 1;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(k, (s, n))| {
            (
                k,
                std::array::from_fn(|h| (n[h] > 0).then(|| (s[h] / f64::from(n[h])) as f32)),
            )
        })
        .collect())
}

fn fit_settings(b: &BertSection, cfg: &BertJob, epochs: usize, lr: f64, seed: u64) -> FitSettings {
    FitSettings {
        epochs,
        batch_size: b.batch_size,
        lr,
        warmup: 0.1,
        optimizer: OptimizerConfig {
            weight_decay: 0.0,
            ..cfg.optimizer.clone()
        },
        seed,
    }
}

/// The model training starts from, with its encoder sizes: a labeler directory's encoder (VisualCheXbert from
/// CheXbert), a pretrained encoder checkpoint's, or a fresh seeded one of `[bert]`'s sizes.
fn start_model(
    cfg: &BertJob,
    kind: HeadKind,
    vocab_size: usize,
    init: Option<(super::LabelerMeta, ReportTokenizer, Vec<u8>)>,
    init_dir: Option<&Path>,
    ad: &burn::tensor::Device,
    root: bool,
) -> Result<(BertConfig, BertLabeler)> {
    let b = &cfg.bert;
    let (bert_cfg, pretrained) = match (&init, &b.pretrained) {
        (Some((meta, _, _)), _) => (meta.bert.clone(), None),
        (None, Some(p)) => {
            let checkpoint = super::import::Checkpoint::read(p)?;
            (checkpoint.config(Some(b.heads))?, Some((p, checkpoint)))
        }
        (None, None) => {
            let mut c = BertConfig::new(vocab_size, b.hidden, b.layers, b.heads, b.intermediate);
            c.max_position_embeddings = b.max_len;
            c.validate().map_err(Error::Config)?;
            (c, None)
        }
    };
    let model = seeded_labeler(&bert_cfg, kind, b.dropout, cfg.seed, ad);
    let model = match (pretrained, init, init_dir) {
        (Some((p, checkpoint)), _, _) => {
            let (bert, n) = checkpoint.load_encoder(model.bert)?;
            if root {
                tracing::info!("encoder: {n} tensors from {}", p.display());
            }
            BertLabeler { bert, ..model }
        }
        (None, Some((meta, _, bytes)), Some(dir)) => {
            let src = BertLabeler::new(meta.bert.init(ad), meta.kind, meta.dropout, ad);
            let src = super::load_record(src, bytes, &dir.join(super::MODEL_FILE))?;
            if root {
                tracing::info!("encoder and tokenizer from {}", dir.display());
            }
            BertLabeler {
                bert: src.bert,
                ..model
            }
        }
        _ => model,
    };
    Ok((bert_cfg, model))
}

/// Fits VisualCheXbert's per-observation logistic regressions on `dev` reports and their image `labels`.
fn calibrate(
    labeler: &mut BertReportLabeler,
    dev: &[&StudyReport],
    labels: &HashMap<u64, LabelRow>,
) -> Result<()> {
    let encoded: Vec<Encoded> = dev
        .par_iter()
        .map(|s| labeler.tokenizer.encode(&s.text))
        .collect::<Result<_>>()?;
    let probs = labeler.outputs(&encoded);
    let truth: Vec<[Option<bool>; N_OBS]> = dev
        .iter()
        .map(|s| {
            head_order(&labels[&s.study_id]).map(|l| match l {
                Label::Positive => Some(true),
                Label::Negative => Some(false),
                _ => None,
            })
        })
        .collect();
    labeler.meta.calibration = Some(fit_calibration(&probs, &truth, 1e-2));
    Ok(())
}

/// CheXbert's fine-tuning examples: up to `expert_studies` training studies with expert labels, drawn by seed.
fn expert_examples(
    cfg: &BertJob,
    train: &[&StudyReport],
    train_enc: &[Encoded],
    expert: &HashMap<u64, LabelRow>,
) -> Vec<Example> {
    let mut with_expert: Vec<usize> = (0..train.len())
        .filter(|&i| expert.contains_key(&train[i].study_id))
        .collect();
    with_expert.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        cfg.seed ^ 0xE4BE,
    ));
    with_expert.truncate(cfg.bert.expert_studies);
    with_expert.sort_unstable();
    with_expert
        .iter()
        .map(|&i| Example {
            encoded: train_enc[i].clone(),
            target: Target::from_labels(head_order(&expert[&train[i].study_id])),
        })
        .collect()
}

/// VisualCheXbert's examples: the training studies the teacher has probabilities for (`bert.teacher`).
fn teacher_examples(
    cfg: &BertJob,
    train: &[&StudyReport],
    train_enc: &[Encoded],
) -> Result<Vec<Example>> {
    let teacher_path = cfg.bert.teacher.as_ref().ok_or_else(|| {
        Error::Config(
            "VisualCheXbert regresses an image model's probabilities: set bert.teacher to a CSV of them \
             (e.g. `chexlab evaluate --split train` predictions of a classifier)"
                .into(),
        )
    })?;
    let teacher = read_teacher(cfg, &resolve(cfg, teacher_path))?;
    let examples: Vec<Example> = train
        .iter()
        .zip(train_enc)
        .filter_map(|(s, e)| {
            teacher.get(&s.study_id).map(|p| Example {
                encoded: e.clone(),
                target: Target::Probs(*p),
            })
        })
        .collect();
    if examples.is_empty() {
        return Err(Error::format(
            teacher_path,
            "no training study has teacher probabilities",
        ));
    }
    Ok(examples)
}

/// Labels per study id.
type StudyLabels = HashMap<u64, LabelRow>;

/// The trained labeler's and the rule labeler's agreement with report and image truth on the `test` reports.
/// The truth tables are those training already read; the others are optional here: without one, its column stays
/// empty.
fn test_scores(
    cfg: &BertJob,
    labeler: &BertReportLabeler,
    rules: &RuleLabeler,
    test: &[&StudyReport],
    report_truth: Option<StudyLabels>,
    image_truth: Option<StudyLabels>,
) -> Result<Vec<LabelerScores>> {
    let texts: Vec<&str> = test.iter().map(|s| s.text.as_str()).collect();
    let bert_rows = labeler.label_texts(&texts)?;
    let rule_rows: Vec<LabelRow> = texts.par_iter().map(|t| rules.label(t)).collect();
    let optional = |p: &Path| {
        study_label_map(&resolve(cfg, p), cfg.dataset.on_bad_record)
            .ok()
            .map(|m| m.0)
    };
    let report_truth = report_truth.or_else(|| optional(&cfg.bert.expert_labels));
    let image_truth = image_truth.or_else(|| optional(&cfg.bert.dev_labels));
    Ok([
        ("chexpert (rules)", &rule_rows),
        (labeler.meta.kind.name(), &bert_rows),
    ]
    .into_iter()
    .map(|(name, rows)| LabelerScores {
        labeler: name.into(),
        report_weighted_f1: agreement(test, rows, report_truth.as_ref(), false),
        image_mean_positive_f1: agreement(test, rows, image_truth.as_ref(), true),
    })
    .collect())
}

/// How `rows` (labels of the `test` reports) agree with `truth`: the mean positive F1 against image truth
/// (uncertain counted positive), else the weighted F1 against report truth; none without truth for every study.
fn agreement(
    test: &[&StudyReport],
    rows: &[LabelRow],
    truth: Option<&HashMap<u64, LabelRow>>,
    image: bool,
) -> Option<f64> {
    let truth = truth?;
    let mut c = Confusion::default();
    for (s, p) in test.iter().zip(rows.iter()) {
        c.add(truth.get(&s.study_id)?, p);
    }
    if image {
        c.binary_scores(UncertaintyPolicy::Ones).1.into()
    } else {
        c.report_scores().1.into()
    }
}

/// Trains a BERT labeler of `kind` as configured in `cfg.bert`, writes it to `out` (a labeler directory plus
/// `train_report.json`), and scores it and the rule labeler on the test split.
pub fn train_labeler(
    cfg: &BertJob,
    kind: HeadKind,
    out: &Path,
    comm: &dyn Communicator,
) -> Result<LabelTrainReport> {
    let t0 = std::time::Instant::now();
    let b = &cfg.bert;
    let root = comm.rank() == 0;
    let corpus = read_corpus(cfg)?;
    let of = |split: Split| corpus.iter().filter(move |s| s.split == split);
    let train: Vec<&StudyReport> = of(Split::Train).collect();
    if train.is_empty() {
        return Err(Error::Input(format!(
            "{}: no training-split reports",
            cfg.dataset.root.display()
        )));
    }

    // A labeler to start from (VisualCheXbert from CheXbert): its tokenizer, sizes and encoder.
    let init_dir = b
        .init_from
        .as_ref()
        .filter(|_| kind == HeadKind::Visualchexbert)
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                cfg.run_dir.join(p)
            }
        });
    let init = init_dir
        .as_deref()
        .map(|d| super::read_dir(d, None))
        .transpose()?;

    // Fail before training, not after, when the output directory cannot be made.
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The vocabulary: given, or trained on the training reports by rank 0 and sent to every rank.
    let mut tok_json: Vec<u8> = if root {
        let tok = match (&init, &b.tokenizer) {
            (Some((_, t, _)), _) => t.clone(),
            (None, Some(p)) => ReportTokenizer::from_path(p)?,
            (None, None) => {
                ReportTokenizer::train(train.iter().map(|s| s.text.as_str()), b.vocab_size, 2)?
            }
        };
        tok.to_json()?.into_bytes()
    } else {
        Vec::new()
    };
    comm.broadcast_bytes(&mut tok_json, 0)?;
    let tok = ReportTokenizer::from_json_bytes(&tok_json)?;

    let device = crate::comm::compute_device(cfg.device, comm.local_rank())?;
    let ad = device.clone().autodiff();
    let (bert_cfg, model) = start_model(
        cfg,
        kind,
        tok.vocab_size(),
        init,
        init_dir.as_deref(),
        &ad,
        root,
    )?;
    let tok = tok.with_max_len(b.max_len.min(bert_cfg.max_position_embeddings));

    let train_enc: Vec<Encoded> = train
        .par_iter()
        .map(|s| tok.encode(&s.text))
        .collect::<Result<_>>()?;
    let truncated = train_enc.iter().filter(|e| e.truncated).count();
    let mut report = LabelTrainReport {
        kind,
        train_reports: train.len(),
        expert_reports: 0,
        truncated,
        epoch_loss: Vec::new(),
        seconds: 0.0,
        test_reports: 0,
        scores: Vec::new(),
    };
    // One training phase; its per-epoch losses go into the report.
    let mut epoch_loss = Vec::new();
    let mut phase =
        |model, examples: &[Example], s: &FitSettings, what: &str| -> Result<BertLabeler> {
            let (m, log) = fit(model, &tok, examples, s, comm, &ad, what)?;
            epoch_loss.push(log.epoch_loss);
            Ok(m)
        };
    let rules = RuleLabeler::default();
    let mut model = model;
    // Truth tables read for training are kept for the scores.
    let mut report_truth: Option<HashMap<u64, LabelRow>> = None;
    let mut image_truth: Option<HashMap<u64, LabelRow>> = None;
    match kind {
        HeadKind::Chexbert => {
            // Phase 1: the rule labeler's labels of every training report.
            let examples: Vec<Example> = train
                .par_iter()
                .zip(train_enc.par_iter())
                .map(|(s, e)| Example {
                    encoded: e.clone(),
                    target: Target::from_labels(head_order(&rules.label(&s.text))),
                })
                .collect();
            let s = fit_settings(b, cfg, b.epochs, b.lr, cfg.seed);
            model = phase(model, &examples, &s, "chexbert (rule labels)")?;
            // Phase 2: expert labels of a few training studies.
            let expert_path = resolve(cfg, &b.expert_labels);
            let expert =
                report_truth.insert(study_label_map(&expert_path, cfg.dataset.on_bad_record)?.0);
            let examples = expert_examples(cfg, &train, &train_enc, expert);
            report.expert_reports = examples.len();
            if b.finetune_epochs > 0 && !examples.is_empty() {
                let mut s = fit_settings(b, cfg, b.finetune_epochs, b.finetune_lr, cfg.seed ^ 1);
                s.batch_size = s.batch_size.min((examples.len() / comm.size()).max(1));
                model = phase(model, &examples, &s, "chexbert (expert labels)")?;
            }
        }
        HeadKind::Visualchexbert => {
            let examples = teacher_examples(cfg, &train, &train_enc)?;
            let s = fit_settings(b, cfg, b.epochs, b.lr, cfg.seed);
            model = phase(model, &examples, &s, "visualchexbert (teacher)")?;
        }
    }

    report.epoch_loss = epoch_loss;
    let mut labeler = BertReportLabeler::new(meta(kind, &bert_cfg, b, &tok), tok, model);
    if kind == HeadKind::Visualchexbert {
        // The logistic regressions, on the validation split's image labels.
        let labels = image_truth
            .insert(study_label_map(&resolve(cfg, &b.dev_labels), cfg.dataset.on_bad_record)?.0);
        let dev: Vec<&StudyReport> = of(Split::Valid)
            .filter(|s| labels.contains_key(&s.study_id))
            .collect();
        calibrate(&mut labeler, &dev, labels)?;
    }
    // Scores on the test split, with the rule labeler alongside.
    let test: Vec<&StudyReport> = of(Split::Test).collect();
    report.test_reports = test.len();
    report.scores = test_scores(cfg, &labeler, &rules, &test, report_truth, image_truth)?;
    report.seconds = t0.elapsed().as_secs_f64();
    if root {
        labeler.save(out)?;
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        crate::io::write_atomic(out.join("train_report.json"), &json)?;
    }
    comm.barrier()?; // every rank returns after rank 0 has written
    Ok(report)
}

fn meta(kind: HeadKind, bert: &BertConfig, b: &BertSection, tok: &ReportTokenizer) -> LabelerMeta {
    LabelerMeta {
        kind,
        bert: bert.clone(),
        max_len: tok.max_len(),
        dropout: b.dropout,
        calibration: None,
    }
}

/// A labeler initialised from `seed` (Burn's generator is process-global and draws lazily: see
/// the DenseNet trainer's seeded initialisation).
pub fn seeded_labeler(
    c: &BertConfig,
    kind: HeadKind,
    dropout: f64,
    seed: u64,
    device: &Device,
) -> BertLabeler {
    crate::learn::with_seed(seed, device, || {
        let m = BertLabeler::new(c.init(device), kind, dropout, device);
        crate::model::state_values(&m);
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_probabilities_are_averaged_per_study_and_bad_cells_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::demo(&[]).unwrap();
        let path = dir.path().join("teacher.csv");
        std::fs::write(
            &path,
            "study_id,Edema,p_cardiomegaly\n7,0.25,\n7,0.75,0.5\n",
        )
        .unwrap();
        let t = read_teacher(&cfg.bert_job(), &path).unwrap();
        let heads = HeadKind::Chexbert.observations();
        let at = |o| heads.iter().position(|x| *x == o).unwrap();
        assert_eq!(
            t[&7][at(crate::observations::Observation::Edema)],
            Some(0.5)
        );
        assert_eq!(
            t[&7][at(crate::observations::Observation::Cardiomegaly)],
            Some(0.5)
        );
        assert_eq!(t[&7][at(crate::observations::Observation::Fracture)], None);

        std::fs::write(&path, "study_id,Edema\n7,0.25\n8,1.5\n").unwrap();
        let err = read_teacher(&cfg.bert_job(), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("teacher.csv") && err.contains('3') && err.contains("Edema"),
            "{err}"
        );
    }
}
