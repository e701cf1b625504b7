"""Executable checks of the claims of Xue et al. (ICLR 2024) as stated in docs/claims.md.

    python -m paper_checks [--quick] [--only C1,Q3] [--out paper_checks/REPORT.md]

runs C1-C8 and Q1-Q5 and writes REPORT.md: a verdict table and details per check. Each check
compares the package's computation with an independent expectation (closed form, second method,
or the reference tables of docs/theory.md); tolerances are 3 standard errors of the seed mean (plus the rounding
of quoted numbers). A failed claim is reported as failed.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see mmcl_theory.sweep.main: jaxlib 0.9's false cache errors


from .checks import CHECKS
from .common import FAIL, NOT_RUN, PASS, Record
from .report import render, run_all

__all__ = ["CHECKS", "FAIL", "NOT_RUN", "PASS", "Record", "render", "run_all"]
