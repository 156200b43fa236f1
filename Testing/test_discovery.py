"""Data discovery on small folder trees of each layout, with real (tiny) NIfTI files."""
from __future__ import annotations

import numpy as np
import pytest

from itermask.io import write_nifti
from itermask.scan_layouts import discover


def _write(path, value: float = 1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, np.full((4, 4, 4), value, np.float32), np.eye(4))


def test_bids_with_derivatives(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.8.0"}')
    for sub in ("01", "02"):
        _write(tmp_path / f"sub-{sub}/anat/sub-{sub}_FLAIR.nii.gz")
        _write(tmp_path / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz")
    _write(tmp_path / "sub-03/ses-1/anat/sub-03_ses-1_FLAIR.nii.gz")
    _write(tmp_path / "derivatives/masks/sub-01/anat/sub-01_desc-brain_mask.nii.gz")
    _write(tmp_path / "derivatives/lesions/sub-01/anat/sub-01_label-lesion_mask.nii.gz")
    _write(tmp_path / "derivatives/masks/sub-03/ses-1/anat/sub-03_ses-1_desc-brain_mask.nii.gz")
    found = discover(tmp_path, "FLAIR")
    assert found.layout == "BIDS"
    by = {f.subject: f for f in found.found}
    assert sorted(by) == ["sub-01", "sub-02", "sub-03"]
    assert by["sub-01"].brain_mask.name == "sub-01_desc-brain_mask.nii.gz"
    assert by["sub-01"].lesion_mask.name == "sub-01_label-lesion_mask.nii.gz"
    assert by["sub-02"].brain_mask is None and by["sub-03"].brain_mask is not None
    t1ce = discover(tmp_path, "T1CE")
    assert not t1ce.found and len(t1ce.skipped) == 2 and "contrast entity" in t1ce.report()


def test_brats_case_folders(tmp_path):
    for case in ("BraTS-001", "BraTS-002"):
        for seq in ("flair", "t1", "t1ce", "seg"):
            _write(tmp_path / case / f"{case}_{seq}.nii.gz")
    _write(tmp_path / "BraTS-003" / "BraTS-003_seg.nii.gz")
    found = discover(tmp_path, "T1CE")
    assert found.layout == "BraTS"
    assert [f.image.name for f in found.found] == ["BraTS-001_t1ce.nii.gz", "BraTS-002_t1ce.nii.gz"]
    assert all(f.lesion_mask.name.endswith("_seg.nii.gz") for f in found.found)
    assert [p.name for p, _ in found.skipped] == ["BraTS-003"]
    assert discover(tmp_path, "T1").found[0].image.name == "BraTS-001_t1.nii.gz"


def test_ixi_names(tmp_path):
    for name in ("IXI002-Guys-0828-T1", "IXI002-Guys-0828-T2", "IXI012-HH-1211-T1", "notes-T1"):
        _write(tmp_path / f"{name}.nii.gz")
    _write(tmp_path / "IXI002-Guys-0828-T1_brainmask.nii.gz")
    found = discover(tmp_path, "T1")
    assert found.layout == "IXI"
    assert [(f.subject, f.brain_mask is not None) for f in found.found] == [("IXI002", True), ("IXI012", False)]
    assert "notes-T1" in found.report()
    assert "no FLAIR" in discover(tmp_path, "FLAIR").report()


def test_flat_folder(tmp_path):
    _write(tmp_path / "a.nii.gz")
    _write(tmp_path / "a_brainmask.nii.gz")
    _write(tmp_path / "b.nii.gz")
    _write(tmp_path / "b_lesion.nii.gz")
    _write(tmp_path / "c_lesion.nii.gz")
    found = discover(tmp_path, "FLAIR")
    assert found.layout == "flat"
    assert [(f.subject, f.brain_mask is not None, f.lesion_mask is not None) for f in found.found] == [
        ("a", True, False), ("b", False, True)]
    assert found.skipped[0][1] == "a mask without its scan"


def test_unknown_modality_is_refused(tmp_path):
    from itermask.errors import ItermaskError

    with pytest.raises(ItermaskError, match="unknown modality"):
        discover(tmp_path, "DWI")
