"""The interactive session on a real scan with a real (tiny, trained-here) model."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from itermask import ItermaskError, ModelBundle, Session


@pytest.fixture()
def session(tiny_model, scan):
    image, affine, brain, _ = scan
    return Session(ModelBundle.load(tiny_model), image, affine, brain, seed=3, device="cpu")


def test_refinement_shrinks_towards_the_inserted_anomaly(session, scan):
    blob = scan[3]
    result = session.run()
    first, last = session.iterations[0], session.current
    assert len(session.iterations) >= 3
    masks = [session.prepared.mask_to_input(it.mask) for it in (first, last)]
    share_in_blob = [float((m & blob).sum()) / max(int(m.sum()), 1) for m in masks]
    # The whole brain is hidden at first; at the end the hidden region is concentrated on the anomaly ...
    assert share_in_blob[1] > 4 * share_in_blob[0]
    # ... while most of the anomaly is still hidden (the model could not reconstruct it).
    assert float((masks[1] & blob).sum()) / blob.sum() > 0.5
    # The segmentation from the anomaly map finds the anomaly better than chance.
    overlap = float((result.mask.astype(bool) & blob).sum())
    assert 2 * overlap / (result.mask.sum() + blob.sum()) > 0.3
    assert result.mask.shape == blob.shape


def test_first_step_unmasks_forty_percent_and_masks_only_shrink(session):
    for _ in range(4):
        session.step()
    fractions = [it.mask.sum().item() / session.brain_voxels for it in session.iterations]
    assert fractions[0] == 1.0
    assert fractions[1] == pytest.approx(0.6, abs=0.01)
    assert all(b <= a for a, b in zip(fractions, fractions[1:]))
    assert all(not (it.mask & ~session.prepared.brain).any() for it in session.iterations)


def test_back_seek_and_step_reuse_cached_iterations(session):
    for _ in range(3):
        session.step()
    third = session.current
    assert session.back().index == 1
    assert session.seek(0).index == 0
    session.seek(1)
    assert session.step() is third  # cached: nothing recomputed
    with pytest.raises(ItermaskError, match="has not been computed"):
        session.seek(7)


def test_raising_tau_branches_and_shrinks_faster(session):
    for _ in range(3):
        session.step()
    session.back()
    default_next = session.iterations[2].mask.sum().item()
    session.set_tau(session.tau * 3)
    assert len(session.iterations) == 2
    assert session.step().mask.sum().item() < default_next


def test_an_edited_mask_is_continued_from(session, scan):
    blob = scan[3]
    session.step()
    session.step()
    session.set_mask(blob)
    it = session.step()
    assert it.phase == "edited" and it.tau is None
    on_input = session.prepared.mask_to_input(it.mask)
    assert 2 * (on_input & blob).sum() / (on_input.sum() + blob.sum()) > 0.85
    assert session.step().mask.sum() <= it.mask.sum()


def test_same_seed_same_answer_other_seed_other_noise(either_model, scan):
    image, affine, brain, _ = scan
    bundle = ModelBundle.load(either_model)
    runs = [Session(bundle, image, affine, brain, seed=s, device="cpu") for s in (5, 5, 6)]
    for run in runs:
        run.step()
        run.step()
    assert torch.equal(runs[0].current.error, runs[1].current.error)
    assert not torch.equal(runs[0].current.error, runs[2].current.error)


def test_iteration_cap_stops_a_run(tiny_model, scan):
    image, affine, brain, _ = scan
    bundle = ModelBundle.load(tiny_model)
    bundle.metadata = replace(bundle.metadata, policy=replace(bundle.metadata.policy, max_iterations=2))
    session = Session(bundle, image, affine, brain, tau=1e-9, device="cpu")  # so small a τ never shrinks
    result = session.run()
    assert len(result.iterations) == 2 and result.converged
    assert np.isfinite(result.anomaly_map).all()
