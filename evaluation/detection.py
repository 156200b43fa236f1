"""Scan-level detection of artifacts (IterMask3D Table 1): unaltered held-out scans are the normal class, the same
scans with a synthetic artifact (or another MRI sequence) the anomalous one; each method ranks them by its scan
score (IterMask: final mask volume; one-shot methods: mean error)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from itermask.cases import CaseVolumes

from .artifacts import ARTIFACTS, apply_artifact
from .metrics import detection_metrics

NORMAL = "normal"
OTHER_SEQUENCE = "other_sequence"


@dataclass
class Scan:
    name: str
    group: str            # NORMAL, an artifact name, or OTHER_SEQUENCE
    volumes: CaseVolumes


def artifact_scans(normals: dict[str, CaseVolumes], other_sequences: dict[str, CaseVolumes], seed: int = 0):
    """The normal scans, each again with every artifact of :data:`ARTIFACTS`, and scans of other sequences."""
    from itermask.preprocess import brain_mask_or_nonzero

    scans = [Scan(name, NORMAL, v) for name, v in normals.items()]
    for artifact in ARTIFACTS:
        for name, v in normals.items():
            brain = brain_mask_or_nonzero(v.image, v.brain)
            image = apply_artifact(artifact, v.image, brain, v.affine, seed)
            scans.append(Scan(f"{name}+{artifact}", artifact, replace(v, image=image)))
    scans += [Scan(name, OTHER_SEQUENCE, v) for name, v in other_sequences.items()]
    return scans


def score_scans(methods: list, scans: list[Scan], seed: int = 0, progress=print) -> list[dict]:
    """One row per (method, scan): its scan score and run time."""
    rows = []
    for method in methods:
        for scan in scans:
            result = method.run(scan.volumes, seed)
            rows.append({"method": result.method, "scan": scan.name, "group": scan.group, "score": result.scan_score,
                         "seconds": result.seconds})
            progress(f"{result.method}: {scan.name}: score {result.scan_score:.4g}")
    return rows


def detection_rows(scores: list[dict]) -> list[dict]:
    """Per method and anomaly group: detection metrics of that group against the normal scans."""
    out = []
    for method in dict.fromkeys(r["method"] for r in scores):
        mine = [r for r in scores if r["method"] == method]
        normal = [r["score"] for r in mine if r["group"] == NORMAL]
        for group in dict.fromkeys(r["group"] for r in mine if r["group"] != NORMAL):
            anomalous = [r["score"] for r in mine if r["group"] == group]
            out.append({"method": method, "group": group, "normal": len(normal), "anomalous": len(anomalous),
                        **detection_metrics(normal, anomalous)})
    return out
