"""Subject-specific τ: the tangent fit, the derivative rule, its fallback, and the IterMask3D policy on a real scan."""
import numpy as np
import pytest

from itermask import ModelBundle, Session
from itermask.thresholding import fit_tan, smoothed_derivative, stop_threshold



@pytest.mark.parametrize("a, b, n", [(0.2, 0.012, 100), (1.5, 0.02, 70), (0.05, 0.0151, 100)])
def test_fit_recovers_known_parameters_from_noisy_paths(a, b, n):
    t = np.arange(n, dtype=float)
    truth = a * np.tan(b * t)
    noisy = truth * (1 + 0.02 * np.random.default_rng(0).standard_normal(n))
    fit = fit_tan(t, noisy)
    assert fit.a == pytest.approx(a, rel=0.05) and fit.b == pytest.approx(b, rel=0.02)
    assert fit.r2 > 0.98


def test_derivative_rule_picks_the_first_step_steeper_than_gamma():
    t = np.arange(100.0)
    a, b, gamma = 0.3, 0.014, 0.05
    derivative = a * b / np.cos(b * t) ** 2
    expected = int(np.argmax(derivative > gamma))
    stop = stop_threshold(a * np.tan(b * t), gamma)
    assert stop.method == "tan-fit" and stop.t_star == expected
    assert stop.tau_stop == pytest.approx(a * np.tan(b * expected), rel=1e-3)


def test_a_path_the_tangent_cannot_describe_falls_back_to_finite_differences():
    path = np.concatenate([np.zeros(40), np.linspace(0, 1, 20), np.ones(40)])  # a step, not a tangent
    stop = stop_threshold(path, gamma=0.03)
    assert stop.method == "finite-difference"
    assert 38 <= stop.t_star <= 45 and stop.t_star == int(np.argmax(smoothed_derivative(path) > 0.03))


def test_subject_specific_policy_runs_its_path_then_a_final_run(tiny_model, scan):
    image, affine, brain, blob = scan
    session = Session(ModelBundle.load(tiny_model), image, affine, brain, policy="itermask3d", seed=1, device="cpu")
    result = session.run()
    path = [it for it in session.iterations if it.phase == "path"]
    final = [it for it in session.iterations if it.phase == "final"]
    assert len(path) >= 95 and final and result.converged
    fractions = [it.mask.sum().item() / session.brain_voxels for it in path]
    assert np.allclose(np.diff(fractions)[:-1], -0.01, atol=0.001)   # exactly 1 % of the brain per step
    taus = result.policy.tau_path
    # Lowest errors leave first, so τ(t) rises (each step re-reconstructs, so not every step is strictly higher).
    assert taus[0] < taus[len(taus) // 2] < taus[-1]
    assert np.mean(np.diff(taus) < 0) < 0.2
    assert result.policy.tau_stop == session.tau and session.tau in {it.tau for it in final}
    on_input = session.prepared.mask_to_input(final[-1].mask)
    assert (on_input & blob).sum() / blob.sum() > 0.5


def test_the_final_run_lets_voxels_return_to_the_mask(either_model, scan):
    image, affine, brain, _ = scan
    session = Session(ModelBundle.load(either_model), image, affine, brain, policy="itermask3d", seed=1, device="cpu")
    while not any(it.phase == "final" for it in session.iterations):
        session.step()
    growth = []
    for _ in range(4):
        before = session.current.mask
        after = session.step().mask
        growth.append(int((after & ~before).sum()))
    assert sum(growth[1:]) > 0  # voxels hidden again that the previous iteration had shown


def test_subject_specific_runs_repeat_with_the_same_seed(tiny_model, scan):
    image, affine, brain, _ = scan
    bundle = ModelBundle.load(tiny_model)
    results = [Session(bundle, image, affine, brain, policy="itermask3d", seed=2, device="cpu").run() for _ in range(2)]
    assert results[0].policy.tau_stop == results[1].policy.tau_stop
    assert np.array_equal(results[0].mask, results[1].mask)

