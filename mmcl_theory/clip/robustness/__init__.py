"""Effective robustness (Taori et al. 2020): OOD accuracy above the baseline trend, in points.

Accuracies are fractions in (0, 1). With a transform T (logit or probit), a line
T(ood) = slope * T(id) + intercept is fitted by least squares over baseline models, and

    ER(model) = 100 * (ood - T^{-1}(slope * T(id) + intercept))        (percentage points).

The ImageNet baselines come from imagenet-testbed's ``robustness_top1s.csv`` and ``model_types.csv``
(read from a path). The testbed's own protocol is followed: models of the chosen types, minus the
ResNet-50 duplicates whose names contain 'aws', 'batch64' or 'subsample', and points whose
transform is not finite (ResNet-50 on ImageNet-A scores 0 by construction). The x-axis is ImageNet
accuracy on the shift's classes (``val-on-imagenet-r-classes`` etc. for R, A and ObjectNet).
With this protocol the STANDARD logit fits reproduce the reference fits ``REFERENCE_LOGIT_FITS``.

Bad input is refused with one line naming the file and what is allowed (a missing file or column,
an empty table, a value that is not a number), or, for single rows of a results table (an accuracy
that is NaN or outside [0, 1], a step that is not an integer), skipped, counted and reported on
stdout and in the JSON report. No NaN reaches a printed or written result.

CLI: ``python -m mmcl_theory.clip.robustness testbed --testbed DIR [--results CSV]`` prints the
baseline fits (and ER of evaluated models); ``... series --results CSV --id-dataset D --ood-datasets ...``
(or ``--points CSV``) computes ER across checkpoint series with a baseline fitted over chosen
series (``--baseline label``) and draws the OOD-vs-ID figure.

Modules, one way down: ``trend`` (transforms, line fits, ER, bootstrap) -> ``tables`` (reading CSV
results) -> ``testbed`` (imagenet-testbed baselines) and ``series`` (checkpoint series, figure) ->
``cli``; ``mechanisms`` (the real-image mechanism experiment's arms and OOD-vs-ID figure, drawn by
``python -m mmcl_theory.figures``) reads ``trend`` only. The names below are the package's public API.
"""

from .cli import main
from .series import (SERIES_CSV_FIELDS, Series, plot_ood_vs_id, read_series_csv, series_effective_robustness,
                     series_from_results, write_series_csv)
from .tables import read_table
from .testbed import (EVALUATE_NAMES, EXCLUDED_NAME_PARTS, REFERENCE_LOGIT_FITS, TESTBED_SHIFTS, Testbed,
                      accuracies_from_evaluate, accuracies_from_pairs, average_baseline_points, baseline_mask,
                      baseline_points, fit_testbed, load_testbed, testbed_effective_robustness)
from .trend import (TRANSFORMS, LinearFit, bootstrap_effective_robustness, bootstrap_er_samples, check_accuracies,
                    fit_line, inverse_transform, transform)

__all__ = ["main", "SERIES_CSV_FIELDS", "Series", "plot_ood_vs_id", "read_series_csv", "series_effective_robustness",
           "series_from_results", "write_series_csv", "read_table", "EVALUATE_NAMES", "EXCLUDED_NAME_PARTS",
           "REFERENCE_LOGIT_FITS", "TESTBED_SHIFTS", "Testbed", "accuracies_from_evaluate", "accuracies_from_pairs",
           "average_baseline_points", "baseline_mask", "baseline_points", "fit_testbed", "load_testbed",
           "testbed_effective_robustness", "TRANSFORMS", "LinearFit", "bootstrap_effective_robustness",
           "bootstrap_er_samples", "check_accuracies", "fit_line", "inverse_transform", "transform"]
