"""BackSplit's shared vocabulary: the allowed values and the defaults that several layers must agree on.

Standard library only, importable on Python 3.9 (Slicer 5.8): the engine, the CLI, the server, the
standard-library client, the Slicer panel and the browser app all import it, and each derives its own form
from it (typer options, pydantic fields, checks with a clear error) instead of spelling the values again.

Each set of values is a ``(str, Enum)``: a member *is* its string (``TrainingMode.binary == "binary"``,
``json.dumps`` writes ``"binary"``, ``str()`` and f-strings give the value on every Python version), and the
tuples of plain values beside each enum (``TRAINING_MODES`` ...) are for messages and membership checks
(``"x" in SomeEnum`` raises on Python < 3.12).

Defaults shared between server, client and panel live here too. In particular ``DEFAULT_PORT`` (8765) is
the one port ``backsplit serve``, the client and the Slicer panel (``DEFAULT_SERVER_URL``) use.
"""

from __future__ import annotations

from enum import Enum


class Vocabulary(str, Enum):
    """A string enum whose members print as their value (``str``, ``format`` and f-strings alike)."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


class TrainingMode(Vocabulary):
    """How the background is trained: split into auxiliary classes (BackSplit) or one class (binary)."""

    backsplit = "backsplit"
    binary = "binary"


class PartialLabelMode(Vocabulary):
    """Cases missing some auxiliary labels: a marginal loss over the unlabelled classes, or naive
    (unlabelled voxels count as background)."""

    marginal = "marginal"
    naive = "naive"


class Architecture(Vocabulary):
    """Network architectures the engine builds (MONAI networks)."""

    unet = "unet"
    dynunet = "dynunet"
    segresnet = "segresnet"


class JobKind(Vocabulary):
    """Server training jobs: a new model from the cases, or a fine-tune of an existing model."""

    train = "train"
    finetune = "finetune"


class JobState(Vocabulary):
    """A server job's life: queued -> running -> one of the terminal states."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class AuxiliarySource(Vocabulary):
    """Which auxiliary labels a benchmark's BackSplit arm trains with (``backsplit bench quality
    --auxiliary-source``): the dataset's own organs, the automatic CT tissue classes
    (``auxiliary.ct_tissue_classes``) or the dataset's organs degraded the way an organ segmenter errs
    (``auxiliary.degrade_organs``). The lesion label is the ground truth's in all three."""

    ground_truth = "ground-truth"
    ct_tissues = "ct-tissues"
    degraded = "degraded"


TRAINING_MODES = TrainingMode.values()
AUXILIARY_SOURCES = AuxiliarySource.values()
PARTIAL_LABEL_MODES = PartialLabelMode.values()
ARCHITECTURES = Architecture.values()
JOB_KINDS = JobKind.values()
JOB_STATES = JobState.values()
#: States a job never leaves (plain strings, so ``job["state"] in TERMINAL_STATES`` works on decoded JSON).
TERMINAL_STATES = (JobState.succeeded.value, JobState.failed.value, JobState.cancelled.value)
#: States of a job that still holds its cases and base model.
ACTIVE_STATES = (JobState.queued.value, JobState.running.value)

# ---------------------------------------------------------------------- defaults shared across layers
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SERVER_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
#: Environment variables read by the client, the CLI and ``backsplit serve`` (the token never goes on argv).
TOKEN_ENV = "BACKSPLIT_TOKEN"
SERVER_ENV = "BACKSPLIT_SERVER"
#: The header every BackSplit client sends and the server requires on a state-changing request made without a
#: token: a browser cannot add it to a cross-site request without a CORS preflight, which the server never grants.
CLIENT_HEADER = "X-BackSplit-Client"
#: The job database's URL for ``backsplit serve`` / ``backsplit worker`` (a password must not go on argv).
DATABASE_ENV = "BACKSPLIT_DATABASE"
#: Seconds a running server job stays its worker's without a heartbeat (renewed every quarter of it); after
#: that the job goes back to the queue and resumes from its last checkpoint on any worker.
DEFAULT_LEASE_S = 60.0
#: Largest request body ``backsplit serve`` accepts by default (size syntax of ``--max-upload``).
DEFAULT_MAX_UPLOAD = "1G"
DEFAULT_TRAINING_MODE = TrainingMode.backsplit
DEFAULT_PARTIAL_LABEL_MODE = PartialLabelMode.marginal
DEFAULT_ARCHITECTURE = Architecture.unet
#: Training iterations of a new model (CLI ``train`` and a server ``train`` job).
DEFAULT_ITERATIONS = 500
#: Weight of the auxiliary part of the BackSplit loss (``losses.BackSplitLoss``): the loss is the binary loss
#: of the collapsed lesion probability plus this weight times the auxiliary classes' own terms (conditional
#: cross-entropy given "not lesion" and their mean Dice). 1 is the plain split loss, whose lesion head stalled
#: for hundreds of iterations on some seeds; 0.5 and 0.25 started on every seed of both phantom families, and
#: 0.25 was as good or better on both (issue 13, docs/RESULTS.md, "Ablations"). Since issue 20 the terms switch on
#: (ramping to this weight) only once the lesion channel has started (``auxiliary_share.AUXILIARY_START_DICE``).
#: Binary training does not read it.
DEFAULT_AUXILIARY_WEIGHT = 0.25
#: The from-scratch recipe's batch size, AdamW peak learning rate and seeded validation share
#: (``training.TrainConfig``, CLI ``train``).
DEFAULT_BATCH_SIZE = 2
DEFAULT_LEARNING_RATE = 3e-3
DEFAULT_VAL_FRACTION = 0.2
#: The head's initial target probability for a model trained from scratch, binary and BackSplit alike
#: (``networks.init_head_prior``, the focal-loss initialisation): "uniform" is 1/K for a dataset with K classes
#: (background, target and auxiliary classes), the probability a BackSplit head that knows nothing gives the
#: target, so a binary model of the same data starts from the same collapsed lesion probability instead of
#: PyTorch's 1/2 (which began binary models with every voxel a lesion: many false positives). A number sets
#: the prior itself; ``None`` keeps PyTorch's initialisation. 0.01 stalled the BackSplit lesion head on some
#: seeds (issue 13, docs/RESULTS.md, "The final recipe: one initialisation for both heads").
UNIFORM_HEAD_PRIOR = "uniform"
DEFAULT_HEAD_PRIOR = UNIFORM_HEAD_PRIOR
#: What every face says about a model whose validation never predicted a lesion voxel (``lesion_watch``): the
#: CLI's last line, the server job's note (the job succeeds, its model is kept but not promoted), the panel.
LESION_NEVER_PREDICTED = "the lesion was never predicted"
JOB_NOT_PROMOTED_NO_LESION = f"succeeded, not promoted: {LESION_NEVER_PREDICTED}"
#: What to do next when a prediction finds no lesion (the panel's status line and findings, the page).
NO_LESION_FOUND_HINT = ("look through the volume yourself: if there is a lesion, paint it on a few slices with "
                        "the Target role, Add case and Fine-tune (or try another model); if there is none, "
                        "the model agrees")
#: Iterations of the one fine-tune recipe (``training.FINETUNE_RECIPE``: CLI ``finetune``, server and panel).
DEFAULT_FINETUNE_ITERATIONS = 200


def default_iterations(kind: str) -> int:
    """The iterations a job of ``kind`` gets when its request names none: the same from every entry point."""
    return DEFAULT_FINETUNE_ITERATIONS if kind == JobKind.finetune else DEFAULT_ITERATIONS


#: Words clinicians use for the lesion in a segment's name: a segment so named defaults to the Target role
#: (the Slicer panel and the browser app). Whole words or word starts, case-insensitive ("Tumor 2",
#: "liver_lesion", "GGO"); short words ("met", "mass") match only as whole words.
LESION_WORDS = ("lesion", "tumor", "tumour", "mass", "nodule", "metastasis", "metastases", "met", "mets", "cyst",
                "ggo", "ground glass", "cancer", "carcinoma", "neoplasm", "target")

#: What the measurements say about painting auxiliary structures (docs/RESULTS.md, issues 13 and 20), said by
#: ``backsplit advise`` beside its ranking: no face claims a benefit the benchmarks have not shown.
AUXILIARY_EVIDENCE = ("Evidence: on BackSplit's own phantom families the auxiliary classes' benefit over binary "
                      "training has not been shown, with 32 training cases or with 4 (docs/RESULTS.md, issues 13 "
                      "and 20); label them as an experiment and compare with a binary model on your own held-out "
                      "cases.")


def could_be_hounsfield(minimum: float) -> bool:
    """Whether an image whose smallest value is ``minimum`` can be a CT in Hounsfield units: every body
    region has fat, and fat is negative (so a CT in HU always has negative values)."""
    return minimum < 0
