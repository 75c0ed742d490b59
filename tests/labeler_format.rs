//! The labeler CSV format against the original CheXpert labeler's own files (shared reference data).

use std::path::{Path, PathBuf};

use chexlab::data::OnBadRecord;
use chexlab::labelers::format::{LabeledWriter, read_labeled, read_reports, write_reports};
use chexlab::{Label, Observation};

fn reference_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/chexpert-labeler");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: reference data not found at {} (it ships beside the repository in CI)",
            dir.display()
        );
        None
    }
}

/// The original labeler's output (`labeled_reports.csv`, from the chexpert-labeler repository) must come back
/// byte for byte after a read and a write.
#[test]
fn labeled_reports_round_trip_byte_for_byte() {
    let Some(dir) = reference_dir() else { return };
    let src = dir.join("labeled_reports.csv");
    let rows: Vec<_> = read_labeled(&src, OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 4);
    // Spot-check the parse: report 2 has Cardiomegaly 1, Edema 0, Pleural Effusion 1.
    assert_eq!(
        rows[1].labels.get(Observation::Cardiomegaly),
        Label::Positive
    );
    assert_eq!(rows[1].labels.get(Observation::Edema), Label::Negative);
    assert_eq!(
        rows[2].labels.get(Observation::Consolidation),
        Label::Uncertain
    );
    assert!(
        rows[1]
            .report
            .as_deref()
            .unwrap()
            .contains("\n\n2. Cardiomegaly")
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.csv");
    let mut w = LabeledWriter::create(&out, None, true).unwrap();
    for r in &rows {
        w.write(None, r.report.as_deref(), &r.labels).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
}

/// The sample input is a headerless one-column CSV; its reports match the texts in the labeled output.
#[test]
fn sample_reports_read_as_labeler_input_and_match_the_output_texts() {
    let Some(dir) = reference_dir() else { return };
    let reports: Vec<_> = read_reports(&dir.join("sample_reports.csv"), OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let labeled: Vec<_> = read_labeled(&dir.join("labeled_reports.csv"), OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reports.len(), labeled.len());
    for (r, l) in reports.iter().zip(&labeled) {
        assert_eq!(r.id, None);
        assert_eq!(Some(r.text.as_str()), l.report.as_deref());
    }
    // And writing them back in the input format reproduces the texts.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("in.csv");
    write_reports(&out, reports.iter().map(|r| (None, r.text.as_str()))).unwrap();
    let back: Vec<_> = read_reports(&out, OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        back.iter().map(|r| &r.text).collect::<Vec<_>>(),
        reports.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
}

#[test]
fn unknown_label_value_in_labeled_csv_names_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("pred.csv");
    let header = chexlab::OBSERVATIONS
        .iter()
        .map(|o| o.name())
        .collect::<Vec<_>>()
        .join(",");
    let mut cells = vec![""; 14];
    cells[10] = "2.0";
    std::fs::write(
        &p,
        format!(
            "Reports,{header}\nok,{}\n\"bad, row\",{}\n",
            vec![""; 14].join(","),
            cells.join(",")
        ),
    )
    .unwrap();
    let err = read_labeled(&p, OnBadRecord::Fail)
        .unwrap()
        .find_map(Result::err)
        .unwrap()
        .to_string();
    assert!(
        err.contains("pred.csv: line 3")
            && err.contains("'Pleural Effusion'")
            && err.contains("'2.0'"),
        "{err}"
    );
}
