//! Free-text report sections. MIMIC-CXR reports have headed sections (`FINDINGS:`, `IMPRESSION:`, ...); the
//! study's labelers read the impression, else the findings, else the last paragraph.

use serde::{Deserialize, Serialize};

/// Titles recognised as section headers at the start of a line (case-insensitive, followed by `:`).
/// Our own list of headings seen in chest radiograph reports; any other line made only of capitals followed by a
/// colon is taken as a header too.
const KNOWN_TITLES: &[&str] = &[
    "addendum",
    "clinical history",
    "clinical indication",
    "clinical information",
    "comment",
    "comments",
    "comparison",
    "comparisons",
    "conclusion",
    "conclusions",
    "exam",
    "examination",
    "final report",
    "finding",
    "findings",
    "findings and impression",
    "history",
    "impression",
    "impressions",
    "indication",
    "indications",
    "medical condition",
    "notification",
    "procedure",
    "reason for exam",
    "reason for examination",
    "reason for study",
    "recommendation",
    "recommendations",
    "summary",
    "technique",
    "wet read",
];

/// One section of a report. `title` is upper case without the colon; text before the first header has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The section title (`FINDINGS`, `IMPRESSION`, ...), none for text before the first one.
    pub title: Option<String>,
    /// The section's text.
    pub text: String,
}

/// Which part of a report a labeler reads.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionChoice {
    /// IMPRESSION, else FINDINGS, else the last paragraph (the study's choice).
    #[default]
    Impression,
    /// FINDINGS, else IMPRESSION, else the last paragraph.
    Findings,
    /// The whole report.
    All,
}

/// If `line` starts with a section header, returns (title, rest of the line).
fn header(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim_start();
    let colon = trimmed.find(':')?;
    let candidate = trimmed[..colon].trim();
    if candidate.is_empty() || candidate.len() > 60 {
        return None;
    }
    let lower = candidate.to_ascii_lowercase();
    let known = KNOWN_TITLES.contains(&lower.as_str());
    let all_caps = candidate.chars().any(|c| c.is_ascii_uppercase())
        && candidate.chars().all(|c| {
            c.is_ascii_uppercase() || matches!(c, ' ' | '/' | '&' | '-' | '(' | ')' | ',')
        });
    (known || all_caps).then(|| (candidate.to_ascii_uppercase(), &trimmed[colon + 1..]))
}

/// Collapses whitespace runs (including newlines) to single spaces and trims.
pub fn normalize_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits a report into its sections, in order. `FINAL REPORT` banners are dropped.
pub fn sections(report: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut current = Section {
        title: None,
        text: String::new(),
    };
    for line in report.lines() {
        if line.trim().eq_ignore_ascii_case("final report") {
            continue;
        }
        if let Some((title, rest)) = header(line) {
            if current.title.is_some() || !current.text.trim().is_empty() {
                out.push(current);
            }
            current = Section {
                title: Some(title),
                text: String::new(),
            };
            if !rest.trim().is_empty() {
                current.text.push_str(rest.trim());
                current.text.push('\n');
            }
        } else {
            current.text.push_str(line);
            current.text.push('\n');
        }
    }
    if current.title.is_some() || !current.text.trim().is_empty() {
        out.push(current);
    }
    for s in &mut out {
        s.text = s.text.trim().to_string();
    }
    out
}

fn section_text(secs: &[Section], names: &[&str]) -> Option<String> {
    // The last matching section wins: addenda and re-reads come later.
    secs.iter()
        .rev()
        .find(|s| s.title.as_deref().is_some_and(|t| names.contains(&t)) && !s.text.is_empty())
        .map(|s| normalize_whitespace(&s.text))
}

/// The last paragraph (block separated by blank lines) of a report, whitespace-normalised.
pub fn last_paragraph(report: &str) -> String {
    let mut last = String::new();
    let mut para = String::new();
    for line in report.lines() {
        if line.trim().is_empty() {
            if !para.trim().is_empty() {
                last = std::mem::take(&mut para);
            }
            para.clear();
        } else {
            para.push_str(line);
            para.push('\n');
        }
    }
    if !para.trim().is_empty() {
        last = para;
    }
    normalize_whitespace(&last)
}

const IMPRESSION: &[&str] = &[
    "IMPRESSION",
    "IMPRESSIONS",
    "CONCLUSION",
    "CONCLUSIONS",
    "FINDINGS AND IMPRESSION",
];
const FINDINGS: &[&str] = &["FINDINGS", "FINDING"];

/// The text a labeler reads from `report`, per `choice`.
pub fn extract(report: &str, choice: SectionChoice) -> String {
    if choice == SectionChoice::All {
        return normalize_whitespace(report);
    }
    let secs = sections(report);
    let (first, second) = match choice {
        SectionChoice::Impression => (IMPRESSION, FINDINGS),
        _ => (FINDINGS, IMPRESSION),
    };
    section_text(&secs, first)
        .or_else(|| section_text(&secs, second))
        .unwrap_or_else(|| last_paragraph(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIMIC_LIKE: &str = "                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
";

    #[test]
    fn splits_mimic_style_sections() {
        let secs = sections(MIMIC_LIKE);
        let titles: Vec<_> = secs.iter().map(|s| s.title.clone().unwrap()).collect();
        assert_eq!(
            titles,
            [
                "EXAMINATION",
                "INDICATION",
                "TECHNIQUE",
                "COMPARISON",
                "FINDINGS",
                "IMPRESSION"
            ]
        );
        assert_eq!(secs[0].text, "CHEST (PA AND LAT)");
        assert_eq!(
            extract(MIMIC_LIKE, SectionChoice::Impression),
            "No acute cardiopulmonary process."
        );
        assert!(
            extract(MIMIC_LIKE, SectionChoice::Findings)
                .starts_with("There is no focal consolidation, pleural")
        );
    }

    #[test]
    fn falls_back_to_findings_then_last_paragraph() {
        let only_findings = "INDICATION: cough\n\nFINDINGS: Mild cardiomegaly.\nNo effusion.\n";
        assert_eq!(
            extract(only_findings, SectionChoice::Impression),
            "Mild cardiomegaly. No effusion."
        );
        let no_sections = "Chest radiograph.\n\nLungs are clear.\nNo pneumothorax.\n\n";
        assert_eq!(
            extract(no_sections, SectionChoice::Impression),
            "Lungs are clear. No pneumothorax."
        );
        assert_eq!(extract("", SectionChoice::Impression), "");
    }

    #[test]
    fn lower_case_inline_content_is_not_a_header_unless_known() {
        let r = "findings:\nchest: four images:\nmild cardiomegaly.\n";
        let secs = sections(r);
        assert_eq!(secs.len(), 1);
        assert_eq!(secs[0].title.as_deref(), Some("FINDINGS"));
        assert_eq!(secs[0].text, "chest: four images:\nmild cardiomegaly.");
    }

    /// NegBio's MIMIC-CXR branch splits its two test reports into sections; its expected output is in the shared
    /// reference data (`negbio/mimic-cxr-branch-tests/1.secsplit.xml`). Compare the section texts.
    #[test]
    fn agrees_with_negbio_section_split_on_reference_reports() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/negbio/mimic-cxr-branch-tests");
        if !dir.is_dir() {
            eprintln!("skipping: reference data not found at {}", dir.display());
            return;
        }
        let r86 = std::fs::read_to_string(dir.join("00000086.txt")).unwrap();
        let secs = sections(&r86);
        let titles: Vec<_> = secs.iter().map(|s| s.title.clone().unwrap()).collect();
        assert_eq!(titles, ["FINDINGS", "IMPRESSION"]);
        // Expected passage texts from 1.secsplit.xml.
        assert_eq!(
            normalize_whitespace(&secs[0].text),
            normalize_whitespace(
                "pa and lat cxr at 7:34 p.m.. heart and mediastinum are\nstable. lungs are unchanged. air- filled \
                 cystic changes. no\npneumothorax. osseous structures unchanged scoliosis"
            )
        );
        assert_eq!(
            extract(&r86, SectionChoice::Impression),
            "stable chest. dictating"
        );
        let r19 = std::fs::read_to_string(dir.join("00019248.txt")).unwrap();
        let secs = sections(&r19);
        assert_eq!(secs.len(), 1);
        assert!(secs[0].text.starts_with("chest: four images:"));
        assert!(
            extract(&r19, SectionChoice::Impression)
                .ends_with("effusion or pneumothorax. dictating")
        );
    }
}
