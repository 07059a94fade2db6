"""The interface every kind of job implements (jobs.matmul.MatmulJob,
jobs.inference.InferJob): what jobs.job.run_job asks of it, on which rank."""
from typing import Protocol


class JobKind(Protocol):
    """A kind of job, built on every rank with the communicator it runs on (`comm`:
    lrmpi's COMM_WORLD duplicate, or None for one process without MPI)."""

    name: str        # the checkpoint's `kind` attribute
    matched: tuple   # checkpoint attributes a resumed run must share with its checkpoint
    inputs: list     # the paths it reads (never a valid -o)

    def prepare(self) -> dict:
        """Rank 0, before the job: read the inputs; the checkpoint's attributes (a value
        may be a callable, computed when first needed)."""

    # optional: build(should_stop) -> None. Rank 0, after prepare() and once the job file
    # exists (phase "preparing"): the long preparation (a model's digit planes and
    # norms). It calls should_stop(what) at least once a second; should_stop raises
    # lrmpi.errors.Stopped when a signal or the deadline says stop (the job then ends
    # with status deadline, saying what it was doing).

    @property
    def planned(self) -> int:
        """Resolutions the job plans (after prepare)."""

    @property
    def meta(self) -> list:
        """Rank 0: the attributes of every finished resolution so far (resumed ones too)."""

    def elapsed(self) -> float:
        """Rank 0: the job's elapsed seconds (continuing a resumed job's clock)."""

    def release(self) -> None:
        """Rank 0 when there is no job (it failed before the job began, or the
        checkpoint is complete): let the other ranks, waiting in serve(), return."""

    def serve(self) -> None:
        """Ranks other than 0: serve the job (or return when released)."""

    def execute(self, control, writer, ckpt, start) -> tuple:
        """Rank 0: run the job with the other ranks until done or `control` says stop;
        (status, reason). `writer`: the checkpoint writer or None; `ckpt`: a checkpoint
        to resume or None; `start`: time.perf_counter() when the job began."""
