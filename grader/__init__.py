"""The kit's grader: `python -m grader ID.zip` (see grader/__main__.py and the README's Grading section).

    grader/rubric.py    every number: points, thresholds, time / memory / size limits, held-out sizes
    grader/archive.py   what a bundle leaves out; the checks a zip passes before it is unpacked
    grader/heldout.py   held-out sets generated from the grading seed, cached by seed
    grader/sandbox.py   the child process that runs a submission's code, and its walls
    grader/cgroups.py   a cgroup per child where one can be made (memory with shared memory, processes)
    grader/child.py     what runs inside that child (never imported by the grader)
    grader/cases.py     the assignments, their cases, and how answers are scored
    grader/grading.py   grade(): one submission, assignment by assignment
    grader/report.py    text, JSON and Gradescope output
    grader/batch.py     a folder of submissions, in parallel processes
    grader/gradescope.py  the Gradescope autograder zip, and what its run_autograder runs
    grader/starter.py   the student starter (solution regions stubbed)
    grader/probe.py     the SimCLR case's linear probe

Importing this package imports nothing heavy; torch is imported only to score the VLM and
SimCLR answers.
"""
