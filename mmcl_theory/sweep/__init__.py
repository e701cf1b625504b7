"""`python -m mmcl_theory.sweep NAME`: run a named sweep (mmcl_theory/sweeps/NAME.toml, or a TOML file by path), resumable.

A sweep varies one or more parameters (`param`, a name or a list of names swept one at a time)
over `values`, optionally for each value of a second parameter (`series`), or for each of its named
`[variants.NAME]` tables (each with config or settings overrides, and optionally its own `values`
and `learners`; the series column reads "variant=NAME"). A swept parameter may be a model parameter
or a learner setting (e.g. `steps`). Every point runs all seeds and learners
through models.evaluate_grid, the one grid of every registered model (for the synthetic models one
compiled call per point, seeds mapped inside it). Finished points are appended to points.jsonl as
they complete, each line tagged with the plan's hash, so a killed sweep rerun with the same --out
skips them and lines of another plan are refused. At the end it writes results.csv / results.json
(the results contract) and a figure, and prints a table.

Results contract, one row per accuracy: results.CONTRACT (described in results.py).

Modules, one way down: ``plan`` (definitions, the plan) -> ``memory`` (the up-front memory check) ->
``store`` (output folder, resume, results, parts and merge) -> ``launch`` (local or SLURM parts) ->
``cli``. The names below are the package's public API.
"""

from .cli import finish, main, merge_main
from .launch import launch_parts, part_command, run_part_job
from .memory import available_memory, check_memory, point_memory
from .plan import DEFINITION_KEYS, SWEEP_DIR, Plan, Point, SweepError, available_sweeps, load_definition, make_plan
from .store import (
                    PART_RECORD_KEYS,
                    PLAN_ARG_KEYS,
                    contract_rows,
                    merge_parts,
                    parse_part,
                    part_label,
                    part_points,
                    read_done,
                    run_part,
                    run_sweep,
                    write_results,
)

__all__ = ["finish", "main", "merge_main", "launch_parts", "part_command",
           "run_part_job", "available_memory", "check_memory", "point_memory", "DEFINITION_KEYS", "SWEEP_DIR", "Plan",
           "Point", "SweepError", "available_sweeps", "load_definition", "make_plan", "PART_RECORD_KEYS",
           "PLAN_ARG_KEYS", "contract_rows", "merge_parts", "parse_part", "part_label", "part_points", "read_done",
           "run_part", "run_sweep", "write_results"]
