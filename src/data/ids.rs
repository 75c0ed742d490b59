//! The one place where the ids of label files become keys of images and studies. The real files spell one image or
//! study in several ways — CheXpert's `train.csv` and the Stanford release's `train_cheXbert.csv` key images by
//! `Path` with a `CheXpert-v1.0/` or `CheXpert-v1.0-small/` prefix and a split folder, the test labels key studies
//! by `Study` (`CheXpert-v1.0/test/patient64741/study1`), MIMIC-CXR's tables by a numeric `study_id` (in file names
//! `s50414267`) — and every reader hands its ids to [`label_key`], so they all meet the keys the datasets give
//! their images (`patientNNNNN/studyN/viewN_frontal`) and studies (`patientNNNNN/studyN`, MIMIC's digits).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// What a label row applies to, in normal form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelKey {
    /// One image: `patientNNNNN/studyN/viewN_frontal` (CheXpert; no extension).
    Image(String),
    /// Every image of one study: `patientNNNNN/studyN` (CheXpert), or the study id (MIMIC-CXR's digits, a
    /// synthetic world's, a user's own).
    Study(String),
}

fn numbered(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Normalises an id of a label file (any id column: `Path`, `Study`, `study_id`, `id`):
/// - a path through `patientNNNNN/studyN/<file>` — whatever comes before (`CheXpert-v1.0-small/train/`, `test/`, a
///   folder of the user's), with or without the image's extension — is that image;
/// - a path ending in `patientNNNNN/studyN` (a trailing `/` allowed) is that study;
/// - `sNNNN` or `NNNN` (MIMIC-CXR) is the study `NNNN`;
/// - anything else is a study of that name, trimmed (a synthetic world's ids, a user's own).
///
/// Backslashes count as separators, so ids written on Windows match too.
pub fn label_key(id: &str) -> LabelKey {
    let id = id.trim();
    let parts: Vec<&str> = id
        .split(['/', '\\'])
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if let Some(at) = parts.iter().rposition(|p| numbered(p, "patient"))
        && parts.get(at + 1).is_some_and(|s| numbered(s, "study"))
    {
        let study = format!("{}/{}", parts[at], parts[at + 1]);
        return match parts.get(at + 2) {
            None => LabelKey::Study(study),
            Some(file) => {
                let stem = match file.rsplit_once('.') {
                    Some((stem, ext))
                        if matches!(
                            ext.to_ascii_lowercase().as_str(),
                            "jpg" | "jpeg" | "png" | "dcm"
                        ) =>
                    {
                        stem
                    }
                    _ => file,
                };
                LabelKey::Image(format!("{study}/{stem}"))
            }
        };
    }
    let digits = id.strip_prefix('s').unwrap_or(id);
    if digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = digits.parse::<u64>()
    {
        return LabelKey::Study(n.to_string());
    }
    LabelKey::Study(id.to_string())
}

/// Indexes `rows` of `path` by the normal form of their ids (`id` gives a row's id and line); an id given twice is
/// an error naming it and both lines.
pub fn index_by_key<'a, T>(
    path: &Path,
    rows: &'a [T],
    id: impl Fn(&T) -> (&str, u64),
) -> Result<HashMap<LabelKey, &'a T>> {
    let mut index: HashMap<LabelKey, &T> = HashMap::with_capacity(rows.len());
    for r in rows {
        let (key, line) = id(r);
        if let Some(prev) = index.insert(label_key(key), r) {
            return Err(Error::record(
                path,
                line,
                format!("id '{key}' again (first on line {})", id(prev).1),
            ));
        }
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> LabelKey {
        LabelKey::Image(s.into())
    }
    fn study(s: &str) -> LabelKey {
        LabelKey::Study(s.into())
    }

    #[test]
    fn every_spelling_of_an_image_or_study_is_one_key() {
        let frontal = image("patient00001/study1/view1_frontal");
        for id in [
            "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
            "train/patient00001/study1/view1_frontal.jpg",
            "patient00001/study1/view1_frontal.jpg",
            "patient00001/study1/view1_frontal",
            " /data/chexpert/valid/patient00001/study1/view1_frontal.JPG ",
            r"CheXpert-v1.0\train\patient00001\study1\view1_frontal.jpg",
        ] {
            assert_eq!(label_key(id), frontal, "{id}");
        }
        for id in [
            "CheXpert-v1.0/test/patient64741/study1",
            "test/patient64741/study1/",
            "patient64741/study1",
        ] {
            assert_eq!(label_key(id), study("patient64741/study1"), "{id}");
        }
        for id in ["50414267", "s50414267", "050414267"] {
            assert_eq!(label_key(id), study("50414267"), "{id}");
        }
        assert_eq!(label_key("0"), study("0"));
        assert_eq!(label_key("  CXR12 "), study("CXR12"));
        assert_eq!(label_key("study"), study("study"));
        // Not a CheXpert study folder: kept as given.
        assert_eq!(label_key("patientX/study1"), study("patientX/study1"));
    }
}
