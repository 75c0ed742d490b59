//! Area under the ROC curve, exact, with ties handled as scikit-learn's `roc_auc_score` does (a tied
//! positive/negative pair counts one half): the Mann–Whitney U statistic over mid-ranks.

/// AUROC of `scores` for binary `labels`; `None` when either class is absent (the AUROC is undefined).
pub fn auroc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "scores and labels differ in length"
    );
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' mid-ranks (1-based), tie groups sharing their mean rank.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + 1 + j) as f64 / 2.0;
        let positives = order[i..j].iter().filter(|&&k| labels[k]).count();
        rank_sum += mid_rank * positives as f64;
        i = j;
    }
    let u = rank_sum - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Area under the precision-recall curve as average precision, computed as scikit-learn's
/// `average_precision_score` does: `Σ (R_k − R_{k−1}) · P_k` over the distinct score thresholds, from the highest
/// down (tied scores form one threshold). `None` without positives.
pub fn auprc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "scores and labels differ in length"
    );
    let pos = labels.iter().filter(|&&l| l).count();
    if pos == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0f64, 0f64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / pos as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
        i = j;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        assert_eq!(
            auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        // All tied: 0.5.
        assert_eq!(auroc(&[1.0; 4], &[false, true, false, true]), Some(0.5));
        // Perfect and inverted.
        assert_eq!(auroc(&[0.0, 1.0], &[false, true]), Some(1.0));
        assert_eq!(auroc(&[1.0, 0.0], &[false, true]), Some(0.0));
        // roc_auc_score([0, 1, 0, 1, 1], [0.2, 0.2, 0.5, 0.5, 0.9]) == 0.6666...
        let a = auroc(
            &[0.2, 0.2, 0.5, 0.5, 0.9],
            &[false, true, false, true, true],
        )
        .unwrap();
        assert!((a - 2.0 / 3.0).abs() < 1e-12, "{a}");
        assert_eq!(auroc(&[0.3, 0.4], &[true, true]), None);
    }

    #[test]
    fn auprc_known_values() {
        // sklearn.metrics.average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333...
        let a = auprc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((a - 5.0 / 6.0).abs() < 1e-12, "{a}");
        // All tied: the prevalence.
        assert_eq!(auprc(&[0.5; 4], &[true, false, false, false]), Some(0.25));
        assert_eq!(auprc(&[0.5; 2], &[false, false]), None);
    }
}
