//! The rule labeler against the original CheXpert labeler's own output and against the synthetic world's truth.

use std::path::Path;

mod common;

use chexlab::data::OnBadRecord;
use chexlab::labelers::format::{read_labeled, read_reports};
use chexlab::labelers::rules::RuleLabeler;
use chexlab::{Label, Observation};

/// `sample_reports.csv` and `labeled_reports.csv` come from the chexpert-labeler repository (shared reference).
#[test]
fn matches_the_original_labeler_on_its_sample_reports() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/chexpert-labeler");
    if !dir.is_dir() {
        eprintln!("skipping: reference data not found at {}", dir.display());
        return;
    }
    let labeler = RuleLabeler::default();
    let reports: Vec<_> = read_reports(&dir.join("sample_reports.csv"), OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<_> = read_labeled(&dir.join("labeled_reports.csv"), OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(reports.len(), expected.len());
    for (r, e) in reports.iter().zip(&expected) {
        assert_eq!(
            labeler.label(&r.text),
            e.labels,
            "report: {}\nmentions: {:?}",
            r.text,
            labeler.mentions(&r.text)
        );
    }
}

/// NegBio's MIMIC-CXR branch (the commit that labelled MIMIC-CXR) ships two reports with the labels its CheXpert
/// pipeline gives them (`1.neg_chexpert.xml`, document-level `CheXpert/<observation>` infons; its `Airspace
/// Opacity` is Lung Opacity). Every label it states is ours, and what it leaves out is blank here too.
#[test]
fn keeps_negbio_mimic_branch_expected_labels() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/negbio/mimic-cxr-branch-tests");
    if !dir.is_dir() {
        eprintln!("skipping: reference data not found at {}", dir.display());
        return;
    }
    let xml = std::fs::read_to_string(dir.join("1.neg_chexpert.xml")).unwrap();
    let labeler = RuleLabeler::default();
    let mut checked = 0;
    for doc in xml.split("<document>").skip(1) {
        let id = doc
            .split("<id>")
            .nth(1)
            .unwrap()
            .split("</id>")
            .next()
            .unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{id}.txt"))).unwrap();
        let got = labeler.label(&text);
        // Document-level infons come before the first passage.
        let head = doc.split("<passage>").next().unwrap();
        let mut stated = Vec::new();
        for infon in head.split("<infon key=\"CheXpert/").skip(1) {
            let (name, rest) = infon.split_once("\">").unwrap();
            let value = rest.split("</infon>").next().unwrap();
            let o = match name {
                "Airspace Opacity" => Observation::LungOpacity,
                n => Observation::from_name(n).unwrap_or_else(|| panic!("{n}")),
            };
            let want = match value {
                "Positive" => Label::Positive,
                "Negative" => Label::Negative,
                "Uncertain" => Label::Uncertain,
                v => panic!("{v}"),
            };
            assert_eq!(got.get(o), want, "report {id}, {o}: {text}");
            stated.push(o);
        }
        for o in chexlab::OBSERVATIONS {
            if o != Observation::NoFinding && !stated.contains(&o) {
                assert_eq!(got.get(o), Label::Blank, "report {id}, {o}: {text}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

fn label(text: &str) -> chexlab::LabelRow {
    RuleLabeler::default().label(text)
}

/// Each (report, observation, expected label), with one labeler for the whole table.
fn assert_labels(cases: &[(&str, Observation, Label)]) {
    let labeler = RuleLabeler::default();
    for &(text, o, want) in cases {
        assert_eq!(labeler.label(text).get(o), want, "{text} → {o}");
    }
}

#[test]
fn negation_constructions() {
    use Label::*;
    use Observation::*;
    let cases: &[(&str, Observation, Label)] = &[
        ("No pneumothorax.", Pneumothorax, Negative),
        (
            "There is no focal consolidation, pleural effusion or pneumothorax.",
            PleuralEffusion,
            Negative,
        ),
        (
            "There is no focal consolidation, pleural effusion or pneumothorax.",
            Pneumothorax,
            Negative,
        ),
        (
            "No pneumothorax and pleural effusion.",
            PleuralEffusion,
            Negative,
        ),
        ("Cardiomegaly without pulmonary edema.", Edema, Negative),
        (
            "Cardiomegaly without pulmonary edema.",
            Cardiomegaly,
            Positive,
        ),
        (
            "The lungs are free of consolidation.",
            Consolidation,
            Negative,
        ),
        ("Negative for pneumonia.", Pneumonia, Negative),
        (
            "Interval resolution of the left effusion.",
            PleuralEffusion,
            Negative,
        ),
        ("The pneumonia has resolved.", Pneumonia, Negative),
        ("Heart size is normal.", Cardiomegaly, Negative),
        ("Normal heart size.", Cardiomegaly, Negative),
        (
            "The cardiomediastinal silhouette is within normal limits.",
            EnlargedCardiomediastinum,
            Negative,
        ),
        ("No evidence of edema.", Edema, Negative),
        ("Pneumothorax is no longer seen.", Pneumothorax, Negative),
        ("The heart is not enlarged.", Cardiomegaly, Negative),
    ];
    assert_labels(cases);
}

#[test]
fn uncertainty_constructions() {
    use Label::*;
    use Observation::*;
    let cases: &[(&str, Observation, Label)] = &[
        ("Cannot exclude pneumonia.", Pneumonia, Uncertain),
        ("Pneumonia cannot be excluded.", Pneumonia, Uncertain),
        ("Pneumonia is not excluded.", Pneumonia, Uncertain),
        ("Opacity may represent atelectasis.", Atelectasis, Uncertain),
        ("Opacity may represent atelectasis.", LungOpacity, Positive),
        ("Atelectasis versus pneumonia.", Atelectasis, Uncertain),
        ("Atelectasis versus pneumonia.", Pneumonia, Uncertain),
        ("Possible small left effusion.", PleuralEffusion, Uncertain),
        ("Findings concerning for pneumonia.", Pneumonia, Uncertain),
        ("Questionable nodule.", LungLesion, Uncertain),
        ("Likely atelectasis.", Atelectasis, Uncertain),
        // The original's rules make a borderline *size* uncertain, not a borderline cardiomegaly.
        (
            "Borderline size of the cardiac silhouette.",
            Cardiomegaly,
            Uncertain,
        ),
        ("Pulmonary vascular congestion.", Edema, Uncertain),
        (
            "Stable cardiomediastinal silhouette.",
            EnlargedCardiomediastinum,
            Uncertain,
        ),
        ("Stable mild cardiomegaly.", Cardiomegaly, Positive),
        ("Mild CHF.", Cardiomegaly, Uncertain),
        ("Mild CHF.", Edema, Positive),
    ];
    assert_labels(cases);
}

#[test]
fn scope_ends_at_terminators_clauses_and_sentences() {
    use Label::*;
    use Observation::*;
    let cases: &[(&str, Observation, Label)] = &[
        (
            "No pneumothorax, but there is a small effusion.",
            PleuralEffusion,
            Positive,
        ),
        (
            "No pneumothorax; small left effusion.",
            PleuralEffusion,
            Positive,
        ),
        (
            "No pneumothorax is seen and the heart is enlarged.",
            Cardiomegaly,
            Positive,
        ),
        ("No pneumothorax. Left effusion.", PleuralEffusion, Positive),
        (
            "No edema, however there is consolidation.",
            Consolidation,
            Positive,
        ),
        (
            "No change in the moderate right effusion.",
            PleuralEffusion,
            Positive,
        ),
        (
            "Possible pneumonia, although no effusion.",
            PleuralEffusion,
            Negative,
        ),
    ];
    assert_labels(cases);
}

#[test]
fn no_finding_and_bad_text_never_panic() {
    use Label::*;
    use Observation::*;
    assert_eq!(
        label("No acute cardiopulmonary process.").get(NoFinding),
        Positive
    );
    assert_eq!(
        label("Endotracheal tube in place. No acute process.").get(NoFinding),
        Positive
    );
    assert_eq!(label("Mild cardiomegaly.").get(NoFinding), Blank);
    assert_eq!(label("Scoliosis.").get(NoFinding), Blank);
    let empty = label("");
    assert_eq!(empty.get(NoFinding), Positive);
    assert!(
        chexlab::OBSERVATIONS
            .iter()
            .filter(|o| **o != NoFinding)
            .all(|o| empty.get(*o) == Blank)
    );
    // Extremely long input (1 MB) and odd bytes: a defined result.
    let long = "No pneumothorax. Small left effusion. ".repeat(30_000);
    let row = label(&long);
    assert_eq!(row.get(PleuralEffusion), Positive);
    assert_eq!(row.get(Pneumothorax), Negative);
    label("\u{0}\u{fffd}é,,,;;::(()) … …. . .");
}

/// Real reports: the OpenI development set (findings and impression joined, as the scores in the rule labeler's
/// issue were computed) against its radiologists' ChestX-ray14-category labels, through `label` and `eval-labels`
/// as a user runs them, with CheXpert's definitions (the default) and with the ChestX-ray14 definitions lexicon
/// (`configs/lexicons/chestxray14-definitions.txt`). The floors are the scores reached, so they cannot regress:
/// CheXpert's definitions 0.8528 and 0.7840 macro F1 (lowest observation 0.615, Pleural Other, and 0.475);
/// ChestX-ray14's 0.8632 and 0.8107 (lowest 0.686 and 0.593), which meet the 0.85 / 0.80 / 0.65.
#[test]
fn openi_development_set_scores_do_not_regress() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    let (reports, gold) = (
        shared.join("openi/dev_reports.csv"),
        shared.join("negbio/openi_gld_std14.csv"),
    );
    if !reports.is_file() || !gold.is_file() {
        eprintln!(
            "skipping: OpenI reference data not found under {}",
            shared.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("openi.csv");
    let mut w = csv::Writer::from_path(&input).unwrap();
    let mut r = csv::Reader::from_path(&reports).unwrap();
    let header = r.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (id, findings, impression) = (col("id"), col("findings"), col("impression"));
    for rec in r.records() {
        let rec = rec.unwrap();
        let text = format!("{} {}", &rec[findings], &rec[impression]);
        w.write_record([&rec[id], text.trim()]).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let definitions =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/lexicons/chestxray14-definitions.txt");
    let definitions = definitions.to_str().unwrap();
    let g = gold.to_str().unwrap();
    // Per lexicon: (policy, macro F1 floor, floor of every observation); each lexicon labels once.
    let cases = [
        (None, [("zeros", 0.85, 0.61), ("ones", 0.78, 0.47)]),
        (
            Some(definitions),
            [("zeros", 0.86, 0.68), ("ones", 0.81, 0.59)],
        ),
    ];
    for (n, (lexicon, policies)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("rules-{n}.csv"));
        let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
        let mut label = vec!["--quiet", "label", "--reports", i, "--out", o];
        label.extend(lexicon.iter().flat_map(|l| ["--lexicon", l]));
        common::chexlab_ok(&label, tmp.path());
        for (policy, floor, per_observation_floor) in policies {
            let json = tmp.path().join(format!("{n}-{policy}.json"));
            let args = [
                "eval-labels",
                "--pred",
                o,
                "--truth",
                g,
                "--uncertain",
                policy,
                "--out",
                json.to_str().unwrap(),
            ];
            let printed = common::chexlab_ok(&args, tmp.path());
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let macro_f1 = m["mean_positive_f1"].as_f64().unwrap();
            assert!(
                macro_f1 >= floor,
                "{lexicon:?} {policy}: macro F1 {macro_f1:.4} < {floor}\n{printed}"
            );
            let scored = m["binary"].as_array().unwrap();
            assert_eq!(scored.len(), 10, "the ten mapped observations");
            for b in scored {
                let f1 = b["positive"]["f1"].as_f64().unwrap();
                assert!(
                    f1 >= per_observation_floor,
                    "{lexicon:?} {policy}: {} F1 {f1:.3}\n{printed}",
                    b["observation"]
                );
            }
        }
    }
}

/// Constructions of real reports (OpenI), written for this test: copula + negation after the organ, "upper limits
/// of normal", an organ named with nothing said of its size, healed granulomatous disease, cystic fibrosis.
#[test]
fn real_report_constructions() {
    use Label::*;
    use Observation::*;
    assert_labels(&[
        ("Heart is not enlarged.", Cardiomegaly, Negative),
        (
            "The heart is not significantly enlarged.",
            Cardiomegaly,
            Negative,
        ),
        (
            "Heart size is upper limits of normal.",
            Cardiomegaly,
            Negative,
        ),
        ("The heart is top normal in size.", Cardiomegaly, Negative),
        (
            "Heart size appears within limits of normal.",
            Cardiomegaly,
            Negative,
        ),
        ("The heart is enlarged.", Cardiomegaly, Positive),
        ("Heart is enlarged.", Cardiomegaly, Positive),
        (
            "The heart and lungs have XXXX XXXX in the interval.",
            Cardiomegaly,
            Blank,
        ),
        (
            "Residuals of prior granulomatous infection.",
            Pneumonia,
            Blank,
        ),
        ("Right lower lobe infection.", Pneumonia, Positive),
        ("Changes of cystic fibrosis.", PleuralOther, Blank),
        ("Apical pleural fibrosis.", PleuralOther, Positive),
        ("Mild fissural thickening.", PleuralOther, Positive),
    ]);
}

/// Constructions of real reports (OpenI), written for this test: what is said of an organ's size (copula runs
/// with light words, "normal in size and contour", stability, "borderline"), hedges that condition a whole
/// sentence, partly resolved findings, hypothetical mentions, and words that only look like a mention.
#[test]
fn organ_statements_hedges_and_look_alikes() {
    use Label::*;
    use Observation::*;
    assert_labels(&[
        (
            "Heart size is at the upper limits of normal.",
            Cardiomegaly,
            Negative,
        ),
        (
            "The heart size is on the upper limits of normal.",
            Cardiomegaly,
            Negative,
        ),
        (
            "The heart is near top normal in size.",
            Cardiomegaly,
            Negative,
        ),
        ("Heart size is now normal.", Cardiomegaly, Negative),
        (
            "In the interval, the heart size has become normal.",
            Cardiomegaly,
            Negative,
        ),
        ("The heart is not grossly enlarged.", Cardiomegaly, Negative),
        (
            "The heart size and cardiomediastinal silhouette are grossly unremarkable.",
            Cardiomegaly,
            Negative,
        ),
        (
            "The heart size and cardiomediastinal silhouette are grossly unremarkable.",
            EnlargedCardiomediastinum,
            Negative,
        ),
        (
            "The heart is normal in size and contour.",
            EnlargedCardiomediastinum,
            Negative,
        ),
        (
            "The cardiomediastinal silhouette is within normal limits for size and contour.",
            EnlargedCardiomediastinum,
            Negative,
        ),
        (
            "Heart size and mediastinal contour are stable and within normal limits.",
            Cardiomegaly,
            Negative,
        ),
        ("Stable heart size.", Cardiomegaly, Uncertain),
        (
            "The heart and mediastinum are stable.",
            Cardiomegaly,
            Uncertain,
        ),
        ("Stable cardiomegaly.", Cardiomegaly, Positive),
        (
            "Stable cardiomediastinal silhouette with mild cardiomegaly.",
            EnlargedCardiomediastinum,
            Uncertain,
        ),
        ("Borderline heart size.", Cardiomegaly, Uncertain),
        ("Borderline cardiomegaly.", Cardiomegaly, Positive),
        ("The heart is borderline enlarged.", Cardiomegaly, Positive),
        (
            "In the appropriate clinical setting, this is compatible with pneumonia.",
            Pneumonia,
            Uncertain,
        ),
        (
            "Pulmonary edema difficult to entirely exclude.",
            Edema,
            Uncertain,
        ),
        ("Correlate clinically for infection.", Pneumonia, Uncertain),
        (
            "There is suggestion of minimal bibasilar atelectasis.",
            Atelectasis,
            Uncertain,
        ),
        (
            "Further evaluation with CT could be performed to identify a small nodule.",
            LungLesion,
            Uncertain,
        ),
        (
            "Almost completely resolved right apical pneumothorax.",
            Pneumothorax,
            Positive,
        ),
        ("The pneumothorax has resolved.", Pneumothorax, Negative),
        (
            "Small right apical pleural air collection.",
            Pneumothorax,
            Positive,
        ),
        (
            "Nodular prominence of the right hilum.",
            LungLesion,
            Positive,
        ),
        ("Nodular infiltrate in the right base.", LungLesion, Blank),
        (
            "Right chest wall surgical clips from a prior lumpectomy.",
            LungLesion,
            Blank,
        ),
        (
            "Large masslike opacity in the right base.",
            LungLesion,
            Positive,
        ),
        ("Mild left-sided volume loss.", Atelectasis, Blank),
        // The original's Pleural Other list: a plaque or calcification is another finding, not Pleural Other.
        ("Calcified pleural plaque.", PleuralOther, Blank),
    ]);
    // Abnormal but none of the thirteen: No Finding is not positive.
    for text in [
        "Low lung volumes. No focal consolidation.",
        "Mild thoracolumbar curvature.",
        "Calcified pleural plaque.",
    ] {
        assert_eq!(label(text).get(NoFinding), Blank, "{text}");
    }
    assert_eq!(
        label("Lungs are clear. The heart is normal in size and contour.").get(NoFinding),
        Positive
    );
}

/// A cue reaches at most the scope window's words (12) however long the sentence, and a report without sentence
/// breaks is labelled like its pieces: what keeps the labeler linear in report length.
#[test]
fn scopes_are_bounded_in_an_unpunctuated_report() {
    use Label::*;
    use Observation::*;
    let filler = |n: usize| vec!["xxxx"; n].join(" ");
    assert_labels(&[
        (
            &format!("no {} effusion", filler(10)),
            PleuralEffusion,
            Negative,
        ),
        (
            &format!("no {} effusion", filler(13)),
            PleuralEffusion,
            Positive,
        ),
    ]);
    // Thousands of cues and mentions in one sentence: every mention still sees only its neighbours.
    let long: String = (0..5000)
        .map(|i| {
            if i % 2 == 0 {
                "no effusion"
            } else {
                "pneumothorax"
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let row = label(&long);
    assert_eq!(row.get(PleuralEffusion), Negative);
    assert_eq!(row.get(Pneumothorax), Negative, "'no' two words before it");
}
