"""Paper checks against numbers computed here: the closed form a check uses and the verdict it draws from given
measurements (tests/test_paper_checks.py runs every check and asserts their verdicts).

C4 (docs/claims.md#c4): its expected curve is the M1 closed form (docs/theory.md#m1-closed-form), which is written
out below independently of paper_checks and of theory.py; its verdict is recomputed from measurements built here.
The learners' runs are replaced by those measurements, so each test takes well under a second.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # paper_checks/ sits at the repository root

from mmcl_theory.datamodel import make_config  # noqa: E402
from paper_checks import FAIL, PASS, checks  # noqa: E402

# docs/theory.md#m1-reference, core prompt, full rank: r -> (aligned, independent, flipped), three decimals
M1_REFERENCE = {1.0: (0.926, 0.818, 0.709), 0.5: (0.945, 0.800, 0.655), 0.0: (0.971, 0.755, 0.540)}
AGREEMENT = {"aligned": 1.0, "independent": 0.5, "flipped": 0.0}


def m1_accuracy(r, q, sigma_core=1.0, sigma_spu=0.05, p=0.95, sigma_xi=1.0, d=2000):
    """M1, population linear-loss minimiser, core prompts: the score difference of class +1 over class -1 on a test
    point is 2 [w (z_core + xi_1) + m (z_spu + xi_2)], w = Cov(z_core, z_T,core) = 1 + r sigma_core^2,
    m = Cov(z_spu, z_T,core) = 2p - 1, xi_j ~ N(0, sigma_xi^2 / d) the projected noise. Group (y, a) has mean
    y w + a m and variance w^2 (sigma_core^2 + e) + m^2 (sigma_spu^2 + e): a fraction q of the test points agrees
    (a = y, margin w + m), the rest disagrees (margin w - m)."""
    w, m, e = 1 + r * sigma_core**2, 2 * p - 1, sigma_xi**2 / d
    sd = math.sqrt(w**2 * (sigma_core**2 + e) + m**2 * (sigma_spu**2 + e))
    return q * stats.norm.cdf((w + m) / sd) + (1 - q) * stats.norm.cdf((w - m) / sd)


def test_m1_accuracy_here_is_the_documented_reference_table():
    for r, row in M1_REFERENCE.items():
        for test, expected in zip(AGREEMENT, row):
            assert abs(m1_accuracy(r, AGREEMENT[test]) - expected) <= 0.0005, (r, test)


@pytest.mark.parametrize("overrides", [{}, dict(sigma_core=2.0, sigma_spu=0.3, p=0.7, sigma_xi=1.5, d=4, r=0.3),
                                       dict(sigma_core=0.5, sigma_spu=0.01, p=0.99, sigma_xi=3.0, d=10, r=0.8)])
def test_checks_closed_form_is_the_m1_closed_form(overrides):
    """The closed form paper_checks writes out (C1, C2, C4) at configurations where the projected noise e = sigma_xi^2
    / d is large (e = 0.56 and 0.9), so a dropped or misplaced noise term shows."""
    cfg = make_config("M1", **overrides)
    for q in (0.0, 0.3, 1.0):
        expected = m1_accuracy(cfg.r, q, cfg.sigma_core, cfg.sigma_spu, cfg.p, cfg.sigma_xi, cfg.d)
        assert checks._phi_m1(cfg, q) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def _measurements(flipped_of_r):
    """A stand-in for paper_checks.common.evaluate: per r, seeds x (aligned, independent, flipped) accuracies equal
    to the closed form (flipped: flipped_of_r(r)) plus per-seed offsets that average to 0 (the same for every r,
    so paired differences between values of r are exact)."""
    offsets = np.array([0.01, -0.01, 0.004, -0.004, 0.0, 0.002, -0.002, 0.006, -0.006, 0.0])

    def evaluate(cfg, seeds, learners, *args, **kwargs):
        assert learners == ("mmcl_closed_form",) and cfg == make_config("M1", r=cfg.r, n_test=cfg.n_test)
        row = [m1_accuracy(cfg.r, 1.0), m1_accuracy(cfg.r, 0.5), flipped_of_r(cfg.r)]
        return {"mmcl_closed_form": np.array(row)[None, :] + offsets[:seeds, None]}

    return evaluate


def test_c4_expected_curve_is_the_flipped_closed_form_on_its_grid(monkeypatch):
    """C4 says: 'closed form strictly increasing in r on a 101-point grid (0.540 -> 0.709)'. The curve it
    computes must be the flipped-test (q = 0) closed form at the M1 defaults, at r = 0, 0.01, ..., 1."""
    calls = []

    def spy(cfg, q):
        value = real(cfg, q)
        calls.append((cfg, q, value))
        return value

    real = checks._phi_m1
    monkeypatch.setattr(checks, "_phi_m1", spy)
    monkeypatch.setattr(checks, "evaluate", _measurements(lambda r: m1_accuracy(r, 0.0)))
    record = checks.check_C4(quick=True)
    assert calls, "C4 no longer computes its expected curve with paper_checks' closed form"
    rs = sorted(cfg.r for cfg, _, _ in calls)
    np.testing.assert_allclose(rs, np.linspace(0, 1, 101), rtol=0, atol=1e-12)
    for cfg, q, value in calls:
        assert q == 0.0 and cfg == make_config("M1", r=cfg.r), (cfg, q)
        assert value == pytest.approx(m1_accuracy(cfg.r, 0.0), rel=1e-12)
    curve = {round(cfg.r, 2): value for cfg, _, value in calls}
    assert "0.540 -> 0.709" in record.expected
    assert (round(curve[0.0], 3), round(curve[1.0], 3)) == (0.540, 0.709)
    assert record.verdict == PASS, record.why


def test_c4_verdict_from_given_measurements(monkeypatch):
    """The verdict follows from its rule (docs/claims.md#c4) on measurements whose answer is known: the closed form
    itself passes; a flipped accuracy flat in r (no rise), or one that falls from r = 0.5 to 0.75, fails; r = 0
    shifted by 0.02 off the label-only row fails."""
    monkeypatch.setattr(checks, "evaluate", _measurements(lambda r: m1_accuracy(r, 0.0)))
    good = checks.check_C4(quick=True)
    assert good.verdict == PASS and f"rise {m1_accuracy(1, 0) - m1_accuracy(0, 0):.3f} +- 0.000 >" in good.why

    monkeypatch.setattr(checks, "evaluate", _measurements(lambda r: m1_accuracy(0.0, 0.0)))
    flat = checks.check_C4(quick=True)
    assert flat.verdict == FAIL and "rise 0.000 +- 0.000 <= 3 s.e." in flat.why

    dip = lambda r: m1_accuracy(r, 0.0) - (0.05 if r == 0.75 else 0.0)
    monkeypatch.setattr(checks, "evaluate", _measurements(dip))
    dipped = checks.check_C4(quick=True)
    assert dipped.verdict == FAIL and "a significant step down" in dipped.why

    off = lambda r: m1_accuracy(r, 0.0) + (0.02 if r == 0.0 else 0.0)
    monkeypatch.setattr(checks, "evaluate", _measurements(off))
    shifted = checks.check_C4(quick=True)
    assert shifted.verdict == FAIL and "r=0 differs from the label-only row" in shifted.why
