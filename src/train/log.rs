//! `metrics.csv` and `metrics.jsonl`: one row per logged training step and per validation (written by rank 0).

use crate::observations::Observation;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::RunFiles;
use crate::error::{Error, Result};
use crate::eval::score::mean_auroc;

/// One row of the metrics files: a training step (loss, rate, throughput, gradient norm) or a validation (AUROC
/// per observation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MetricsRow<'a> {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch of the step.
    pub epoch: u64,
    /// `train` or `valid`.
    pub kind: &'a str,
    /// Mean loss since the last training row.
    pub loss: Option<f64>,
    /// The learning rate of the step.
    pub lr: f64,
    /// Images per second since the last training row, all ranks together.
    pub images_per_s: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// AUROC per observation (validation rows).
    pub auroc: Option<&'a [(String, Option<f64>)]>,
}

/// Appends rows to metrics.csv / metrics.jsonl; on resume, first drops rows past the checkpoint's step.
pub(crate) struct MetricsLog {
    csv: std::fs::File,
    jsonl: std::fs::File,
    csv_path: PathBuf,
    obs: Vec<Observation>,
}

impl MetricsLog {
    pub(crate) fn open(
        files: &RunFiles,
        obs: &[Observation],
        keep_until: Option<u64>,
    ) -> Result<Self> {
        let (csv_path, jsonl_path) = (files.metrics_csv(), files.metrics_jsonl());
        let header = {
            let mut h = vec![
                "step",
                "epoch",
                "kind",
                "loss",
                "lr",
                "images_per_s",
                "grad_norm",
                "mean_auroc",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
            h.extend(
                obs.iter()
                    .map(|o| format!("auroc_{}", o.name().to_lowercase().replace(' ', "_"))),
            );
            h.join(",")
        };
        let keep = |path: &Path, csv: bool| -> Result<String> {
            let Some(limit) = keep_until else {
                return Ok(if csv {
                    format!("{header}\n")
                } else {
                    String::new()
                });
            };
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut out = String::new();
            for (i, line) in text.lines().enumerate() {
                let step = if csv {
                    if i == 0 {
                        out.push_str(&format!("{header}\n"));
                        continue;
                    }
                    line.split(',').next().and_then(|s| s.parse::<u64>().ok())
                } else {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                };
                if step.is_some_and(|s| s <= limit) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            if csv && out.is_empty() {
                out = format!("{header}\n");
            }
            Ok(out)
        };
        let csv_text = keep(&csv_path, true)?;
        let jsonl_text = keep(&jsonl_path, false)?;
        crate::io::write_atomic(&csv_path, csv_text.as_bytes())?;
        crate::io::write_atomic(&jsonl_path, jsonl_text.as_bytes())?;
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(p)
                .map_err(|e| Error::io(p, e))
        };
        Ok(MetricsLog {
            csv: append(&csv_path)?,
            jsonl: append(&jsonl_path)?,
            csv_path,
            obs: obs.to_vec(),
        })
    }

    /// Appends one row to both files.
    pub(crate) fn row(&mut self, r: &MetricsRow) -> Result<()> {
        let MetricsRow {
            step,
            epoch,
            kind,
            loss,
            lr,
            images_per_s: ips,
            grad_norm,
            auroc: table,
        } = *r;
        let f = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
        let mean = table.and_then(mean_auroc);
        let mut cells = vec![
            step.to_string(),
            epoch.to_string(),
            kind.to_string(),
            f(loss),
            format!("{lr:.3e}"),
            f(ips),
            f(grad_norm),
            f(mean),
        ];
        let mut json = serde_json::json!({
            "step": step, "epoch": epoch, "kind": kind, "loss": loss, "lr": lr,
            "images_per_s": ips, "grad_norm": grad_norm, "mean_auroc": mean,
        });
        for (k, o) in self.obs.iter().enumerate() {
            let a = table.and_then(|t| t.get(k)).and_then(|(_, a)| *a);
            cells.push(f(a));
            json["auroc"][o.name()] = serde_json::json!(a);
        }
        let io = |e| Error::io(&self.csv_path, e);
        writeln!(self.csv, "{}", cells.join(",")).map_err(io)?;
        writeln!(self.jsonl, "{json}").map_err(io)?;
        Ok(())
    }
}
