"""The grader's numbers, in one place: points and accuracy thresholds, time and memory limits,
the submission size limit, and the sizes of the held-out sets.

Everything else (bundle.py, the archive checks, the cases, the README) reads them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# ----------------------------------------------------------------------------------------------
# Points: credit grows linearly with accuracy between `low` (no credit) and `high` (full credit)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    points: float  # credit at or above `high`
    low: float  # accuracy at or below which the case gives 0
    high: float  # accuracy from which the case gives all its points
    extra_credit: bool = False  # extra credit counts in the total but not in the maximum

    def credit(self, accuracy: float) -> float:
        """Points for an accuracy in [0, 1]: 0 up to `low`, linear to `points` at `high`."""
        fraction = (accuracy - self.low) / (self.high - self.low)
        return round(self.points * min(1.0, max(0.0, fraction)), 2)


VLM = Threshold(points=50, low=0.00, high=0.70)
VLM_EXTRA = Threshold(points=5, low=0.80, high=0.85, extra_credit=True)
CLIP = Threshold(points=50, low=0.20, high=0.70)
CLIP_EXTRA = Threshold(points=5, low=0.80, high=0.85, extra_credit=True)
FUSION = Threshold(points=25, low=0.50, high=0.95)
CILP = Threshold(points=25, low=0.50, high=0.95)
SIMCLR = Threshold(points=25, low=0.33, high=0.90)  # linear-probe accuracy, 3 classes (chance 33%)
# Robot sensor fusion, on a held-out split of unseen objects and an unseen operator. Calibrated
# from the reference (homework/checkpoints/robot) on the public seed's full set and on the kit's
# test split (seed 1703): all five sensors, material 95.1% / 96.1%, outcome 86.4% / 87.0%; its best
# single sensor (the other four masked) 72.4% material and 70.0% outcome (audio), chance 20% and
# 33%. `high` sits 2 points below the reference (3 for outcome, the noisier task), `low` at the
# best single sensor: credit only for doing better than one sensor alone. With one sensor missing
# the bar is the best single sensor itself (less 2 points), from chance; the reference's worst
# (without camera1, 86.2%; without EMG, the only lift sensor, 72.0%) clears it.
ROBOT_MATERIAL = Threshold(points=10, low=0.72, high=0.93)
ROBOT_OUTCOME = Threshold(points=10, low=0.70, high=0.84)
ROBOT_MISSING_MATERIAL = Threshold(points=5, low=0.20, high=0.70)  # the worst of the five with-one-missing
ROBOT_MISSING_OUTCOME = Threshold(points=5, low=0.33, high=0.68)
ROBOT_FAULTS = Threshold(points=5, low=0.50, high=0.95)  # AUROC against normal episodes, chance 0.5; reference 1.00
ROBOT_COLLISIONS = Threshold(points=5, low=0.50, high=0.90)  # reference 0.99
ROBOT_SWAPS = Threshold(points=5, low=0.50, high=0.80)  # reference 0.87
ROBOT_RETRIEVAL = Threshold(points=5, low=0.00, high=0.90)  # recall@1 among 1,000, chance 0.001; reference 0.995

# ----------------------------------------------------------------------------------------------
# Limits of one child process (one assignment of one submission)
# ----------------------------------------------------------------------------------------------

# Wall-clock seconds to import the submission, load its model and answer everything. The
# reference takes about a sixth of this on a busy 2-core CPU (see the README's Grading section).
TIMEOUT_S = {"vlm": 300, "clip": 300, "fusion": 120, "cilp": 120, "simclr": 180, "robot": 300}
# Address space (RLIMIT_AS). torch maps far more than it touches: a child that imports it maps
# about 3 GB, and the reference VLM child peaks near 4 GB of address space.
MEMORY_MB = 8192
FILE_SIZE_MB = 512  # largest file a child may write (its log included)
THREADS = 1  # torch threads per child (`--threads`); the grader runs one child at a time
TASKS = 256  # processes and threads a child may add (RLIMIT_NPROC, and pids.max of its cgroup)
SCRATCH_MB = 1024  # the child's own folder in namespace mode: a tmpfs of this size (its homework/ copy included)
SHM_MB = 256  # its /dev/shm in namespace mode
ANSWERS_MAX_MB = 64  # the parent refuses a larger answers.npy without reading it
ANSWER_MAX_BYTES = 2500  # one answer in answers.json (200 characters, JSON-escaped): the file is refused past n times this
STATUS_MAX_KB = 64  # the child's status.json
CHILD_TEXT_CHARS = 300  # the most of a child's own words (an error message) a report quotes
# The command line's ceilings: larger values are typing mistakes, and some overflow the system's limits.
MAX_TIMEOUT_S = 24 * 3600
MAX_MEMORY_MB = 4 * 2**20  # 4 TB
MAX_THREADS = 256
MAX_WORKERS = 64

# ----------------------------------------------------------------------------------------------
# Submissions
# ----------------------------------------------------------------------------------------------

SIZE_LIMIT_MB = 50  # a zip (or homework/ folder) larger than this is refused
# Each assignment's checkpoint limit is homework.checkpoint.LIMITS: the submission's own code checks
# it when it saves and loads, and the grader cannot be imported there.
TOP_FOLDER = "homework"  # a zip holds this one folder and nothing beside it
MAX_ENTRIES = 2000  # files and folders in a zip
MAX_UNPACKED_MB = 150  # total size of a zip's files once unpacked
MAX_RATIO = 100  # largest unpacked / packed size of a zip, and of any entry over 1 MB
MAX_NAME_BYTES = 255  # one file or folder name in a zip (the usual NAME_MAX)
MAX_PATH_BYTES = 1024  # a whole path in a zip, homework/ included
COMPILED_SUFFIXES = (".pyc", ".pyo")  # bytecode in a zip is dropped: only the .py a reader sees runs
NATIVE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")  # a zip holding native code is refused

# ----------------------------------------------------------------------------------------------
# Held-out data
# ----------------------------------------------------------------------------------------------

# Public, for self-checks; a course grades with its own private --seed (or GRADER_SEED).
DEFAULT_SEED = 20250
SEED_ENV = "GRADER_SEED"


@dataclass(frozen=True)
class HeldoutSizes:
    kart_frames: int  # race moments of 10 views each, for the VLM and CLIP sets
    vlm_questions: int  # questions drawn from the balanced question-answer pairs
    clip_sets: int  # multiple-choice caption sets (one per view at most)
    shapes_per_class: int  # cubes, and as many spheres
    balls_train: int  # videos the grader's linear probe is fit on
    balls_test: int  # videos it is scored on
    robot_episodes: int  # grasping episodes scored on both tasks, and the retrieval database
    robot_queries: int  # of them, re-rendered with new noise: the retrieval queries
    robot_anomalies: int  # episodes of each kind: normal, fault, collision, swap


HELDOUT_SIZES = {
    # what grades count: about 3 minutes for the reference on a 2-core CPU, generation included
    "full": HeldoutSizes(kart_frames=60, vlm_questions=600, clip_sets=400, shapes_per_class=500,
                         balls_train=150, balls_test=150, robot_episodes=1000, robot_queries=200,
                         robot_anomalies=100),
    # a faster self-check with noisier scores
    "quick": HeldoutSizes(kart_frames=20, vlm_questions=200, clip_sets=120, shapes_per_class=100,
                          balls_train=90, balls_test=90, robot_episodes=300, robot_queries=100, robot_anomalies=50),
    # the kit's own tests: seconds, and scores that mean little
    "tiny": HeldoutSizes(kart_frames=3, vlm_questions=30, clip_sets=20, shapes_per_class=20,
                         balls_train=12, balls_test=12, robot_episodes=150, robot_queries=8, robot_anomalies=6),
}
