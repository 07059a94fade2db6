"""A layered inference job on every rank: samples sharded over the ranks (data
parallel), per-resolution outputs gathered to rank 0 and checkpointed there.

Worked example: `mpiexec -n 3`, 597 test digits. Rank 0 reads the model and the
data and scatters blocks of 199 samples (partition.counts_displs); every rank
runs the engine on its block, in lockstep over the resolutions. After resolution
r rank 0 gathers scores, decisions, `refined` flags, bounds and the exact engine
state, writes /resolutions/00r (kind "infer"), and tells every rank whether to go
on (deadline, signals). Frozen samples cost nothing on the rank that holds them;
when the still-uncertain samples gather on a few ranks (one holds more than
REBALANCE times the mean), rank 0 re-shards: every rank gets an equal share of
the active samples, with their exact engine state. A rank with no samples (fewer
samples than ranks) takes part in every collective with an empty share.
"""
import os
import socket
import sys
import time

import numpy as np

from lrmpi import config
from lrmpi._version import __version__
from lrmpi.errors import InputError, WorkerTimeout
from lrmpi.jobs import inputs
from lrmpi.jobs.job import JobOptions, file_inputs, fingerprint, run_job
from lrmpi.log import logger
from lrmpi.nn.infer import LayeredInference
from lrmpi.nn.onnx_import import load_model
from lrmpi.parallel import faults
from lrmpi.parallel.collective import Group
from lrmpi.parallel.comm import get_comm
from lrmpi.parallel.partition import counts_displs
from lrmpi.parallel.protocol import Part
from lrmpi.parallel.scheduler import hang_limit

ENGINE = ("bits", "planes", "adaptive", "gray", "class_margin")  # the engine's options


class InferJob:
    """The infer kind of job (see jobs.job for the protocol)."""

    name = "infer"
    matched = ("bits", "planes", "adaptive", "gray_lo", "gray_hi", "class_margin", "n_samples",
               "fingerprint")

    def __init__(self, model, data, options, on_resolution=None, worker_timeout=None,
                 comm=None):
        self.model_spec, self.data = model, data
        self.options = {"bits": 7, "planes": 4, "adaptive": True, "gray": (0.3, 0.6),
                        "class_margin": 0.1, **options}
        self.on_resolution, self.worker_timeout = on_resolution, worker_timeout
        self.group = Group(comm)
        self.inputs = file_inputs(model, data)
        self.meta, self.start, self.offset = [], time.perf_counter(), 0.0

    # --- rank 0, before the job ---
    def prepare(self):
        o = self.options
        m = self.model_spec
        self.model = load_model(str(m)) if isinstance(m, (str, os.PathLike)) else m.validate()
        X = inputs.load(self.data, "data") if isinstance(self.data, (str, os.PathLike)) \
            else np.asarray(self.data)
        if X.ndim < 2 or len(X) < 1:
            raise InputError(f"data: expected one or more samples, got shape {X.shape}")
        # validates shapes and options on one sample
        LayeredInference(self.model, X[:1], **_engine(o))
        if not np.all(np.isfinite(X)):
            raise InputError("data: contains NaN or Inf")
        self.X = X
        return {"bits": o["bits"], "planes": o["planes"], "order": "lshape",
                "adaptive": int(o["adaptive"]), "gray_lo": float(o["gray"][0]),
                "gray_hi": float(o["gray"][1]), "class_margin": float(o["class_margin"]),
                "n_samples": int(X.shape[0]), "planned": o["planes"], "ranks": self.group.size,
                "model": str(m) if isinstance(m, (str, os.PathLike)) else "<Model>",
                "lrmpi_version": __version__,
                "fingerprint": lambda: fingerprint(X, *_model_parts(self.model))}

    @property
    def planned(self):
        return self.options["planes"]

    def elapsed(self):
        return self.offset + time.perf_counter() - self.start

    def release(self, comm):
        self.group.bcast(None)

    # --- every rank ---
    def serve(self, comm):
        job = self.group.bcast(None)
        if job is not None:
            self._run(job)

    def execute(self, control, writer, ckpt, start):
        self.start = start
        state = None
        if ckpt is not None:
            done = ckpt.completed
            state = ckpt.state(done)
            state["next"] = done + 1
            self.meta = [ckpt.resolution(i, datasets=False)[0] for i in range(1, done + 1)]
            self.offset, self.start = float(self.meta[-1]["elapsed_s"]), time.perf_counter()
        self.group.bcast({"model": self.model, "resumed": state is not None})
        try:
            return self._run({"model": self.model, "resumed": state is not None}, control,
                             writer, state)
        except WorkerTimeout as exc:  # a rank hung: mark the file, end every rank
            control.mark("failed", f"WorkerTimeout: {exc}")
            sys.stderr.write(f"lrmpi: error: {exc}\n")
            sys.stderr.flush()
            self.group.abort(1)
            raise

    def _run(self, job, control=None, writer=None, state=None):
        g = self.group
        root = g.rank == 0
        n = len(self.X) if root else 0
        owners = _blocks(n, g.size) if root else None
        engine = self._shard(job, owners, state, job["resumed"])
        hosts = dict(enumerate(g.gather(socket.gethostname()) or []))
        status, reason, durations = "complete", "", []
        while engine.state["next"] <= engine.planes:
            t_res = time.perf_counter()
            faults.on_task(g.rank)
            res = next(iter(engine))  # one resolution
            parts = g.gather_watched(Part(res.refined, res.work, res.work_all, engine.state),
                                     hang_limit(durations, self.worker_timeout), hosts)
            durations.append(time.perf_counter() - t_res)
            stop = plan = None
            if root:
                full = _join([p.state for p in parts], owners, n)
                self._record(res, full, parts, owners, n, writer)
                if res.index < res.planned:
                    stop = control.stop_reason()
                    if not stop:
                        plan = rebalance_plan(full["active"], owners, g.size)
            stop, plan = g.bcast((stop, plan))
            if stop:
                status, reason = "deadline", stop
                break
            if plan is not None:  # the uncertain samples gathered on a few ranks: spread them
                if root:
                    logger.debug("lrmpi: rebalancing %d active samples",
                                 int(full["active"].sum()))
                    self.meta[-1]["rebalanced"] = 1
                    owners = plan
                engine = self._shard(job, owners, full if root else None, True)
        if root:
            control.mark(status, reason)
            return status, reason
        return None

    def _record(self, res, state, parts, owners, n, writer):
        """Rank 0: one finished resolution into the log, the callback and the checkpoint."""
        scores, pred, bound = state["scores"], state["predicted"], state["bound"]
        refined = _place([p.refined for p in parts], owners, n)
        meta = {"index": res.index, "elapsed_s": self.elapsed(), "pairs": res.index ** 2,
                "bound_abs": float(bound.max()),
                "bound_rel": float(bound.max() / max(scores.max(), 1e-300)),
                "refined_count": int(refined.sum()), "work": sum(p.work for p in parts),
                "work_all": sum(p.work_all for p in parts)}
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, scores, pred, refined)
        if writer is not None:
            writer.add_resolution(res.index, {"scores": scores, "predicted": pred,
                                              "refined": refined, "bound": bound},
                                  dict(meta), state=_persisted(state),
                                  done=lambda durable, m=meta: _report(m, res, durable))
        else:
            _report(meta, res)

    def _shard(self, job, owners, state, with_state):
        """Scatter each rank its samples (and their engine state): its new engine."""
        g = self.group
        X = g.scatter([self.X[rows] for rows in owners] if g.rank == 0 else None)
        engine = LayeredInference(job["model"], X, **_engine(self.options))
        if with_state:
            engine.load_state(g.scatter([_take_state(state, rows) for rows in owners]
                                        if g.rank == 0 else None))
        return engine


def _engine(o):
    return {"bits": o["bits"], "planes": o["planes"], "adaptive": o["adaptive"],
            "gray": o["gray"], "margin": o["class_margin"]}


def _model_parts(model):
    for layer in model.layers:
        yield type(layer).__name__
        for v in vars(layer).values():
            yield v


def _persisted(state):
    return {k: state[k] for k in ("Z", "scores", "predicted", "bound", "active")}


def _blocks(n, size):
    counts, displs = counts_displs(n, size)
    return [np.arange(d, d + c) for c, d in zip(counts, displs)]


def _take_state(state, rows):
    part = {k: state[k][rows].copy() for k in ("scores", "predicted", "bound", "active")}
    part["Z"] = [z[rows].copy() for z in state["Z"]]
    part["next"] = state["next"]
    return part


def _place(values, owners, n):
    """Per-rank arrays back into global sample order (owners: global rows per rank)."""
    shapes = [v.shape[1:] for v in values if len(v)] or [values[0].shape[1:]]
    out = np.empty((n,) + shapes[0], values[0].dtype)
    for rows, v in zip(owners, values):
        out[rows] = v
    return out


def _join(parts, owners, n):
    """Per-rank engine states as one state in global sample order."""
    st = {k: _place([p[k] for p in parts], owners, n)
          for k in ("scores", "predicted", "bound", "active")}
    st["Z"] = [_place([p["Z"][i] for p in parts], owners, n) for i in range(len(parts[0]["Z"]))]
    st["next"] = parts[0]["next"]
    return st


def rebalance_plan(active, owners, size):
    """New global rows per rank spreading the active samples evenly, or None if the
    current shards are balanced enough (frozen samples cost nothing, so only the
    active ones count)."""
    counts = [int(active[rows].sum()) for rows in owners]
    mean = sum(counts) / size
    if size < 2 or sum(counts) < 2 * size or max(counts) <= config.get().rebalance * mean:
        return None
    act, frozen = np.flatnonzero(active), np.flatnonzero(~active)
    a_blocks = [act[b] for b in _blocks(len(act), size)]
    f_blocks = [frozen[b] for b in _blocks(len(frozen), size)]
    return [np.sort(np.concatenate([x, y])) for x, y in zip(a_blocks, f_blocks)]


def _report(meta, res, durable=None):
    on_disk = "" if durable is None else f"  durable {durable:.3f} s"
    logger.info("lrmpi: resolution %d/%d  computed %.3f s%s  refined %d  work %.3g/%.3g  "
                "bound_abs %.3e", meta["index"], res.planned, meta["elapsed_s"], on_disk,
                meta["refined_count"], meta["work"], meta["work_all"], meta["bound_abs"])


def run_infer(model, data, out=None, *, comm=None, on_resolution=None, **options):
    """Layered inference of `model` (.onnx/.npz path or Model) on `data` (.npy /
    FILE.h5:/dataset or array) over every rank; Outcome on rank 0, None elsewhere.

    Options: the engine's (bits, planes, adaptive, gray, class_margin) and the
    job's (see jobs.job.JobOptions)."""
    opts, engine = JobOptions.split(options)
    unknown = sorted(set(engine) - set(ENGINE))
    if unknown:
        raise TypeError(f"run_infer: unknown option(s) {', '.join(unknown)}; valid: "
                        + ", ".join(ENGINE + tuple(JobOptions.__dataclass_fields__)))
    comm = get_comm(comm)
    job = InferJob(model, data, engine, on_resolution, opts.worker_timeout, comm)
    return run_job(job, out, opts, comm)
