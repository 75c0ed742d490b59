//! Invariants checked over generated inputs (proptest), where fuzzing sees only crashes: label aggregation does
//! not depend on the order of mentions, labeled CSVs read back what was written, every epoch's assignment deals
//! each row to exactly one rank for any world size, the bootstrap is a function of its seed.

use chexlab::data::OnBadRecord;
use chexlab::labelers::format::{LabeledWriter, read_labeled};
use chexlab::labelers::rules::{Classified, aggregate};
use chexlab::{Label, LabelRow, OBSERVATIONS};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = Label> {
    prop_oneof![
        Just(Label::Positive),
        Just(Label::Negative),
        Just(Label::Uncertain),
        Just(Label::Blank)
    ]
}

fn mention() -> impl Strategy<Value = Classified> {
    (0..OBSERVATIONS.len(), label()).prop_map(|(o, label)| Classified {
        observation: OBSERVATIONS[o],
        text: OBSERVATIONS[o].name().to_lowercase(),
        label,
    })
}

fn label_row() -> impl Strategy<Value = LabelRow> {
    proptest::collection::vec(label(), 14).prop_map(|ls| {
        let mut row = LabelRow::default();
        for (o, l) in OBSERVATIONS.iter().zip(ls) {
            row.set(*o, l);
        }
        row
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn aggregation_ignores_the_order_of_mentions(
        mentions in proptest::collection::vec(mention(), 0..24),
        seed in any::<u64>(),
    ) {
        let mut shuffled = mentions.clone();
        use rand::{SeedableRng, seq::SliceRandom};
        shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(aggregate(&mentions), aggregate(&shuffled));
    }

    #[test]
    fn labeled_csvs_read_back_what_was_written(
        rows in proptest::collection::vec(
            ("[A-Za-z0-9_/.-]{1,20}", "(?s)[ -~\u{e9}\u{b5}\n\r\",]{0,80}", label_row()),
            1..12,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        let mut w = LabeledWriter::create(&path, Some("study_id"), true).unwrap();
        for (id, report, labels) in &rows {
            w.write(Some(id), Some(report), labels).unwrap();
        }
        w.finish().unwrap();
        let back: Vec<_> = read_labeled(&path, OnBadRecord::Fail)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        prop_assert_eq!(back.len(), rows.len());
        for (got, (id, report, labels)) in back.iter().zip(&rows) {
            prop_assert_eq!(got.id.as_deref(), Some(id.trim()));
            // CSV keeps a report's bytes, line ends included.
            prop_assert_eq!(got.report.as_deref(), Some(report.as_str()));
            prop_assert_eq!(&got.labels, labels);
        }
    }

    #[test]
    fn an_epoch_deals_every_row_to_one_rank_for_any_world(
        n in 0usize..600,
        world in 1usize..40,
        epoch in 0u64..5,
        seed in any::<u64>(),
    ) {
        let mut seen = vec![0u8; n];
        for rank in 0..world {
            let mine = chexlab::learn::deal(n, rank, world, epoch, seed);
            prop_assert_eq!(mine.len(), n / world, "ranks stay in lock-step");
            for i in mine {
                seen[i] += 1;
            }
        }
        prop_assert!(seen.iter().all(|&c| c <= 1), "a row dealt twice");
        prop_assert_eq!(seen.iter().filter(|&&c| c == 1).count(), n - n % world);
    }

    #[test]
    fn the_bootstrap_is_a_function_of_its_seed(
        data in proptest::collection::vec((0.0f32..1.0, any::<bool>()), 4..80),
        seed in any::<u64>(),
    ) {
        let (scores, labels): (Vec<f32>, Vec<bool>) = data.into_iter().unzip();
        let a = chexlab::eval::bootstrap::auroc_ci(&scores, &labels, 40, 0.95, seed);
        let b = chexlab::eval::bootstrap::auroc_ci(&scores, &labels, 40, 0.95, seed);
        prop_assert_eq!(a, b);
        if let Some((point, (lo, hi))) = a {
            prop_assert!(lo <= hi && (0.0..=1.0).contains(&point), "{lo} {point} {hi}");
        }
    }
}
