//! The MIMIC-CXR-JPG reader on a small layout written by the test, in the real column layouts (gzipped and plain).

use std::io::Write;
use std::path::Path;

use chexlab::data::mimic::{MimicLayout, read_metadata};
use chexlab::data::report::{SectionChoice, extract};
use chexlab::data::{OnBadRecord, Split, View};
use chexlab::{Label, Observation};

const METADATA: &str = "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,\
StudyDate,StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,\
PatientOrientationCodeSequence_CodeMeaning
02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,\
CHEST (PA AND LAT),postero-anterior,Erect
174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544,21800506,\
213014.531,CHEST (PA AND LAT),lateral,Erect
2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,10000032,53189527,CHEST (PA AND LAT),PA,3056,2544,21800626,165500.312,\
CHEST (PA AND LAT),postero-anterior,Erect
68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714,10000764,57375967,CHEST (PORTABLE AP),AP,2705,2539,21321018,\
142240.593,CHEST (PORTABLE AP),antero-posterior,
";

const SPLIT: &str = "dicom_id,study_id,subject_id,split
02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,50414267,10000032,train
174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,50414267,10000032,train
2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,53189527,10000032,train
68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714,57375967,10000764,test
";

// Alphabetical observation order, as MIMIC ships it.
const CHEXPERT: &str = "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,\
Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices
10000032,50414267,,,,,,,,,1.0,,,,,
10000032,53189527,,,,,,,,,1.0,,,,,
10000764,57375967,,,-1.0,,,,,,,,,-1.0,0.0,
";

fn gz(path: &Path, body: &str) {
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(body.as_bytes()).unwrap();
    enc.finish().unwrap();
}

fn layout(dir: &Path) {
    gz(&dir.join("mimic-cxr-2.0.0-metadata.csv.gz"), METADATA);
    gz(&dir.join("mimic-cxr-2.0.0-split.csv.gz"), SPLIT);
    std::fs::write(dir.join("mimic-cxr-2.0.0-chexpert.csv"), CHEXPERT).unwrap();
    let rep = dir.join("files/p10/p10000032");
    std::fs::create_dir_all(&rep).unwrap();
    std::fs::write(
        rep.join("s50414267.txt"),
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n FINDINGS:\n\n \
         There is no focal consolidation, pleural effusion or pneumothorax.\n\n IMPRESSION:\n\n No acute \
         cardiopulmonary process.\n",
    )
    .unwrap();
}

#[test]
fn joins_images_with_split_and_labels_by_name() {
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path());
    let l = MimicLayout::open(dir.path(), None).unwrap();
    assert!(l.negbio.is_none());
    let images: Vec<_> = l
        .images(OnBadRecord::Fail)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(images.len(), 4);
    assert_eq!(images[0].meta.view, View::Pa);
    assert_eq!(images[1].meta.view, View::Lateral);
    assert_eq!(images[0].meta.rows, Some(3056));
    assert_eq!(
        images[0].image_path,
        Path::new("files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg")
    );
    let last = &images[3];
    assert_eq!(last.split, Split::Test);
    assert_eq!(last.meta.view, View::Ap);
    let labels = last.chexpert.unwrap();
    assert_eq!(labels.get(Observation::Consolidation), Label::Uncertain);
    assert_eq!(labels.get(Observation::Pneumonia), Label::Uncertain);
    assert_eq!(labels.get(Observation::Pneumothorax), Label::Negative);
    assert_eq!(labels.get(Observation::NoFinding), Label::Blank);
    assert_eq!(
        images[0].chexpert.unwrap().get(Observation::NoFinding),
        Label::Positive
    );

    let (studies, bad) = l.studies(OnBadRecord::Fail).unwrap();
    assert_eq!(bad.skipped, 0);
    assert_eq!(
        studies.iter().map(|s| s.study_id).collect::<Vec<_>>(),
        vec![50414267, 53189527, 57375967]
    );
    let report = l.read_report(10000032, 50414267).unwrap();
    assert_eq!(
        extract(&report, SectionChoice::Impression),
        "No acute cardiopulmonary process."
    );
    let err = l.read_report(10000764, 57375967).unwrap_err().to_string();
    assert!(err.contains("files/p10/p10000764/s57375967.txt"), "{err}");
}

#[test]
fn missing_tables_and_columns_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = MimicLayout::open(dir.path(), None).unwrap_err().to_string();
    assert!(err.contains("mimic-cxr-2.0.0-metadata.csv"), "{err}");
    let p = dir.path().join("meta.csv");
    std::fs::write(&p, "dicom_id,study_id\nx,1\n").unwrap();
    let err = read_metadata(&p, OnBadRecord::Fail)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("meta.csv") && err.contains("missing column(s) subject_id"),
        "{err}"
    );
}

#[test]
fn bad_rows_fail_or_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path());
    // A study absent from the split table, a non-numeric subject, and a path-escaping dicom id.
    let extra = "ffff,10000999,59999999,X,PA,1,1,1,1,X,x,x\n\
                 eeee,abc,50414267,X,PA,1,1,1,1,X,x,x\n\
                 ../../etc,10000032,50414267,X,PA,1,1,1,1,X,x,x\n";
    gz(
        &dir.path().join("mimic-cxr-2.0.0-metadata.csv.gz"),
        &format!("{METADATA}{extra}"),
    );
    let l = MimicLayout::open(dir.path(), None).unwrap();
    let err = l
        .images(OnBadRecord::Fail)
        .unwrap()
        .find_map(Result::err)
        .unwrap()
        .to_string();
    assert!(
        err.contains("metadata.csv.gz: line 6") && err.contains("not in the split table"),
        "{err}"
    );
    let mut it = l.images(OnBadRecord::Skip).unwrap();
    assert_eq!(it.by_ref().map(Result::unwrap).count(), 4);
    let bad = it.bad_records();
    assert_eq!(bad.skipped, 3, "{bad:?}");
    assert!(
        bad.examples.iter().any(|e| e.contains("subject_id 'abc'")),
        "{bad:?}"
    );
    assert!(
        bad.examples
            .iter()
            .any(|e| e.contains("dicom_id '../../etc'")),
        "{bad:?}"
    );

    // A study assigned to two splits.
    std::fs::remove_file(dir.path().join("mimic-cxr-2.0.0-split.csv.gz")).unwrap();
    std::fs::write(
        dir.path().join("mimic-cxr-2.0.0-split.csv"),
        format!("{SPLIT}174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,50414267,10000032,test\n"),
    )
    .unwrap();
    let l = MimicLayout::open(dir.path(), None).unwrap();
    let err = l.studies(OnBadRecord::Fail).unwrap_err().to_string();
    assert!(
        err.contains("split.csv: line 6") && err.contains("in both train and test"),
        "{err}"
    );
}
