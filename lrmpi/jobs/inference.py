"""Running layered inference on every rank: samples sharded over the ranks (data
parallel), per-resolution outputs gathered to rank 0 and checkpointed there.

Worked example: `mpiexec -n 3`, 597 test digits. Rank 0 reads the model and the
data and scatters blocks of 199 samples (partition.counts_displs); every rank
runs LayeredInference on its block, in lockstep over the resolutions. After
resolution r rank 0 gathers scores, decisions, `refined` flags, bounds and the
exact engine state, writes /resolutions/00r (kind "infer"), and tells every
rank whether to go on (deadline, signals). Frozen samples cost nothing on the
rank that holds them; when the still-uncertain samples gather on a few ranks
(one holds more than REBALANCE times the mean), rank 0 re-shards: every rank
gets an equal share of the active samples, with their exact engine state.
"""
import hashlib
import os
import socket
import sys
import time

import numpy as np

from lrmpi._version import __version__
from lrmpi.errors import CheckpointError, InputError
from lrmpi.jobs import inputs
from lrmpi.jobs.checkpoint import Checkpoint, CheckpointWriter
from lrmpi.jobs.deadline import Deadline, StopSignals
from lrmpi.log import logger
from lrmpi.nn.infer import LayeredInference
from lrmpi.nn.onnx_import import load_model
from lrmpi.parallel import faults
from lrmpi.parallel.comm import abort, get_comm, rank_size
from lrmpi.parallel.partition import counts_displs
from lrmpi.parallel.protocol import Tag
from lrmpi.parallel.root import (
    HANG_FACTOR,
    HANG_FIRST_S,
    HANG_MIN_S,
    Backoff,
    Outcome,
    WorkerTimeout,
)

MATCHED = ("bits", "planes", "adaptive", "gray_lo", "gray_hi", "margin", "n_samples",
           "fingerprint")


class _Comm:
    """The few collectives used here, also for one process without MPI."""

    def __init__(self, comm):
        self.comm = comm
        self.rank, self.size = rank_size(comm)

    def bcast(self, obj):
        return obj if self.comm is None else self.comm.bcast(obj, root=0)

    def gather(self, obj):
        return [obj] if self.comm is None else self.comm.gather(obj, root=0)

    def scatter(self, objs):
        return objs[0] if self.comm is None else self.comm.scatter(objs, root=0)

    def gather_watched(self, obj, limit, hosts):
        """gather() whose root polls (no spinning) and gives up on a silent rank:
        WorkerTimeout naming it once `limit` seconds have passed."""
        if self.comm is None or self.size == 1:
            return [obj]
        if self.rank != 0:
            self.comm.send(obj, dest=0, tag=Tag.PART)
            return None
        parts, t0, backoff = {0: obj}, time.perf_counter(), Backoff()
        while len(parts) < self.size:
            got = False
            for w in range(1, self.size):
                if w not in parts and self.comm.iprobe(source=w, tag=Tag.PART):
                    parts[w] = self.comm.recv(source=w, tag=Tag.PART)
                    got = True
            waited = time.perf_counter() - t0
            if len(parts) < self.size and waited > limit:
                silent = ", ".join(f"worker {w} of {self.size} on {hosts.get(w, '?')}"
                                   for w in range(1, self.size) if w not in parts)
                raise WorkerTimeout(f"{silent} did not answer for {waited:.1f} s "
                                    f"(limit {limit:.1f} s)")
            backoff.reset() if got else backoff.sleep()
        return [parts[w] for w in range(self.size)]


def fingerprint(model, X):
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(X, np.float64).tobytes())
    for layer in model.layers:
        h.update(repr(type(layer).__name__).encode())
        for v in vars(layer).values():
            h.update(np.ascontiguousarray(v).tobytes() if isinstance(v, np.ndarray)
                     else repr(v).encode())
    return h.hexdigest()


REBALANCE = 1.25  # re-shard when a rank holds this many times the mean active samples


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
    out = np.empty((n,) + values[0].shape[1:], values[0].dtype)
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
    if size < 2 or sum(counts) < 2 * size or max(counts) <= REBALANCE * mean:
        return None
    act, frozen = np.flatnonzero(active), np.flatnonzero(~active)
    a_blocks = [act[b] for b in _blocks(len(act), size)]
    f_blocks = [frozen[b] for b in _blocks(len(frozen), size)]
    return [np.sort(np.concatenate([x, y])) for x, y in zip(a_blocks, f_blocks)]


def run_infer(model, data, out=None, *, bits=7, planes=4, adaptive=True, gray=(0.3, 0.6),
              margin=0.1, deadline=None, time_margin=None, resume=False, fsync=True,
              worker_timeout=None, comm=None, on_resolution=None):
    """Layered inference of `model` (.onnx/.npz path or Model) on `data` (.npy /
    FILE.h5:/dataset or array) over every rank; Outcome on rank 0, None elsewhere."""
    start = time.perf_counter()
    c = _Comm(get_comm(comm))
    with StopSignals() as signals:
        setup = None
        if c.rank == 0:
            try:
                setup = _root_setup(model, data, out, bits, planes, adaptive, gray, margin,
                                    deadline, time_margin, resume, fsync, c.size)
            except BaseException:
                c.bcast(None)  # release the other ranks
                raise
        job = c.bcast(None if setup is None else setup["job"])
        if job is None:
            return None
        owners = _blocks(setup["X"].shape[0], c.size) if c.rank == 0 else None
        options = dict(bits=bits, planes=planes, adaptive=adaptive, gray=gray, margin=margin)
        engine = _shard(c, job, setup, owners, setup["state"] if c.rank == 0 else None,
                        job["resumed"], options)
        hosts = dict(enumerate(c.gather(socket.gethostname()) or []))
        try:
            return _loop(c, engine, job, setup, owners, options, signals, start,
                         on_resolution, hosts, worker_timeout)
        except WorkerTimeout as exc:  # a rank hung: mark the file, end every rank
            if setup["writer"] is not None:
                setup["writer"].set_status("failed", f"WorkerTimeout: {exc}")
            sys.stderr.write(f"lrmpi: error: {exc}\n")
            sys.stderr.flush()
            abort(1)
            raise


def _shard(c, job, setup, owners, state, with_state, options):
    """Scatter each rank its samples (and their engine state): its new engine."""
    X = c.scatter([setup["X"][rows] for rows in owners] if c.rank == 0 else None)
    engine = LayeredInference(job["model"], X, **options)
    if with_state:
        part = c.scatter([_take_state(state, rows) for rows in owners] if c.rank == 0
                         else None)
        engine.load_state(part)
    return engine


def _root_setup(model, data, out, bits, planes, adaptive, gray, margin, deadline,
                time_margin, resume, fsync, size):
    mdl = load_model(str(model)) if isinstance(model, (str, os.PathLike)) else model.validate()
    X = inputs.load(data, "data") if isinstance(data, (str, os.PathLike)) else np.asarray(data)
    LayeredInference(mdl, X[:1] if len(X) else X, bits=bits, planes=planes, gray=gray,
                     margin=margin)  # validates shapes and options on one sample
    if len(X) < 1:
        raise InputError("data: no samples")
    if not np.all(np.isfinite(X)):
        raise InputError("data: contains NaN or Inf")
    dl = Deadline.resolve(deadline, time_margin)
    attrs = {"bits": bits, "planes": planes, "order": "lshape", "adaptive": int(adaptive),
             "gray_lo": float(gray[0]), "gray_hi": float(gray[1]), "margin": float(margin),
             "n_samples": int(X.shape[0]), "planned": planes, "ranks": size,
             "model": str(model) if isinstance(model, (str, os.PathLike)) else "<Model>",
             "lrmpi_version": __version__, "fingerprint": fingerprint(mdl, X)}
    ckpt, state, done = None, None, 0
    if resume and out and os.path.exists(out):
        ckpt = _resumable(out, attrs)
        done = int(ckpt.attrs["completed"])
        if done:
            state = _load_state(ckpt, done)
    writer = CheckpointWriter(out, "infer", attrs, fsync=fsync, resume=ckpt) if out else None
    job = {"model": mdl, "resumed": state is not None,
           "complete": ckpt is not None and ckpt.attrs.get("status") == "complete"}
    return {"job": job, "X": X, "writer": writer, "deadline": dl, "state": state,
            "done": done, "meta": [ckpt.resolution(i, datasets=False)[0]
                                   for i in range(1, done + 1)] if ckpt else []}


def _resumable(out, attrs):
    ckpt = Checkpoint(out, safe=True)
    if ckpt.attrs.get("kind") != "infer":
        raise CheckpointError(f"{out} is a {ckpt.attrs.get('kind')!r} checkpoint, not infer")
    for key in MATCHED:
        if ckpt.attrs.get(key) != attrs[key]:
            what = "the model or data differ" if key == "fingerprint" else \
                f"it was made with {key}={ckpt.attrs.get(key)}, this run has {key}={attrs[key]}"
            raise CheckpointError(f"cannot resume from {out}: {what}")
    return ckpt


def _load_state(ckpt, index):
    raw = ckpt.state(index)
    nz = sum(1 for k in raw if k.startswith("Z"))
    return {"Z": [raw[f"Z{i}"] for i in range(nz)], "scores": raw["scores"],
            "predicted": raw["predicted"], "bound": raw["bound"],
            "active": raw["active"].astype(bool), "next": index + 1}


def _loop(c, engine, job, setup, owners, options, signals, start, on_resolution, hosts,
          worker_timeout):
    root = c.rank == 0
    writer = setup["writer"] if root else None
    dl = setup["deadline"] if root else None
    meta_all = list(setup["meta"]) if root else []
    offset = float(meta_all[-1]["elapsed_s"]) if meta_all else 0.0
    t0 = time.perf_counter() if meta_all else start
    status, reason = "complete", ""
    n = setup["X"].shape[0] if root else 0
    durations = []
    while engine.state["next"] <= engine.planes:
        t_res = time.perf_counter()
        faults.on_task(c.rank)
        res = next(iter(engine))  # one resolution
        limit = worker_timeout or (max(HANG_MIN_S, HANG_FACTOR * max(durations))
                                   if durations else HANG_FIRST_S)
        parts = c.gather_watched((res.refined, res.work, res.work_all, engine.state), limit,
                                 hosts)
        durations.append(time.perf_counter() - t_res)
        stop, plan = None, None
        if root:
            state = _join([p[3] for p in parts], owners, n)
            scores, pred, bound = state["scores"], state["predicted"], state["bound"]
            refined = _place([p[0] for p in parts], owners, n)
            work, work_all = sum(p[1] for p in parts), sum(p[2] for p in parts)
            meta = {"index": res.index, "elapsed_s": offset + time.perf_counter() - t0,
                    "pairs": res.index ** 2, "bound_abs": float(bound.max()),
                    "bound_rel": float(bound.max() / max(scores.max(), 1e-300)),
                    "refined_count": int(refined.sum()), "work": work, "work_all": work_all}
            meta_all.append(meta)
            if on_resolution is not None:
                on_resolution(meta, scores, pred, refined)
            if writer is not None:
                flat = {f"Z{i}": z for i, z in enumerate(state["Z"])}
                flat.update({k: state[k] for k in ("scores", "predicted", "bound")})
                flat["active"] = state["active"].astype(np.uint8)
                # a copy: the writer thread reads it while this one may still add to
                # meta (rebalanced), which made the writer fail now and then
                writer.add_resolution(res.index, {"scores": scores, "predicted": pred,
                                                  "refined": refined, "bound": bound},
                                      dict(meta), state=flat,
                                      done=lambda m=dict(meta): _report(m, res))
            else:
                _report(meta, res)
            if signals.received:
                stop = f"received {signals.received}"
            elif dl is not None and dl.expired() and res.index < res.planned:
                stop = "deadline reached"
            elif res.index < res.planned:
                plan = rebalance_plan(state["active"], owners, c.size)
        stop, plan = c.bcast((stop, plan))
        if stop:
            status, reason = "deadline", stop
            break
        if plan is not None:  # the uncertain samples gathered on a few ranks: spread them
            if root:
                logger.debug("lrmpi: rebalancing %d active samples", int(state["active"].sum()))
                meta["rebalanced"] = 1
                owners = plan
            engine = _shard(c, job, setup, owners, state if root else None, True, options)
    if not root:
        return None
    if writer is not None:
        writer.set_status(status, reason)
        writer.close()
    if status == "deadline":
        logger.warning("lrmpi: stopping (%s) with resolution %d/%d on disk", reason,
                       len(meta_all), engine.planes)
    return Outcome(status, len(meta_all), engine.planes, reason, meta_all)


def _report(meta, res):
    logger.info("lrmpi: resolution %d/%d  %.3f s  refined %d  work %.3g/%.3g  bound_abs %.3e",
                meta["index"], res.planned, meta["elapsed_s"], meta["refined_count"],
                meta["work"], meta["work_all"], meta["bound_abs"])
