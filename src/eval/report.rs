//! `chexlab report`: the study's story from a run directory — `report.md`, a self-contained `report.html` (plots
//! inline as SVG), and `plots/` (PNG + SVG). Reads `config.resolved.toml`, `results.json` (written by `evaluate`),
//! `eval/<source>/predictions_<split>.csv` (ROC curves), `train/<source>/metrics.csv` (training curves) and, when
//! the pipeline labelled reports, `labels/metrics.json` (labeler agreement with truth).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::results::{PairEffect, Results};
use super::score::{observation_pairs, read_predictions};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::plots::{Chart, Series, line_chart, roc_points};
use crate::observations::Observation;
use crate::run_dir::RunDir;

/// Agreement of one labeler's labels with the truth (written by the pipeline's label-evaluation stage).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelerAgreement {
    /// Support-weighted F1 against report truth.
    pub report_weighted_f1: Option<f64>,
    /// Mean positive-class F1 against image truth.
    pub image_mean_positive_f1: Option<f64>,
    /// Positive-class F1 against image truth per observation (those the truth has positives of).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_positive_f1: BTreeMap<String, f64>,
}

/// What the report says of the study besides its numbers (the study config describes itself:
/// `Config::report_study`).
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    /// Dataset, seed, model and optimisation, as Markdown sentences.
    pub configuration: String,
    /// The label sources with their kind and uncertainty policy, as Markdown.
    pub sources: String,
    /// The observations the classifiers predict, in the tables' order.
    pub observations: Vec<Observation>,
}

/// What `report` wrote.
#[derive(Clone, Debug)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html` (plots inline).
    pub html: PathBuf,
    /// Plot files written (PNG and SVG).
    pub plots: Vec<PathBuf>,
    /// The headline (Markdown), to print: the result in words, then the AUROC table.
    pub headline: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

/// A p-value for a table: three decimals, or "< 0.001".
fn p_value(v: Option<f64>) -> String {
    match v {
        Some(p) if p < 0.001 => "< 0.001".into(),
        other => f(other),
    }
}

fn f(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

/// Markdown-ish text as HTML text: escaped, `**strong**` and `` `code` `` spans rendered (a mark without its
/// closing partner stays as text).
fn html_text(t: &str) -> String {
    let escaped = t
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let spans = span(&escaped, "`", "code");
    span(&spans, "**", "strong")
}

/// `text` with every closed pair of `mark` around a span turned into that span inside `<tag>`.
fn span(text: &str, mark: &str, tag: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(mark) {
        let after = &rest[open + mark.len()..];
        let Some(close) = after.find(mark) else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&format!("<{tag}>{}</{tag}>", &after[..close]));
        rest = &after[close + mark.len()..];
    }
    out.push_str(rest);
    out
}

/// A Markdown table (the HTML version is rendered from the same rows).
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn markdown(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}|\n",
            self.head.join(" | "),
            vec!["---"; self.head.len()].join("|")
        );
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }

    fn html(&self) -> String {
        let mut s = String::from("<table><thead><tr>");
        for h in &self.head {
            let _ = write!(s, "<th>{}</th>", html_text(h));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                let bold = c.starts_with("**");
                let _ = write!(
                    s,
                    "<td>{}{}{}</td>",
                    if bold { "<b>" } else { "" },
                    html_text(c),
                    if bold { "</b>" } else { "" }
                );
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>\n");
        s
    }
}

/// One section: a heading, paragraphs, tables and figures, rendered to both formats.
enum Block {
    H2(String),
    P(String),
    T(Table),
    /// (caption, svg path, png path)
    Fig(String, PathBuf, PathBuf),
}

/// Writes the report of `run_dir` for `split`, describing `study`.
pub fn write_report(run: &RunDir, split: Split, study: &Study) -> Result<ReportFiles> {
    let run_dir = run.path();
    let results_path = run.results();
    if !results_path.is_file() {
        return Err(Error::format(
            &results_path,
            "missing: run `chexlab evaluate --run` first",
        ));
    }
    let results = Results::read(&results_path)?;
    let sources: Vec<String> = results.sources.keys().cloned().collect();
    if sources.is_empty() {
        return Err(Error::format(&results_path, "no scored label source"));
    }
    let plots_dir = run.plots();
    std::fs::create_dir_all(&plots_dir).map_err(|e| Error::io(&plots_dir, e))?;
    let mut p = Page {
        run,
        split,
        study,
        results: &results,
        sources,
        // The label set every classifier was measured against, or each its own.
        reference: match &results.reference {
            Some(r) => format!("`{r}`"),
            None => "each source's own".to_string(),
        },
        level: format!("{:.0}%", results.ci * 100.0),
        plots_dir,
        blocks: Vec::new(),
        plots: Vec::new(),
    };
    let summary = in_words(&mut p);
    configuration(&mut p);
    labeler_agreement(&mut p)?;
    let table = auroc_per_source(&mut p);
    let headline = match summary {
        Some(s) => format!("{s}\n\n{table}"),
        None => table,
    };
    paired_differences(&mut p);
    dose_response_section(&mut p)?;
    training_section(&mut p)?;
    roc_curves(&mut p)?;
    p.blocks.push(Block::P(format!(
        "Every number of this report is in `{}`.",
        results_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
    )));

    let title = format!("chexlab report — {}", run_dir.display());
    let md = render_markdown(&title, &p.blocks, run_dir);
    let html = render_html(&title, &p.blocks)?;
    let markdown = run.report_md();
    let html_path = run.report_html();
    crate::io::write_atomic(&markdown, md.as_bytes())?;
    crate::io::write_atomic(&html_path, html.as_bytes())?;
    Ok(ReportFiles {
        markdown,
        html: html_path,
        plots: p.plots,
        headline,
    })
}

/// A report being written: what it reads, and the blocks and plot files so far.
struct Page<'a> {
    run: &'a RunDir,
    split: Split,
    study: &'a Study,
    results: &'a Results,
    /// The scored sources, in the results' order.
    sources: Vec<String>,
    /// What AUROC was measured against, as the text says it.
    reference: String,
    /// The intervals' confidence level, as text.
    level: String,
    plots_dir: PathBuf,
    blocks: Vec<Block>,
    plots: Vec<PathBuf>,
}

/// The opening paragraph: the study's result in words — the sources ranked by mean AUROC, which pairs differ
/// after Holm's correction (or the largest difference when none does), and where the dose–response places the
/// sources off its curve. Returns it (Markdown), for the headline.
fn in_words(p: &mut Page) -> Option<String> {
    let (results, level) = (p.results, &p.level);
    let signed = |v: f64| format!("{v:+.3}");
    let interval = |(lo, hi): (f64, f64)| format!("[{}, {}]", signed(lo), signed(hi));
    let mut ranked: Vec<(&String, f64, u32)> = results
        .sources
        .iter()
        .filter_map(|(n, s)| Some((n, s.mean_auroc?, s.replicates)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if ranked.is_empty() {
        return None;
    }
    let most = ranked.iter().map(|r| r.2).max().unwrap_or(1);
    let mut text = format!(
        "**In short.** Ranked by mean test AUROC over the observations{}: {}.",
        if most > 1 {
            format!(" (each a mean over {most} training replicates)")
        } else {
            String::new()
        },
        ranked
            .iter()
            .map(|(n, m, _)| format!("`{n}` {m:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let significant: Vec<&PairEffect> =
        results.effects.iter().filter(|e| e.p_holm < 0.05).collect();
    let describe = |e: &PairEffect| {
        format!(
            "`{}` − `{}` {} ({level} interval {})",
            e.a,
            e.b,
            signed(e.effect.diff),
            interval(e.effect.ci)
        )
    };
    if !results.effects.is_empty() {
        text.push_str(&if significant.is_empty() {
            let largest = results
                .effects
                .iter()
                .filter(|e| e.effect.diff.is_finite())
                .max_by(|a, b| a.effect.diff.abs().total_cmp(&b.effect.diff.abs()));
            format!(
                " No two sources' classifiers differ in mean AUROC after Holm's correction over the {} pairs{}.",
                results.effects.len(),
                largest.map_or(String::new(), |e| format!("; the largest difference is {}", describe(e)))
            )
        } else {
            format!(
                " {} of {} pairs differ after Holm's correction: {}.",
                significant.len(),
                results.effects.len(),
                significant
                    .iter()
                    .map(|e| describe(e))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
    }
    if let Some(d) = &results.dose_response {
        text.push_str(&format!(
            " Random label errors cost {} AUROC per 0.1 label F1 ({level} interval {}).",
            signed(d.line.slope / 10.0),
            interval((d.line.slope_ci.0 / 10.0, d.line.slope_ci.1 / 10.0))
        ));
        for pt in d.points.iter().filter(|pt| !pt.on_curve) {
            let (lo, hi) = pt.residual_ci;
            let verdict = if hi < 0.0 {
                "its errors cost more than random errors of the same F1"
            } else if lo > 0.0 {
                "its errors cost less than random errors of the same F1"
            } else {
                "its errors cost about as much as random errors of the same F1"
            };
            text.push_str(&format!(
                " `{}` (label F1 {:.3}) lies {} {} from the curve: {verdict}.",
                pt.source,
                pt.label_f1,
                signed(pt.residual),
                interval(pt.residual_ci)
            ));
        }
    }
    p.blocks.push(Block::P(text.clone()));
    Some(text)
}

/// The study's configuration and evaluation settings.
fn configuration(p: &mut Page) {
    p.blocks.push(Block::H2("Configuration".into()));
    let (study, results, reference) = (p.study, p.results, &p.reference);
    let split = p.split;
    let text = format!(
        "{} Evaluation on the {} split against {reference} labels, {} bootstrap resamples, {:.0}% intervals.\n\n\
         Label sources: {}.",
        study.configuration,
        split.name(),
        results.bootstrap,
        results.ci * 100.0,
        study.sources
    );
    p.blocks.push(Block::P(text));
}

/// Each label source's agreement with report and image truth, when the pipeline measured it.
fn labeler_agreement(p: &mut Page) -> Result<()> {
    let lm = p.run.label_metrics();
    if lm.is_file() {
        let agreement: BTreeMap<String, LabelerAgreement> = read_json(&lm)?;
        p.blocks
            .push(Block::H2("Labelers against the truth".into()));
        p.blocks.push(Block::P(
            "How well each label source's labels agree with what the reports state (report truth: support-weighted \
             F1 over observations and non-blank classes) and with what the images show (image truth: mean \
             positive-class F1, uncertain counted positive)."
                .into(),
        ));
        p.blocks.push(Block::T(Table {
            head: vec![
                "label source".into(),
                "report truth weighted F1".into(),
                "image truth mean positive F1".into(),
            ],
            rows: agreement
                .iter()
                .map(|(k, a)| {
                    vec![
                        k.clone(),
                        f(a.report_weighted_f1),
                        f(a.image_mean_positive_f1),
                    ]
                })
                .collect(),
        }));
    }
    Ok(())
}

/// The AUROC table (observations × sources, with intervals and the mean); returns it as Markdown, the headline.
fn auroc_per_source(p: &mut Page) -> String {
    let (split, results, obs) = (p.split, p.results, &p.study.observations);
    let sources = &p.sources;
    let (level, reference) = (&p.level, &p.reference);
    let mut head = vec!["observation".to_string()];
    head.extend(sources.iter().cloned());
    let mut rows = Vec::new();
    let mut means = vec![(0f64, 0usize); sources.len()];
    for o in obs {
        let mut row = vec![o.name().to_string()];
        for (k, s) in sources.iter().enumerate() {
            let sc = &results.sources[s];
            match sc.auroc_of(o.name()) {
                Some(v) => {
                    means[k].0 += v;
                    means[k].1 += 1;
                    row.push(match sc.ci_of(o.name()) {
                        Some((lo, hi)) => format!("{v:.3} [{lo:.3}, {hi:.3}]"),
                        None => format!("{v:.3}"),
                    });
                }
                None => row.push("–".into()),
            }
        }
        rows.push(row);
    }
    let mean_row: Vec<f64> = means
        .iter()
        .map(|(s, n)| if *n > 0 { s / *n as f64 } else { f64::NAN })
        .collect();
    let best = mean_row
        .iter()
        .enumerate()
        .filter(|m| m.1.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|m| m.0);
    let mut mrow = vec!["**mean**".to_string()];
    mrow.extend(mean_row.iter().enumerate().map(|(k, m)| {
        let v = if Some(k) == best {
            format!("**{m:.3}**")
        } else {
            format!("{m:.3}")
        };
        match results.sources[&sources[k]].mean_auroc_ci {
            Some((lo, hi)) => format!("{v} [{lo:.3}, {hi:.3}]"),
            None => v,
        }
    }));
    rows.push(mrow);
    let auroc_table = Table { head, rows };
    p.blocks.push(Block::H2(format!(
        "Test AUROC per label source ({level} bootstrap intervals)"
    )));
    let counts = results.sources.values().map(|s| s.replicates);
    let (fewest, most) = (counts.clone().min().unwrap_or(1), counts.max().unwrap_or(1));
    p.blocks.push(Block::P(if most > 1 {
        format!(
            "{} classifiers per label source (replicates that differ only in their training seed: \
             initialisation, order, augmentation), each scored on the same {} images against {reference} image \
             labels. Each AUROC is the mean over the source's replicates, and its interval resamples the replicates \
             as well as the images (a two-level bootstrap), so it holds the run-to-run spread of training and not \
             only the test set's sampling. Each replicate's own AUROCs follow the table.",
            if fewest == most { most.to_string() } else { format!("{fewest} to {most}") },
            split.name(),
        )
    } else {
        format!(
            "One classifier per label source, each scored on the same {} images against {reference} image labels.",
            split.name(),
        )
    }));
    let headline = auroc_table.markdown();
    p.blocks.push(Block::T(auroc_table));
    per_replicate(p);
    headline
}

/// Each replicate's AUROCs, for the sources trained more than once: how far apart the runs of one source are.
fn per_replicate(p: &mut Page) {
    let (results, obs) = (p.results, &p.study.observations);
    if results.replicates.is_empty() {
        return;
    }
    let mut head = vec!["source".to_string(), "replicate".to_string()];
    head.extend(obs.iter().map(|o| o.name().to_string()));
    head.push("mean".into());
    let mut rows = Vec::new();
    for (source, reps) in &results.replicates {
        for r in reps {
            let mut row = vec![format!("`{source}`"), r.replicate.to_string()];
            row.extend(obs.iter().map(|o| f(r.auroc_of(o.name()))));
            row.push(f(r.mean_auroc));
            rows.push(row);
        }
        let means: Vec<f64> = reps.iter().filter_map(|r| r.mean_auroc).collect();
        if means.len() > 1 {
            let lo = means.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut row = vec![format!("`{source}`"), "range of the means".into()];
            row.extend(obs.iter().map(|_| String::new()));
            row.push(format!("{:.3}", hi - lo));
            rows.push(row);
        }
    }
    p.blocks.push(Block::H2("Test AUROC per replicate".into()));
    p.blocks.push(Block::P(
        "Every classifier trained on a source, by replicate; the paired comparisons below pair replicates by \
         number (replicate 1 with replicate 1, …), over the replicates both sources have."
            .into(),
    ));
    p.blocks.push(Block::T(Table { head, rows }));
}

/// The paired differences between sources: each pair's overall effect first, then per observation.
fn paired_differences(p: &mut Page) {
    let (comps, effects, level) = (&p.results.comparisons, &p.results.effects, &p.level);
    let finite = |v: f64| Some(v).filter(|v| v.is_finite());
    let interval = |(lo, hi): (f64, f64)| format!("[{}, {}]", f(finite(lo)), f(finite(hi)));
    let signed = |d: f64, sig: bool| {
        let d = finite(d).map_or("–".into(), |d| format!("{d:+.3}"));
        if sig { format!("**{d}**") } else { d }
    };
    if !effects.is_empty() {
        p.blocks
            .push(Block::H2("Overall effect per pair of label sources".into()));
        p.blocks.push(Block::P(format!(
            "Mean over the observations of AUROC(a) − AUROC(b), with a bootstrap {level} interval that resamples \
             whole test images (each with all its labels) and p-values before and after Holm's correction over \
             the {} pairs. **Bold**: Holm-corrected p < 0.05.",
            effects.len()
        )));
        let rows = effects
            .iter()
            .map(|e| {
                let sig = finite(e.p_holm).is_some_and(|p| p < 0.05);
                vec![
                    format!("{} − {}", e.a, e.b),
                    e.effect.observations.to_string(),
                    signed(e.effect.diff, sig),
                    interval(e.effect.ci),
                    p_value(finite(e.effect.p_bootstrap)),
                    p_value(finite(e.p_holm)),
                ]
            })
            .collect();
        p.blocks.push(Block::T(Table {
            head: [
                "a − b",
                "observations",
                "mean difference",
                "interval",
                "p",
                "p (Holm)",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }));
    }
    if !comps.is_empty() {
        p.blocks.push(Block::H2(
            "Paired differences between label sources, per observation".into(),
        ));
        p.blocks.push(Block::P(format!(
            "AUROC(a) − AUROC(b) on the images both scored, with a paired bootstrap {level} interval and p-value, the \
             bootstrap p-value after Holm's correction over all {} comparisons, and DeLong's test (uncorrected; one \
             classifier per source only). **Bold**: Holm-corrected p < 0.05.",
            comps.len()
        )));
        let mut rows = Vec::new();
        let mut significant = 0;
        for c in comps {
            let sig = finite(c.p_holm).is_some_and(|p| p < 0.05);
            significant += usize::from(sig);
            rows.push(vec![
                c.observation.clone(),
                format!("{} − {}", c.a, c.b),
                signed(c.result.diff, sig),
                interval(c.result.ci),
                p_value(finite(c.result.p_bootstrap)),
                p_value(finite(c.p_holm)),
                p_value(c.result.delong.map(|d| d.p).and_then(finite)),
            ]);
        }
        p.blocks.push(Block::T(Table {
            head: [
                "observation",
                "a − b",
                "difference",
                "interval",
                "p (bootstrap)",
                "p (Holm)",
                "p (DeLong)",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }));
        p.blocks.push(Block::P(format!(
            "{significant} of {} comparisons are significant at 0.05 after Holm's correction.",
            comps.len()
        )));
    }
}

/// AUROC against label quality: the table of sources by label F1, the fitted line and its slope, the plot.
fn dose_response_section(p: &mut Page) -> Result<()> {
    let Some(d) = &p.results.dose_response else {
        return Ok(());
    };
    let level = &p.level;
    let finite = |v: f64| Some(v).filter(|v| v.is_finite());
    let signed = |v: f64| finite(v).map_or("–".into(), |v| format!("{v:+.3}"));
    p.blocks.push(Block::H2(
        "Dose–response: classifier AUROC against label quality".into(),
    ));
    p.blocks.push(Block::P(format!(
        "Sources marked *curve* are a base source and copies of its labels corrupted at known rates (missed \
         positives, positives made uncertain, false positives, drawn per study): random label errors. A \
         least-squares line through their (label F1, mean test AUROC) points gives **{} AUROC per 0.1 label F1** \
         ({level} interval {} to {}, a bootstrap over the {} test images that refits the line each time). Every \
         other source is placed against the line: its residual is its AUROC minus the line's at its label F1 — \
         below zero, its label errors cost the classifier more than random errors that leave the same F1; above \
         zero, less. Label F1 is the mean positive-class F1 of the source's labels against the image truth, on \
         every study (held fixed in the bootstrap).",
        signed(d.line.slope / 10.0),
        signed(d.line.slope_ci.0 / 10.0),
        signed(d.line.slope_ci.1 / 10.0),
        d.images,
    )));
    let head = [
        "source",
        "label F1",
        "mean AUROC",
        "on the curve",
        "line at its F1",
        "residual",
        &format!("{level} interval"),
    ]
    .map(String::from)
    .to_vec();
    let rows = d
        .points
        .iter()
        .map(|pt| {
            vec![
                format!("`{}`", pt.source),
                format!("{:.3}", pt.label_f1),
                f(finite(pt.mean_auroc)),
                if pt.on_curve { "curve" } else { "" }.into(),
                f(finite(pt.expected)),
                signed(pt.residual),
                format!(
                    "[{}, {}]",
                    signed(pt.residual_ci.0),
                    signed(pt.residual_ci.1)
                ),
            ]
        })
        .collect();
    p.blocks.push(Block::T(Table { head, rows }));
    if !d.per_observation.is_empty() {
        p.blocks.push(Block::P(
            "Per observation: the same line through each observation's AUROC against its labels' F1 on that \
             observation."
                .into(),
        ));
        let head = vec![
            "observation".to_string(),
            "AUROC per 0.1 label F1".into(),
            format!("{level} interval"),
        ];
        let rows = d
            .per_observation
            .iter()
            .map(|o| {
                vec![
                    o.observation.clone(),
                    signed(o.line.slope / 10.0),
                    format!(
                        "[{}, {}]",
                        signed(o.line.slope_ci.0 / 10.0),
                        signed(o.line.slope_ci.1 / 10.0)
                    ),
                ]
            })
            .collect();
        p.blocks.push(Block::T(Table { head, rows }));
    }
    let curve: Vec<(f64, f64)> = d
        .points
        .iter()
        .filter(|pt| pt.on_curve)
        .map(|pt| (pt.label_f1, pt.mean_auroc))
        .collect();
    let lo = d.points.iter().map(|pt| pt.label_f1).fold(1.0, f64::min);
    let mut series = vec![
        Series {
            name: "random label errors".into(),
            points: curve,
            markers: true,
        },
        Series {
            name: format!("fit: {} per 0.1 F1", signed(d.line.slope / 10.0)),
            points: vec![
                (lo, d.line.intercept + d.line.slope * lo),
                (1.0, d.line.intercept + d.line.slope),
            ],
            markers: false,
        },
    ];
    series.extend(d.points.iter().filter(|pt| !pt.on_curve).map(|pt| Series {
        name: pt.source.clone(),
        points: vec![(pt.label_f1, pt.mean_auroc)],
        markers: true,
    }));
    let ys = d
        .points
        .iter()
        .map(|pt| pt.mean_auroc)
        .filter(|v| v.is_finite());
    let (y_lo, y_hi) = ys.fold((1.0f64, 0.5f64), |(a, b), v| (a.min(v), b.max(v)));
    let title = "Mean test AUROC against label F1";
    let files = line_chart(
        &p.plots_dir.join("dose_response"),
        &Chart {
            title,
            x_label: "label F1 against image truth",
            y_label: "mean test AUROC",
            x: (lo - 0.05).max(0.0)..1.02,
            y: (y_lo - 0.03).max(0.0)..(y_hi + 0.03).min(1.0),
            diagonal: false,
            series: &series,
        },
    )?;
    if files.len() == 2 {
        p.blocks
            .push(Block::Fig(title.into(), files[0].clone(), files[1].clone()));
    }
    p.plots.extend(files);
    Ok(())
}

/// Training loss and validation AUROC over the steps, per source.
fn training_section(p: &mut Page) -> Result<()> {
    let (run, plots_dir) = (p.run, &p.plots_dir);
    let sources = &p.sources;
    let mut loss = Vec::new();
    let mut valid = Vec::new();
    for s in sources {
        let path = run.train(s).join("metrics.csv");
        if let Ok((l, v)) = training_curves(&path) {
            loss.push(Series {
                name: s.clone(),
                points: l,
                markers: false,
            });
            valid.push(Series {
                name: s.clone(),
                points: v,
                markers: false,
            });
        }
    }
    if loss.iter().any(|s| !s.points.is_empty()) {
        p.blocks.push(Block::H2("Training".into()));
        let max_step = loss
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let max_loss = loss
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            * 1.05;
        for (name, title, y_label, series, y) in [
            (
                "training_loss",
                "Training loss",
                "loss",
                &loss,
                0.0..max_loss.max(1e-3),
            ),
            (
                "valid_auroc",
                "Validation mean AUROC",
                "mean AUROC",
                &valid,
                0.4..1.0,
            ),
        ] {
            let stem = plots_dir.join(name);
            let files = line_chart(
                &stem,
                &Chart {
                    title,
                    x_label: "step",
                    y_label,
                    x: 0.0..max_step,
                    y,
                    diagonal: false,
                    series,
                },
            )?;
            if files.len() == 2 {
                p.blocks
                    .push(Block::Fig(title.into(), files[0].clone(), files[1].clone()));
            }
            p.plots.extend(files);
        }
    }
    Ok(())
}

/// ROC curves per observation, every source in one chart.
fn roc_curves(p: &mut Page) -> Result<()> {
    let (run, split, obs) = (p.run, p.split, &p.study.observations);
    let sources = &p.sources;
    let plots_dir = &p.plots_dir;
    let mut scored = BTreeMap::new();
    for s in sources {
        let p = run
            .eval(s)
            .join(format!("predictions_{}.csv", split.name()));
        if p.is_file() {
            scored.insert(s.clone(), read_predictions(&p, obs)?);
        }
    }
    if !scored.is_empty() {
        p.blocks.push(Block::H2("ROC curves".into()));
        for (j, o) in obs.iter().enumerate() {
            let series: Vec<Series> = scored
                .iter()
                .map(|(s, sc)| {
                    let (p, y) = observation_pairs(sc, obs, j);
                    Series {
                        name: s.clone(),
                        points: roc_points(&p, &y),
                        markers: false,
                    }
                })
                .collect();
            let stem = plots_dir.join(format!("roc_{}", o.snake_name()));
            let title = format!("{} ({})", o.name(), split.name());
            let files = line_chart(
                &stem,
                &Chart {
                    title: &title,
                    x_label: "false-positive rate",
                    y_label: "true-positive rate",
                    x: 0.0..1.0,
                    y: 0.0..1.0,
                    diagonal: true,
                    series: &series,
                },
            )?;
            if files.len() == 2 {
                p.blocks.push(Block::Fig(
                    title.clone(),
                    files[0].clone(),
                    files[1].clone(),
                ));
            }
            p.plots.extend(files);
        }
    }
    Ok(())
}

/// Points of a curve: (x, y).
pub type Curve = Vec<(f64, f64)>;

/// (step, training loss) and (step, validation mean AUROC) from a run's `metrics.csv`.
pub fn training_curves(path: &Path) -> Result<(Curve, Curve)> {
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::csv(path, e))?;
    let h = r.headers().map_err(|e| Error::csv(path, e))?.clone();
    let col = |n: &str| {
        h.iter()
            .position(|x| x == n)
            .ok_or_else(|| Error::format(path, format!("no {n} column")))
    };
    let (step, kind, loss, auroc) = (col("step")?, col("kind")?, col("loss")?, col("mean_auroc")?);
    let (mut l, mut v) = (Vec::new(), Vec::new());
    for rec in r.records() {
        let rec = rec.map_err(|e| Error::csv(path, e))?;
        let num = |c: usize| rec.get(c).and_then(|x| x.parse::<f64>().ok());
        let Some(s) = num(step) else { continue };
        match rec.get(kind) {
            Some("train") => l.extend(num(loss).map(|x| (s, x))),
            Some("valid") => v.extend(num(auroc).map(|x| (s, x))),
            _ => {}
        }
    }
    Ok((l, v))
}

fn render_markdown(title: &str, blocks: &[Block], run_dir: &Path) -> String {
    let mut s = format!("# {title}\n\n");
    for b in blocks {
        match b {
            Block::H2(h) => {
                let _ = write!(s, "## {h}\n\n");
            }
            Block::P(p) => {
                let _ = write!(s, "{p}\n\n");
            }
            Block::T(t) => {
                let _ = writeln!(s, "{}", t.markdown());
            }
            Block::Fig(caption, _, png) => {
                let rel = png.strip_prefix(run_dir).unwrap_or(png);
                let _ = write!(s, "![{caption}]({})\n\n", rel.display());
            }
        }
    }
    s
}

fn render_html(title: &str, blocks: &[Block]) -> Result<String> {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;}}\
         table{{border-collapse:collapse;margin:1em 0;}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;}}\
         td:first-child,th:first-child{{text-align:left;}}figure{{display:inline-block;width:48%;margin:0;}}figure svg{{width:100%;height:auto;}}</style></head><body>\n<h1>{title}</h1>\n"
    );
    for b in blocks {
        match b {
            Block::H2(h) => {
                let _ = writeln!(s, "<h2>{h}</h2>");
            }
            Block::P(p) => {
                let _ = writeln!(s, "<p>{}</p>", html_text(p));
            }
            Block::T(t) => s.push_str(&t.html()),
            Block::Fig(caption, svg, _) => {
                let inline = std::fs::read_to_string(svg).map_err(|e| Error::io(svg, e))?;
                let inline = inline.trim_start_matches(|c| c != '<');
                let _ = writeln!(
                    s,
                    "<figure>{inline}<figcaption>{caption}</figcaption></figure>"
                );
            }
        }
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::eval::compare::{Effect, Paired};
    use crate::eval::results::tests::scores;
    use crate::eval::results::{Comparison, PairEffect, SplitScores};

    /// A run directory with a resolved config and `results.json` only (no plots to draw).
    fn run_with(reference: &str, sources: &[(&str, &str)]) -> (tempfile::TempDir, String) {
        run_with_pairs(reference, sources, vec![], vec![])
    }

    /// [`run_with`], with paired comparisons and overall effects in the results.
    fn run_with_pairs(
        reference: &str,
        sources: &[(&str, &str)],
        comparisons: Vec<Comparison>,
        effects: Vec<PairEffect>,
    ) -> (tempfile::TempDir, String) {
        run_edited(reference, sources, |r| {
            r.comparisons = comparisons;
            r.effects = effects;
        })
    }

    /// [`run_with`], with the results changed by `edit` before the report is written.
    fn run_edited(
        reference: &str,
        sources: &[(&str, &str)],
        edit: impl FnOnce(&mut Results),
    ) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::demo(&[
            format!(
                "run_dir={}",
                toml::Value::String(dir.path().display().to_string())
            ),
            format!("evaluation.reference=\"{reference}\""),
            "model.observations=[\"Edema\"]".into(),
        ])
        .unwrap();
        cfg.write_resolved().unwrap();
        let sources: BTreeMap<String, SplitScores> = sources
            .iter()
            .map(|(s, r)| (s.to_string(), scores(s, r)))
            .collect();
        let mut results = Results {
            split: "test".into(),
            reference: Results::shared_reference(sources.values()),
            bootstrap: cfg.evaluation.bootstrap,
            ci: cfg.evaluation.ci,
            sources,
            replicates: BTreeMap::new(),
            comparisons: vec![],
            effects: vec![],
            dose_response: None,
        };
        edit(&mut results);
        results.write(&cfg.run().results()).unwrap();
        let r = write_report(&cfg.run(), Split::Test, &cfg.report_study()).unwrap();
        let md = std::fs::read_to_string(r.markdown).unwrap();
        (dir, md)
    }

    #[test]
    fn replicates_get_their_own_table_and_the_text_says_what_the_interval_holds() {
        let (_dir, single) = run_with("truth", &[("a", "truth")]);
        assert!(single.contains("One classifier per label source"));
        assert!(!single.contains("per replicate"));
        let (_dir, md) = run_edited("truth", &[("a", "truth")], |r| {
            let a = r.sources.get_mut("a").unwrap();
            a.replicates = 2;
            a.mean_auroc_ci = Some((0.7, 0.8));
            let mut second = scores("a", "truth");
            second.replicate = 2;
            second.mean_auroc = Some(0.70);
            r.replicates
                .insert("a".into(), vec![scores("a", "truth"), second]);
        });
        assert!(md.contains("2 classifiers per label source"), "{md}");
        assert!(md.contains("two-level bootstrap"));
        assert!(
            md.contains("| **mean** | **0.750** [0.700, 0.800] |"),
            "{md}"
        );
        let table = md
            .split("## Test AUROC per replicate")
            .nth(1)
            .expect("the section");
        assert!(table.contains("| `a` | 1 | 0.750 | 0.750 |"), "{table}");
        assert!(table.contains("| `a` | 2 | 0.750 | 0.700 |"), "{table}");
        assert!(table.contains("range of the means |  | 0.050 |"), "{table}");
    }

    #[test]
    fn the_report_names_the_reference_the_results_carry() {
        let (_dir, md) = run_with(
            "chexpert",
            &[("chexpert", "chexpert"), ("chexbert", "chexpert")],
        );
        assert!(md.contains("against `chexpert` image labels"), "{md}");
        assert!(!md.contains("against `truth`"), "{md}");
    }

    #[test]
    fn without_a_shared_reference_the_report_says_each_source_its_own() {
        let (_dir, md) = run_with("chexpert", &[("a", "a"), ("b", "b")]);
        assert!(
            md.contains("against each source's own image labels"),
            "{md}"
        );
    }

    #[test]
    fn the_report_opens_with_the_result_in_words() {
        use crate::eval::dose::{DosePoint, DoseResponse, Line};
        let effect = |b: &str, diff: f64, p_holm: f64| PairEffect {
            a: "a".into(),
            b: b.into(),
            images: 2,
            effect: Effect {
                observations: 1,
                diff,
                ci: (diff - 0.01, diff + 0.01),
                p_bootstrap: p_holm,
            },
            p_holm,
        };
        let point = |source: &str, f1: f64, on_curve: bool, residual: f64| DosePoint {
            source: source.into(),
            label_f1: f1,
            mean_auroc: 0.75,
            on_curve,
            expected: 0.75 - residual,
            residual,
            residual_ci: (residual - 0.01, residual + 0.01),
        };
        let (_dir, md) = run_edited("truth", &[("a", "truth"), ("b", "truth")], |r| {
            r.sources.get_mut("b").unwrap().mean_auroc = Some(0.70);
            r.effects = vec![effect("b", 0.05, 0.01)];
            r.dose_response = Some(DoseResponse {
                images: 2,
                line: Line {
                    intercept: 0.5,
                    slope: 0.25,
                    slope_ci: (0.1, 0.4),
                },
                points: vec![point("b", 0.6, false, -0.04), point("a", 1.0, true, 0.0)],
                per_observation: vec![],
            });
        });
        let first = md.split("## ").next().unwrap_or_default();
        assert!(
            first
                .contains("Ranked by mean test AUROC over the observations: `a` 0.750, `b` 0.700."),
            "{first}"
        );
        assert!(
            first.contains("1 of 1 pairs differ after Holm's correction: `a` − `b` +0.050"),
            "{first}"
        );
        assert!(
            first.contains("+0.025 AUROC per 0.1 label F1 (95% interval [+0.010, +0.040])"),
            "{first}"
        );
        assert!(first.contains("`b` (label F1 0.600) lies -0.040 [-0.050, -0.030] from the curve: its errors cost more"), "{first}");
        // Nothing significant: the largest difference is named instead.
        let (_dir, md) = run_edited("truth", &[("a", "truth"), ("b", "truth")], |r| {
            r.effects = vec![effect("b", 0.02, 0.3)];
        });
        assert!(md.contains("No two sources' classifiers differ in mean AUROC after Holm's correction over the 1 pairs; the largest difference is `a` − `b` +0.020"), "{md}");
    }

    #[test]
    fn pairs_lead_with_the_overall_effect_and_bold_only_holm_significant_rows() {
        let paired = |diff: f64, p: f64| Paired {
            auroc_a: 0.8,
            auroc_b: 0.8 - diff,
            diff,
            ci: (diff - 0.01, diff + 0.01),
            p_bootstrap: p,
            delong: None,
        };
        let comparison = |o: &str, diff, p, p_holm| Comparison {
            a: "a".into(),
            b: "b".into(),
            observation: o.into(),
            images: 2,
            result: paired(diff, p),
            p_holm,
        };
        let effect = PairEffect {
            a: "a".into(),
            b: "b".into(),
            images: 2,
            effect: Effect {
                observations: 2,
                diff: 0.05,
                ci: (0.02, 0.08),
                p_bootstrap: 0.004,
            },
            p_holm: 0.004,
        };
        let (_dir, md) = run_with_pairs(
            "truth",
            &[("a", "truth"), ("b", "truth")],
            vec![
                comparison("Edema", 0.1, 0.01, 0.02),
                comparison("Cardiomegaly", 0.03, 0.04, 0.08),
            ],
            vec![effect],
        );
        // Text wrapped in the source reads as one line (no runs of indentation inside sentences).
        assert!(!md.contains("   "), "{md}");
        let overall = md
            .find("## Overall effect per pair")
            .expect("overall section");
        let per_obs = md.find("## Paired differences between label sources, per observation");
        assert!(per_obs.is_some_and(|k| k > overall), "{md}");
        assert!(
            md.contains("| a − b | 2 | **+0.050** | [0.020, 0.080] | 0.004 | 0.004 |"),
            "{md}"
        );
        assert!(
            md.contains("| Edema | a − b | **+0.100** | [0.090, 0.110] | 0.010 | 0.020 | – |"),
            "{md}"
        );
        assert!(md.contains("| Cardiomegaly | a − b | +0.030 |"), "{md}");
        assert!(
            md.contains("1 of 2 comparisons are significant at 0.05 after Holm's correction"),
            "{md}"
        );
    }

    #[test]
    fn html_renders_code_and_strong_spans_and_escapes() {
        assert_eq!(
            html_text("against `truth` labels, **+0.050** and a < b"),
            "against <code>truth</code> labels, <strong>+0.050</strong> and a &lt; b"
        );
        assert_eq!(html_text("a ` alone and ** too"), "a ` alone and ** too");
        assert_eq!(html_text("`<x>`"), "<code>&lt;x&gt;</code>");
    }
}
