"""Grading of submitted student notebooks — not implemented yet; this module holds its place.

Planned by the grading issue, and nothing here works today: collect students' executed copies
of ``notebooks/NN_name.ipynb``, run each exercise's check from :mod:`mmcourse.checks` against
the submitted function (leniently, so one wrong answer does not stop the others), and write a
per-student, per-exercise table of ✓ / ✗ / pending verdicts next to ``build/report.json``.
It will build on :mod:`mmcourse.release` (which cells are exercises) and
:mod:`mmcourse.runner` (executing a notebook in a killable process). Until then, use
``mmcourse run --lenient-checks --src DIR`` and read each notebook's check output.
"""
