//! A simulated radiologist: writes a MIMIC-style report (FINDINGS + IMPRESSION) from a study's findings, with
//! realistic language and realistic errors, and records what the IMPRESSION states per observation in the CheXpert
//! labeler encoding — the labels a perfect report labeler would give.
//!
//! Language: synonyms beyond any single lexicon, severity and side words, pertinent negatives (alone and in lists
//! whose negation spans the list), hedges ("possible", "cannot exclude", "may represent", "likely", "versus", ...),
//! comparisons ("unchanged", "improved", "resolved"), normal templates and numbered impressions.
//! Errors: faint findings are omitted or hedged more often, and absent findings are occasionally called.

use rand::Rng;
use rand::seq::IndexedRandom;

use crate::data::synth::world::{Findings, Side};
use crate::observations::{Label, LabelRow, OBSERVATIONS, Observation, Observation::*};

/// Rates of the simulated radiologist's behaviour.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadiologistRates {
    /// P(omit a present finding) = `omit × (1 − severity)²`.
    pub omit: f64,
    /// P(hedge a reported finding) = `hedge_base + hedge_faint × (1 − severity)`.
    pub hedge_base: f64,
    /// Probability of hedging a faint finding instead of stating it.
    pub hedge_faint: f64,
    /// P(mention an absent finding), per observation and study.
    pub overcall: f64,
    /// P(state an absent key finding as a pertinent negative).
    pub pertinent_negative: f64,
    /// P(a reported finding is described against a prior study).
    pub comparison: f64,
    /// P(an absent finding is described as resolved).
    pub resolved: f64,
    /// P(support devices are left out of the impression).
    pub omit_devices: f64,
    /// P(a finding's name is mistyped, e.g. "pnuemothorax"): dictation errors a reader still understands.
    pub typo: f64,
}

impl Default for RadiologistRates {
    fn default() -> Self {
        RadiologistRates {
            omit: 0.7,
            hedge_base: 0.05,
            hedge_faint: 0.35,
            overcall: 0.012,
            pertinent_negative: 0.35,
            comparison: 0.2,
            resolved: 0.02,
            omit_devices: 0.3,
            typo: 0.03,
        }
    }
}

/// A written report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The whole report file, MIMIC-style.
    pub text: String,
    /// The impression as one line (what labelers read).
    pub impression: String,
    /// What the impression states (CheXpert labeler encoding, with its No Finding rule applied).
    pub labels: LabelRow,
}

/// Noun phrases per observation (our own lexicon of report language, deliberately wider than any labeler's).
fn nouns(o: Observation) -> &'static [&'static str] {
    match o {
        NoFinding => &[],
        EnlargedCardiomediastinum => &[
            "widened mediastinum",
            "mediastinal widening",
            "enlarged cardiomediastinal silhouette",
            "prominent mediastinal contours",
        ],
        Cardiomegaly => &[
            "cardiomegaly",
            "enlarged heart",
            "enlargement of the cardiac silhouette",
            "cardiac enlargement",
        ],
        LungLesion => &[
            "pulmonary nodule",
            "lung mass",
            "nodule",
            "mass",
            "spiculated nodule",
            "pulmonary mass",
        ],
        LungOpacity => &[
            "airspace opacity",
            "opacity",
            "hazy opacity",
            "patchy opacities",
            "airspace disease",
            "increased density",
        ],
        Edema => &[
            "pulmonary edema",
            "interstitial edema",
            "edema",
            "alveolar edema",
            "interstitial pulmonary edema",
        ],
        Consolidation => &[
            "consolidation",
            "focal consolidation",
            "airspace consolidation",
            "lobar consolidation",
        ],
        Pneumonia => &[
            "pneumonia",
            "infectious process",
            "infection",
            "bronchopneumonia",
        ],
        Atelectasis => &[
            "atelectasis",
            "subsegmental atelectasis",
            "plate-like atelectasis",
            "lobar collapse",
            "collapse",
        ],
        Pneumothorax => &["pneumothorax", "apical pneumothorax", "pneumothoraces"],
        PleuralEffusion => &[
            "pleural effusion",
            "effusion",
            "pleural fluid",
            "layering effusion",
        ],
        PleuralOther => &[
            "pleural thickening",
            "pleural parenchymal scarring",
            "apical pleural cap",
            "pleural scarring",
        ],
        Fracture => &[
            "rib fracture",
            "displaced rib fracture",
            "healing rib fracture",
            "fracture",
        ],
        SupportDevices => &[
            "endotracheal tube",
            "central venous catheter",
            "nasogastric tube",
            "pacemaker leads",
            "right internal jugular line",
            "PICC line",
        ],
    }
}

/// Absent key findings a radiologist names as pertinent negatives.
const PERTINENT: [Observation; 6] = [
    Pneumothorax,
    PleuralEffusion,
    Consolidation,
    Edema,
    Pneumonia,
    Cardiomegaly,
];

/// Absent findings most often over-called (subtle lung findings), with a weight.
fn overcall_weight(o: Observation) -> f64 {
    match o {
        LungOpacity | Atelectasis | Pneumonia | Consolidation | Edema | PleuralEffusion => 1.0,
        Cardiomegaly | LungLesion | Pneumothorax => 0.4,
        EnlargedCardiomediastinum | PleuralOther | Fracture => 0.2,
        NoFinding | SupportDevices => 0.0,
    }
}

fn severity_word(o: Observation, s: f32, rng: &mut impl Rng) -> &'static str {
    let size_like = matches!(o, PleuralEffusion | Pneumothorax | LungLesion);
    let words: &[&str] = match (s, size_like) {
        (s, true) if s < 0.35 => &["small", "trace", "tiny", ""],
        (s, false) if s < 0.35 => &["mild", "minimal", "subtle", ""],
        (s, true) if s < 0.7 => &["moderate", "moderate-sized", ""],
        (s, false) if s < 0.7 => &["moderate", ""],
        (_, true) => &["large", ""],
        (_, false) => &["severe", "marked", "extensive", ""],
    };
    if matches!(o, SupportDevices | Fracture | Pneumonia) {
        return "";
    }
    words.choose(rng).copied().unwrap_or("")
}

fn side_word(o: Observation, side: Side, rng: &mut impl Rng) -> &'static str {
    if matches!(
        o,
        Cardiomegaly | EnlargedCardiomediastinum | Edema | SupportDevices | NoFinding
    ) {
        return "";
    }
    match side {
        Side::Left => ["left", "left basilar", "left-sided"]
            .choose(rng)
            .copied()
            .unwrap_or("left"),
        Side::Right => ["right", "right basilar", "right-sided"]
            .choose(rng)
            .copied()
            .unwrap_or("right"),
        Side::Both => ["bilateral", "bibasilar"]
            .choose(rng)
            .copied()
            .unwrap_or("bilateral"),
    }
}

/// Swaps two adjacent letters inside the longest word (a dictation typo).
fn typo(noun: &str, rng: &mut impl Rng) -> String {
    let longest = noun.split(' ').max_by_key(|w| w.len()).unwrap_or("");
    if longest.len() < 6 || !longest.is_ascii() {
        return noun.to_string();
    }
    let i = rng.random_range(1..longest.len() - 2);
    let mut w = longest.as_bytes().to_vec();
    w.swap(i, i + 1);
    noun.replacen(longest, &String::from_utf8(w).unwrap_or_default(), 1)
}

/// A noun phrase for `o`, with optional severity and side, occasionally mistyped.
fn phrase(
    o: Observation,
    f: &Findings,
    rng: &mut impl Rng,
    detail: bool,
    rates: &RadiologistRates,
) -> String {
    let noun = nouns(o).choose(rng).copied().unwrap_or("");
    let noun = if rng.random_bool(rates.typo) {
        typo(noun, rng)
    } else {
        noun.to_string()
    };
    if !detail {
        return noun;
    }
    let s = f.severity(o).max(0.2);
    let sev = severity_word(o, s, rng);
    let side = side_word(o, f.side[o.index()], rng);
    [sev, side, noun.as_str()]
        .iter()
        .filter(|w| !w.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One statement of the impression and the labels it states.
struct Statement {
    text: String,
    states: Vec<(Observation, Label)>,
}

fn positive(
    o: Observation,
    f: &Findings,
    rates: &RadiologistRates,
    rng: &mut impl Rng,
) -> Statement {
    let np = phrase(o, f, rng, true, rates);
    // "Stable cardiac silhouette" says nothing about its size: compare only phrases that name the finding itself.
    let comparable = !np.contains("silhouette") && !np.contains("contour");
    let text = if comparable && rng.random_bool(rates.comparison) {
        let t = [
            format!("Unchanged {np}."),
            format!("Stable {np}."),
            format!("{}, unchanged from prior.", capitalize(&np)),
            format!("Interval increase in {np}."),
            format!("Improving {np}."),
        ];
        t.choose(rng).cloned().unwrap_or_default()
    } else {
        let t = match o {
            Cardiomegaly => vec![
                format!("{}.", capitalize(&np)),
                "The heart is enlarged.".to_string(),
                "The cardiac silhouette is enlarged.".to_string(),
            ],
            SupportDevices => vec![
                format!("{} in standard position.", capitalize(&np)),
                format!("{} terminates in the expected location.", capitalize(&np)),
                format!("Tip of the {np} projects over the SVC."),
            ],
            _ => vec![
                format!("{}.", capitalize(&np)),
                format!("There is {np}."),
                format!("{} is present.", capitalize(&np)),
                format!("Findings consistent with {np}."),
            ],
        };
        t.choose(rng).cloned().unwrap_or_default()
    };
    Statement {
        text,
        states: vec![(o, Label::Positive)],
    }
}

/// Observations a hedged finding is commonly weighed against ("X versus Y").
fn alternative(o: Observation) -> Option<Observation> {
    match o {
        Atelectasis => Some(Pneumonia),
        Pneumonia => Some(Atelectasis),
        Consolidation => Some(Atelectasis),
        Edema => Some(Pneumonia),
        _ => None,
    }
}

fn hedged(o: Observation, f: &Findings, rates: &RadiologistRates, rng: &mut impl Rng) -> Statement {
    let np = phrase(o, f, rng, false, rates);
    let mut states = vec![(o, Label::Uncertain)];
    let choice = rng.random_range(0..10);
    let text = match choice {
        0 => format!("Possible {np}."),
        1 => format!("Cannot exclude {np}."),
        2 => format!("{} cannot be excluded.", capitalize(&np)),
        3 => format!("Findings may represent {np}."),
        4 => format!("Likely {np}."),
        5 => format!("Findings concerning for {np}."),
        6 => format!("Questionable {np}."),
        // Congestion is read as possible edema.
        8 if o == Edema => "Pulmonary vascular congestion.".to_string(),
        7 if matches!(o, Atelectasis | Pneumonia | Consolidation) => {
            // The opacity is stated; its cause is not.
            let side = side_word(o, f.side[o.index()], rng);
            states.push((LungOpacity, Label::Positive));
            format!(
                "{} opacity which may represent {np}.",
                capitalize(if side.is_empty() { "basilar" } else { side })
            )
        }
        _ => match alternative(o) {
            Some(alt) => {
                states.push((alt, Label::Uncertain));
                format!(
                    "{} versus {}.",
                    capitalize(&np),
                    phrase(alt, f, rng, false, rates)
                )
            }
            None => format!("Suspected {np}."),
        },
    };
    Statement { text, states }
}

/// A negation covering several observations at once ("No pleural effusion, pneumothorax or consolidation.").
fn negative_list(obs: &[Observation], rng: &mut impl Rng) -> Statement {
    let names: Vec<String> = obs
        .iter()
        .map(|&o| match o {
            Cardiomegaly => "cardiomegaly".to_string(),
            _ => nouns(o).first().copied().unwrap_or("").to_string(),
        })
        .collect();
    let list = match names.len() {
        1 => names[0].clone(),
        n => format!(
            "{} {} {}",
            names[..n - 1].join(", "),
            ["or", "and"].choose(rng).copied().unwrap_or("or"),
            names[n - 1]
        ),
    };
    let text = match (obs, rng.random_range(0..4)) {
        ([Cardiomegaly], 0) => "Heart size is normal.".to_string(),
        ([Cardiomegaly], 1) => "Normal heart size.".to_string(),
        (_, 0) => format!("No {list}."),
        (_, 1) => format!("There is no {list}."),
        (_, 2) => format!("No evidence of {list}."),
        _ => format!("No {list} is seen."),
    };
    Statement {
        text,
        states: obs.iter().map(|&o| (o, Label::Negative)).collect(),
    }
}

fn resolved(o: Observation, rng: &mut impl Rng) -> Statement {
    let np = nouns(o).first().copied().unwrap_or("");
    let text = match rng.random_range(0..3) {
        0 => format!("Interval resolution of the {np}."),
        1 => format!("Previously seen {np} has resolved."),
        _ => format!("Resolved {np}."),
    };
    Statement {
        text,
        states: vec![(o, Label::Negative)],
    }
}

const NORMAL_IMPRESSIONS: &[&str] = &[
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
];

/// What the statements say together, with the CheXpert labeler's aggregation and No Finding rule.
fn aggregate(statements: &[Statement]) -> LabelRow {
    LabelRow::aggregate(statements.iter().flat_map(|s| s.states.iter().copied()))
}

/// Wraps text at ~76 columns with a leading space, as MIMIC reports are laid out.
fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split(' ') {
        if line.len() + w.len() + 1 > 76 && !line.is_empty() {
            out.push(' ');
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push(' ');
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Descriptive FINDINGS sentences (not labelled; consistent with what the radiologist saw).
fn findings_text(
    f: &Findings,
    reported: &[Observation],
    rates: &RadiologistRates,
    rng: &mut impl Rng,
) -> String {
    let mut s: Vec<String> = Vec::new();
    if reported.contains(&SupportDevices) {
        s.push(format!(
            "{} is in place.",
            capitalize(&phrase(SupportDevices, f, rng, false, rates))
        ));
    }
    let lung_obs = [
        LungOpacity,
        Consolidation,
        Pneumonia,
        Atelectasis,
        Edema,
        LungLesion,
    ];
    let lung_found: Vec<_> = lung_obs.iter().filter(|o| reported.contains(o)).collect();
    if lung_found.is_empty() {
        s.push(
            [
                "The lungs are clear.",
                "Lungs are well expanded and clear.",
                "The lungs are clear without focal opacity.",
            ]
            .choose(rng)
            .copied()
            .unwrap_or("")
            .to_string(),
        );
    } else {
        for &&o in &lung_found {
            s.push(format!(
                "There is {} in the {} lung.",
                phrase(o, f, rng, false, rates),
                match f.side[o.index()] {
                    Side::Left => "left",
                    Side::Right => "right",
                    Side::Both => "bilateral",
                }
            ));
        }
    }
    s.push(if reported.contains(&Cardiomegaly) {
        "The cardiac silhouette is enlarged.".to_string()
    } else {
        [
            "The cardiomediastinal silhouette is within normal limits.",
            "Heart size is normal.",
            "The hilar and mediastinal contours are normal.",
        ]
        .choose(rng)
        .copied()
        .unwrap_or("")
        .to_string()
    });
    if !reported.contains(&PleuralEffusion) && !reported.contains(&Pneumothorax) {
        s.push("No pleural effusion or pneumothorax is seen.".to_string());
    }
    s.push(if reported.contains(&Fracture) {
        "There is a rib fracture.".to_string()
    } else {
        [
            "The osseous structures are unremarkable.",
            "No acute osseous abnormality.",
            "Degenerative changes of the thoracic spine.",
        ]
        .choose(rng)
        .copied()
        .unwrap_or("")
        .to_string()
    });
    s.join(" ")
}

/// Writes the report of one study. `view_desc` names the examination (e.g. `CHEST (PA AND LAT)`).
pub fn write(
    f: &Findings,
    view_desc: &str,
    rates: &RadiologistRates,
    rng: &mut impl Rng,
) -> Report {
    let mut statements: Vec<Statement> = Vec::new();
    let mut reported: Vec<Observation> = Vec::new();
    let mut negatives: Vec<Observation> = Vec::new();
    // Present findings, most specific first: Lung Opacity is reported on its own only when no child explains it.
    for o in OBSERVATIONS {
        if o == NoFinding || !f.has(o) {
            continue;
        }
        if o == LungOpacity
            && super::world::OPACITY_CHILDREN.iter().any(|c| f.has(*c))
            && rng.random_bool(0.8)
        {
            continue;
        }
        let s = f.severity(o) as f64;
        if o == SupportDevices {
            if !rng.random_bool(rates.omit_devices) {
                statements.push(positive(o, f, rates, rng));
                reported.push(o);
            }
            continue;
        }
        if rng.random_bool((rates.omit * (1.0 - s).powi(2)).clamp(0.0, 1.0)) {
            continue;
        }
        reported.push(o);
        if rng.random_bool((rates.hedge_base + rates.hedge_faint * (1.0 - s)).clamp(0.0, 1.0)) {
            statements.push(hedged(o, f, rates, rng));
        } else {
            statements.push(positive(o, f, rates, rng));
        }
    }
    // Absent findings: occasional over-calls (mostly hedged), resolutions and pertinent negatives.
    for o in OBSERVATIONS {
        if o == NoFinding || f.has(o) {
            continue;
        }
        if rng.random_bool(rates.overcall * overcall_weight(o)) {
            reported.push(o);
            statements.push(if rng.random_bool(0.7) {
                hedged(o, f, rates, rng)
            } else {
                positive(o, f, rates, rng)
            });
        } else if rng.random_bool(rates.resolved * overcall_weight(o)) {
            statements.push(resolved(o, rng));
        } else if PERTINENT.contains(&o) && rng.random_bool(rates.pertinent_negative) {
            negatives.push(o);
        }
    }
    // A hedge or over-call may have stated something the list would contradict; negate only what is unstated.
    negatives.retain(|o| {
        !statements
            .iter()
            .any(|s| s.states.iter().any(|(x, _)| x == o))
    });
    let abnormal = statements.iter().any(|s| {
        s.states
            .iter()
            .any(|(o, l)| *o != SupportDevices && matches!(l, Label::Positive | Label::Uncertain))
    });
    let mut lines: Vec<String> = statements.iter().map(|s| s.text.clone()).collect();
    if !abnormal && rng.random_bool(0.8) {
        lines.insert(
            0,
            NORMAL_IMPRESSIONS
                .choose(rng)
                .copied()
                .unwrap_or("")
                .to_string(),
        );
    }
    // Pertinent negatives: one list sentence or separate sentences.
    if !negatives.is_empty() {
        if negatives.len() > 1 && rng.random_bool(0.6) {
            let st = negative_list(&negatives, rng);
            lines.push(st.text.clone());
            statements.push(st);
        } else {
            for &o in &negatives {
                let st = negative_list(&[o], rng);
                lines.push(st.text.clone());
                statements.push(st);
            }
        }
    }
    if lines.is_empty() {
        lines.push(NORMAL_IMPRESSIONS[0].to_string());
    }
    let labels = aggregate(&statements);
    let numbered = lines.len() > 1 && rng.random_bool(0.4);
    let impression_body = if numbered {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}. {l}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        lines.join(" ")
    };
    let impression = crate::data::report::normalize_whitespace(&impression_body);
    let sex = if f.female { "F" } else { "M" };
    let indication = if f.icu {
        [
            "intubated, assess tube placement",
            "hypoxia",
            "respiratory failure",
            "line placement",
        ]
    } else {
        [
            "cough",
            "shortness of breath",
            "chest pain",
            "fever, evaluate for pneumonia",
        ]
    }
    .choose(rng)
    .copied()
    .unwrap_or("");
    let comparison = if rng.random_bool(0.5) {
        "___."
    } else {
        "None."
    };
    let mut text = String::new();
    text.push_str("                                 FINAL REPORT\n");
    text.push_str(&format!(" EXAMINATION:  {view_desc}\n \n"));
    text.push_str(&format!(
        " INDICATION:  ___-year-old {sex} with {indication}.\n \n"
    ));
    text.push_str(&format!(" COMPARISON:  {comparison}\n \n"));
    text.push_str(" FINDINGS: \n \n");
    text.push_str(&wrap(&findings_text(f, &reported, rates, rng)));
    text.push_str(" \n IMPRESSION: \n \n");
    if numbered {
        for l in impression_body.lines() {
            text.push_str(&wrap(l));
        }
    } else {
        text.push_str(&wrap(&impression_body));
    }
    Report {
        text,
        impression,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::report::{SectionChoice, extract};
    use crate::data::synth::world::Prior;
    use crate::observations::N_OBS;
    use rand::SeedableRng;

    #[test]
    fn impression_section_is_what_the_labels_describe() {
        let prior = Prior::default();
        let rates = RadiologistRates::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..500 {
            let f = prior.sample(&mut rng);
            let r = write(&f, "CHEST (PA AND LAT)", &rates, &mut rng);
            assert_eq!(extract(&r.text, SectionChoice::Impression), r.impression);
            let lower = r.impression.to_lowercase();
            // Unambiguous cases: a lone "No pneumothorax." means Pneumothorax 0; a normal template means No Finding.
            if lower.contains("no pneumothorax.") {
                assert_eq!(
                    r.labels.get(Pneumothorax),
                    Label::Negative,
                    "{}",
                    r.impression
                );
            }
            if lower.starts_with("no acute") && !lower.contains("possible") {
                assert_eq!(r.labels.get(NoFinding), Label::Positive, "{}", r.impression);
            }
            if r.labels.get(NoFinding) == Label::Positive {
                for o in OBSERVATIONS {
                    if !matches!(o, NoFinding | SupportDevices) {
                        assert!(
                            !matches!(r.labels.get(o), Label::Positive | Label::Uncertain),
                            "{o}: {}",
                            r.impression
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn faint_findings_are_omitted_or_hedged_more_than_marked_ones() {
        let rates = RadiologistRates::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut count = |s: f32| {
            let mut f = Prior::default().sample(&mut rng);
            f.present = [false; N_OBS];
            f.severity = [0.0; N_OBS];
            f.present[Edema.index()] = true;
            f.severity[Edema.index()] = s;
            let mut positive = 0;
            for _ in 0..2000 {
                positive += (write(&f, "CHEST", &rates, &mut rng).labels.get(Edema)
                    == Label::Positive) as usize;
            }
            positive
        };
        let faint = count(0.1);
        let marked = count(0.95);
        assert!(
            marked > 1800 && faint < 1100,
            "faint {faint}, marked {marked}"
        );
    }
}
