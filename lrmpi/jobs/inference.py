"""A layered inference job on every rank: run_infer.

Worked example: `mpiexec -n 3`, 8 192 samples, 4 planes. Rank 0 reads the model,
prepares it (weights as digit planes, operator norms for the bounds) and the
data, and hands both to every rank once. Each resolution is a round of a task
farm (parallel/farm.py): the still-active samples in chunks, each chunk to
whichever rank is free (rank 0 too when it has a core of its own); a chunk comes
back as logits and a bound per logit. Rank 0 records them, decides who stays
active (engine.py), writes the resolution and its exact state to the checkpoint,
and starts the next round with fewer samples: the dynamic assignment is the
rebalancing. Results never depend on the chunks or the ranks: every sample is
computed on its own, with exact integer products. Fewer samples than ranks is
fine: idle ranks take part in every step and write nothing.
"""
import os
import time

import numpy as np

from lrmpi import config, stages
from lrmpi._version import __version__
from lrmpi.errors import InputError, Stopped
from lrmpi.jobs import inputs
from lrmpi.jobs.job import Fingerprint, InputWatch, JobOptions, file_inputs, run_job
from lrmpi.log import logger
from lrmpi.nn.engine import LayeredInference, PreparedModel, as_samples, check_rule
from lrmpi.nn.loading import load_model, settle, unchanged  # the graph cache
from lrmpi.numerics import validate
from lrmpi.parallel import farm
from lrmpi.parallel.collective import Group
from lrmpi.parallel.comm import get_comm, hostname
from lrmpi.parallel.progress import log_resolution

ENGINE = ("bits", "planes", "rule", "gray", "class_margin")  # the engine's options
CHUNKS_PER_RANK = 4  # chunks of active samples per rank and round: load balance


class InferJob:
    """The infer kind of job (a jobs.kind.JobKind)."""

    name = "infer"
    matched = ("bits", "planes", "rule", "gray_lo", "gray_hi", "class_margin", "n_samples",
               "fingerprint")

    def __init__(self, model, data, options, on_resolution=None, worker_timeout=None,
                 comm=None, model_output=None):
        self.model_spec, self.data, self.model_output = model, data, model_output
        self.options = {"bits": 7, "planes": 4, "rule": "certified", "gray": (0.3, 0.6),
                        "class_margin": 0.1, **options}
        self.on_resolution, self.worker_timeout = on_resolution, worker_timeout
        self.comm, self.group = comm, Group(comm)
        self.inputs = file_inputs(model, data)
        self.meta, self.start, self.offset = [], time.perf_counter(), 0.0
        self.setup = {}  # wall seconds of the start-up steps (the first resolution's attrs)

    # --- rank 0, before the job ---
    def prepare(self):
        o = self.options
        m = self.model_spec
        t0 = time.perf_counter()
        graph = load_model(str(m), output=self.model_output) if isinstance(m, (str, os.PathLike)) \
            else _chosen(m.validate(), self.model_output)
        X = inputs.load(self.data, "data") \
            if isinstance(self.data, (str, os.PathLike)) else np.asarray(self.data)
        if X.ndim < 2 or len(X) < 1:
            raise InputError(f"data: expected one or more samples, got shape {X.shape}")
        validate.bits(o["bits"]), validate.planes(o["planes"])
        check_rule(o["rule"], o["gray"], o["class_margin"])
        self.graph, self.X = graph, as_samples(X, graph.input_shape)
        self.read_s = time.perf_counter() - t0
        return {"bits": o["bits"], "planes": o["planes"], "order": "lshape",
                "rule": o["rule"], "adaptive": int(o["rule"] != "none"),
                "gray_lo": float(o["gray"][0]), "gray_hi": float(o["gray"][1]),
                "class_margin": float(o["class_margin"]), "n_samples": int(len(self.X)),
                "outputs": int(graph.outputs), "planned": o["planes"],
                "ranks": self.group.size,
                "model": str(m) if isinstance(m, (str, os.PathLike)) else "<Graph>",
                "model_output": self.model_output or "",
                "lrmpi_version": __version__,
                "fingerprint": self._watched(Fingerprint(self.X, *_graph_parts(graph)))}

    def _watched(self, fp):
        self.watch = InputWatch(self.inputs, fp)
        return fp

    def build(self, should_stop):
        """The long preparation (weights as digit planes, operator norms), after the
        job file exists; `should_stop(what)` raises Stopped to end it."""
        o = self.options
        test_slow_preparation(should_stop)
        self.model = PreparedModel(self.graph, o["bits"], o["planes"], should_stop=should_stop)
        self.engine = LayeredInference(self.model, self.X, rule=o["rule"], gray=o["gray"],
                                       class_margin=o["class_margin"])
        if self.group.size > 1:  # its cache entry, written meanwhile: the ranks map it
            settle(self.graph, lambda: should_stop("preparing the model: keeping it in the "
                                                   "cache folder"))
        t = self.model.timings
        logger.info("lrmpi: model prepared at %.2f s: read %.2f s, weights %.2f s, "
                    "norms %.2f s", time.perf_counter() - self.start, self.read_s,
                    t["planes_s"], t["norms_s"])
        self.prepared = {"read_s": self.read_s, **t}  # the job file's (schema.PREPARED)

    @property
    def planned(self):
        return self.options["planes"]

    def elapsed(self):
        return self.offset + time.perf_counter() - self.start

    def release(self):
        self.group.meet()
        self.group.bcast(None)

    # --- the other ranks ---
    def serve(self):
        self.group.meet()
        model = self.group.bcast(None)
        if model is None:
            return
        X = self.group.bcast_array(None)
        self.group.gather(hostname())
        farm.serve(self.comm, lambda task, stopping: _evaluate(model, X, task, stopping))

    # --- rank 0 ---
    def execute(self, control, writer, ckpt, start):
        self.start = start
        eng = self.engine
        if ckpt is not None:
            done = ckpt.completed
            state = ckpt.state(done)
            state["next"] = done + 1
            eng.load_state(state)
            self.meta = [ckpt.resolution_summary(i) for i in range(1, done + 1)]
            self.offset, self.start = float(self.meta[-1]["elapsed_s"]), time.perf_counter()
        t = time.perf_counter()
        self.setup["prepare_s"] = t - start
        self.group.meet()
        self.group.bcast(self.model)
        self.group.bcast_array(self.X, self.data if isinstance(self.data, (str, os.PathLike))
                               else None)
        hosts = dict(enumerate(self.group.gather(hostname()) or []))
        self.setup["bcast_s"] = time.perf_counter() - t
        workers = farm.Farm(self.comm, lambda task, stopping: _evaluate(self.model, self.X, task,
                                                                          stopping),
                            hosts, self.worker_timeout)
        try:
            status, reason = self._loop(eng, workers, control, writer)
            control.mark(status, reason)  # the last write's failure surfaces here
        except BaseException as exc:
            try:
                control.mark("failed", f"{type(exc).__name__}: {exc}")
            except BaseException:  # the disk again: the job's own error is the one to say
                pass
            workers.fail(exc)
            raise
        workers.stop()
        return status, reason

    def _loop(self, eng, workers, control, writer):
        ranks = max(1, len(workers.workers) + (1 if workers.local else 0))
        while eng.state["next"] <= eng.planes:
            if eng.state["next"] > 1:
                stop = control.stop_reason()
                if stop:
                    return "deadline", stop

            def run(r, chunks):
                # fewer, larger chunks than the engine's batches: CHUNKS_PER_RANK per rank
                idx = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
                size = max(64, -(-len(idx) // (CHUNKS_PER_RANK * ranks)))
                parts = [idx[i:i + size] for i in range(0, len(idx), size)]
                try:  # the norms r needs, once, here
                    self.model.prepare(r, should_stop=control.should_stop)
                except Stopped:
                    return None
                norms = self.model.norms.values(r)
                got = workers.round([(r, p, norms) for p in parts], control.stop_reason
                                    if r > 1 else None)
                if got is None:
                    return None
                logits = np.concatenate([g[0] for g in got]) if got else None
                radius = np.concatenate([g[1] for g in got]) if got else None
                self.spent = stages.total(g[2] for g in got)
                out, at = [], 0
                for c in chunks:
                    out.append((logits[at:at + len(c)], radius[at:at + len(c)]))
                    at += len(c)
                return out
            res = eng.step(run)
            if res is None:
                return "deadline", control.stop_reason() or "stopped"
            self._record(eng, res, writer)
        return "complete", ""

    def _record(self, eng, res, writer):
        """Rank 0: one finished resolution into the log, the callback and the checkpoint."""
        unchanged(self.graph)  # its cached copy changed in place: nothing of it is kept
        self.watch.check()     # the same for the data (and the model's file: no effect)
        st = eng.state
        k = st["logits"].shape[1]
        spread = st["logits"].max(axis=1) - st["logits"].min(axis=1) if k > 1 else \
            np.abs(st["logits"][:, 0])
        rel = st["bound"] / np.where(spread > 0, spread, np.inf)
        r = res.index
        meta = {"index": r, "elapsed_s": self.elapsed(), "pairs": r * r, "method": "planes",
                "products": r * r * len(eng.graph.linear),
                "bound_abs": float(np.max(st["bound"])),
                "bound_rel": float(np.median(rel)), "bound_median": float(np.median(st["bound"])),
                "refined_count": int(res.refined.sum()),
                "certified_count": int(st["certified"].sum()),
                "frozen_certified": res.frozen["certified"], "frozen_gray": res.frozen["gray"],
                "work": res.work, "work_all": res.work_all, "fallback": 0,
                "certified_fraction": float(np.mean(st["certified"])),
                **{f"cpu_{k}_s": float(v) for k, v in getattr(self, "spent", {}).items()},
                **self.setup}
        self.setup = {}  # start-up figures go with the first resolution computed
        meta.update(self.model.norms.summary(r))
        self.meta.append(meta)
        if self.on_resolution is not None:
            self.on_resolution(meta, st["scores"], st["predicted"], res.refined)
        if writer is not None:
            # Copies: the writer thread writes while the next round updates the state in place.
            saved = _persisted(st)
            writer.add_resolution(r, {"scores": saved["scores"], "predicted": saved["predicted"],
                                      "refined": res.refined.copy(), "bound": saved["bound"],
                                      "certified": saved["certified"]},
                                  dict(meta), state=saved,
                                  done=lambda durable, m=meta: _report(m, eng.planes, durable))
        else:
            _report(meta, eng.planes)


def _evaluate(model, X, task, stopping=None):
    """A farm task: (logits, bounds, stage times) of samples `idx` at resolution r
    (None if `stopping()` said so between batches). The stage times run from the
    end of this thread's previous task: a worker's send of that task's result
    counts too (stages.py)."""
    r, idx, norms = task
    model.norms.use(r, norms)
    out = model.evaluate(X[idx], r, stopping=stopping)
    spent = stages.take()
    return None if out is None else (*out, spent)


def test_slow_preparation(should_stop):
    """Only in lrmpi's own tests (config test_slow_prepare_s): a preparation that
    takes that long, asking should_stop() ten times a second like a real one."""
    end = time.monotonic() + config.get().test_slow_prepare_s
    while time.monotonic() < end:
        should_stop("preparing the model (test_slow_prepare_s)")
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def _chosen(graph, output):
    if output is not None and output != graph.output:
        raise InputError(f"model: no output {output!r} (the graph's output: {graph.output!r})")
    return graph


def _graph_parts(graph):
    yield graph.input
    yield tuple(graph.input_shape)
    yield graph.head
    for n in graph.nodes:
        yield (n.op, tuple(n.inputs), n.output)
        for key in sorted(n.params):
            yield key
            yield n.params[key]


def _persisted(st):
    return {k: st[k].copy() for k in ("logits", "scores", "predicted", "bound", "certified",
                                      "active")}


def _report(meta, planned, durable=None):
    log_resolution(meta, planned, durable,
                   f"refined {meta['refined_count']}  certified {meta['certified_count']} "
                   f"({100 * meta['certified_fraction']:.1f} %)  "
                   f"work {meta['work']:.3g}/{meta['work_all']:.3g}  logit bound median "
                   f"{meta['bound_median']:.3e} ({meta['bound_rel']:.1e} of the range, "
                   f"{meta['bound_method']})")


def run_infer(model, data, out=None, *, comm=None, on_resolution=None, model_output=None,
              **options):
    """Layered inference of `model` (.onnx/.npz path or a graph) on `data` (.npy /
    FILE.h5:/dataset or array) over every rank; an Outcome on rank 0, None elsewhere.

    `model_output`: the name of the model's output holding the scores (required
    when it has several). Options: the engine's (bits, planes, rule: certified |
    gray | none, gray, class_margin) and the job's (see jobs.job.JobOptions). `on_resolution(meta,
    scores, predicted, refined)` is called on rank 0 after each resolution."""
    opts, engine = JobOptions.split(options)
    unknown = sorted(set(engine) - set(ENGINE))
    if unknown:
        raise TypeError(f"run_infer: unknown option(s) {', '.join(unknown)}; valid: "
                        + ", ".join(ENGINE + tuple(JobOptions.__dataclass_fields__)))
    comm = get_comm(comm)
    job = InferJob(model, data, engine, on_resolution, opts.worker_timeout, comm, model_output)
    return run_job(job, out, opts, comm)

