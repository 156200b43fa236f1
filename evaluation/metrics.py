"""Evaluation metrics, defined exactly as ``METHOD.md`` says, computed with MONAI, scikit-learn and scikit-image.

Segmentation metrics are per volume (the caller averages over volumes). Voxel-wise ranking metrics count brain
voxels only: the background is trivially normal and would inflate AUROC. Reconstruction quality is measured over
the healthy brain (brain minus lesion). Detection metrics rank whole scans by a scan-level score.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch


def segmentation_metrics(prediction: np.ndarray, truth: np.ndarray, spacing_mm=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Dice, sensitivity, precision, Jaccard and ASSD (mm) of one binary volume against the truth.

    ASSD is the mean distance between the two *surfaces* (border voxels), over the surface voxels of both, each to
    the nearest surface voxel of the other, with the voxel ``spacing_mm`` per axis. A ratio whose denominator is
    zero, or an ASSD with an empty side, is ``nan``.

    >>> truth = np.zeros((1, 1, 4), bool); truth[0, 0, 1] = True
    >>> prediction = truth.copy(); prediction[0, 0, 2] = True
    >>> {k: round(v, 3) for k, v in segmentation_metrics(prediction, truth, (1, 1, 1.5)).items()}
    {'dice': 0.667, 'sensitivity': 1.0, 'precision': 0.5, 'jaccard': 0.5, 'assd_mm': 0.5}
    """
    from monai.metrics import compute_average_surface_distance, compute_confusion_matrix_metric, get_confusion_matrix

    def one_hot(v):  # MONAI's layout: (batch, class, *spatial); one foreground class
        return torch.from_numpy(np.asarray(v, bool))[None, None].float()

    pred, true = one_hot(prediction), one_hot(truth)
    counts = get_confusion_matrix(pred, true)
    names = {"dice": "f1 score", "sensitivity": "sensitivity", "precision": "precision", "jaccard": "threat score"}
    out = {key: _ratio(counts, name, compute_confusion_matrix_metric) for key, name in names.items()}
    if pred.any() and true.any():
        with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument of its own internal call
            warnings.simplefilter("ignore", FutureWarning)
            out["assd_mm"] = float(compute_average_surface_distance(
                pred, true, include_background=True, symmetric=True, spacing=[float(s) for s in spacing_mm]))
    else:
        out["assd_mm"] = math.nan
    return out


def _ratio(counts: torch.Tensor, name: str, compute) -> float:
    """MONAI substitutes 0 or 1 for an undefined ratio depending on the metric; undefined is nan here."""
    tp, fp, _, fn = counts[0, 0].tolist()
    denominators = {"f1 score": 2 * tp + fp + fn, "sensitivity": tp + fn, "precision": tp + fp,
                    "threat score": tp + fp + fn}
    return float(compute(name, counts)) if denominators[name] else math.nan


def voxel_ranking_metrics(score: np.ndarray, truth: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Voxel AUROC and AUPRC (average precision) of an anomaly map against the truth, over brain voxels only.

    >>> brain = np.ones(4, bool); truth = np.array([0, 0, 1, 1], bool)
    >>> voxel_ranking_metrics(np.array([0.1, 0.4, 0.35, 0.8]), truth, brain)
    {'auroc': 0.75, 'auprc': 0.8333333333333333}
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    inside = np.asarray(brain, bool)
    labels, values = np.asarray(truth, bool)[inside], np.asarray(score, float)[inside]
    if labels.all() or not labels.any():
        return {"auroc": math.nan, "auprc": math.nan}
    return {"auroc": float(roc_auc_score(labels, values)), "auprc": float(average_precision_score(labels, values))}


def reconstruction_quality(image: np.ndarray, reconstruction: np.ndarray, healthy: np.ndarray) -> dict[str, float]:
    """PSNR (dB) and SSIM of a reconstruction over the healthy brain (brain minus lesion) only.

    The data range is that of the image over the healthy brain; a perfect reconstruction has PSNR ``inf``. SSIM is scikit-image's local SSIM map (7-voxel
    windows) averaged over healthy voxels; outside them the reconstruction is replaced by the image, so voxels that
    are not scored do not leak into the windows of those that are.

    >>> image = np.linspace(0, 1, 8 ** 3).reshape(8, 8, 8); healthy = np.ones_like(image, bool)
    >>> round(reconstruction_quality(image, image + 0.1, healthy)["psnr_db"], 3)   # 10·log10(1² / 0.1²)
    20.0
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    healthy = np.asarray(healthy, bool)
    image, reconstruction = np.asarray(image, float), np.asarray(reconstruction, float)
    data_range = float(image[healthy].max() - image[healthy].min())
    with np.errstate(divide="ignore"):  # a perfect reconstruction has an infinite PSNR, which is the right answer
        psnr = peak_signal_noise_ratio(image[healthy], reconstruction[healthy], data_range=data_range)
    _, ssim_map = structural_similarity(image, np.where(healthy, reconstruction, image), data_range=data_range,
                                        full=True)
    return {"psnr_db": float(psnr), "ssim": float(ssim_map[healthy].mean())}


def detection_metrics(normal_scores, anomalous_scores) -> dict[str, float]:
    """Scan-level detection as in IterMask3D Table 1: a higher score means more anomalous.

    AUROC and AUPRC with anomalous scans as the positive class. FPR80/FPR90: with the threshold that accepts 80 % /
    90 % of the normal scans (score at most the threshold), the share of anomalous scans also accepted (missed).
    FNR80/FNR90: with the threshold that flags 80 % / 90 % of the anomalous scans (score at least the threshold), the
    share of normal scans also flagged. Ties count against the method.

    >>> m = detection_metrics([1, 2, 3, 4, 5], [3.5, 6, 7, 8, 9])
    >>> {k: round(v, 3) for k, v in m.items()}
    {'auroc': 0.92, 'auprc': 0.943, 'fpr80': 0.2, 'fpr90': 0.2, 'fnr80': 0.0, 'fnr90': 0.4}
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    normal, anomalous = np.sort(np.asarray(normal_scores, float)), np.sort(np.asarray(anomalous_scores, float))[::-1]
    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    scores = np.r_[normal, anomalous]
    out = {"auroc": float(roc_auc_score(labels, scores)), "auprc": float(average_precision_score(labels, scores))}
    for rate in (80, 90):
        accept = normal[math.ceil(rate / 100 * len(normal)) - 1]
        flag = anomalous[math.ceil(rate / 100 * len(anomalous)) - 1]
        out[f"fpr{rate}"] = float(np.mean(anomalous <= accept))
        out[f"fnr{rate}"] = float(np.mean(normal >= flag))
    return {k: out[k] for k in ("auroc", "auprc", "fpr80", "fpr90", "fnr80", "fnr90")}


def lesion_detection(prediction: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """Lesion-wise detection: the truth's lesions (26-connected components), how many the prediction touches
    (found) or not (missed), and the predicted clusters that touch no lesion (false clusters).

    >>> truth = np.zeros((1, 1, 9), bool); truth[0, 0, [1, 4]] = True
    >>> prediction = np.zeros_like(truth); prediction[0, 0, [1, 7]] = True
    >>> lesion_detection(prediction, truth)
    {'lesions': 2, 'found': 1, 'missed': 1, 'false_clusters': 1}
    """
    from scipy import ndimage

    connectivity = np.ones((3, 3, 3), bool)
    lesions, n_lesions = ndimage.label(truth, connectivity)
    clusters, n_clusters = ndimage.label(prediction, connectivity)
    found = len(np.unique(lesions[prediction & truth]))
    touching = len(np.unique(clusters[prediction & truth]))
    return {"lesions": int(n_lesions), "found": int(found), "missed": int(n_lesions - found),
            "false_clusters": int(n_clusters - touching)}
