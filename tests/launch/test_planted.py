"""Issue #24's first class test: whatever a user keeps in and beside OUT.h5.d (files,
folders, links to files and folders elsewhere, dangling links) survives any sequence
of runs, --overwrite, --resume and SIGKILLs, and so does whatever the links point to.
lrmpi deletes only what it names itself in its job's own folder (owned.py).

Planted names begin with "u_", which no name lrmpi gives its files can (job ids are
hex digits; its files are res/sums/state/partial/rank*.h5, .lock and OUT.h5.tmp.PID).
LRMPI_PLANT_EXAMPLES raises the number of examples (default 6: about a minute)."""
import os
import signal
import tempfile
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launching import finish, kill_tree, run, start
from tamper import snapshot

from lrmpi.jobs.checkpoint import Checkpoint

EXAMPLES = int(os.environ.get("LRMPI_PLANT_EXAMPLES", "6"))

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-", min_size=1, max_size=8).map(
    lambda s: "u_" + s)
kinds = st.sampled_from(["file", "folder", "link-file", "link-folder", "dangling",
                         "link-to-job-folder"])
where = st.sampled_from(["beside", "sidecar", "job", "sub"])
plants = st.lists(st.tuples(where, names, kinds), min_size=1, max_size=6,
                  unique_by=lambda p: (p[0], p[1]))
steps = st.lists(st.sampled_from(["run", "overwrite", "overwrite-other", "resume",
                                  "kill-early", "kill-late", "plant"]), min_size=2, max_size=4)


def user_things(root):
    """The planted things (a "u_" name anywhere on their path) and their state."""
    return {k: v for k, v in snapshot(root).items()
            if any(part.startswith("u_") for part in k.split(os.sep))}


class Sandbox:
    def __init__(self, d):
        self.d, self.out = d, os.path.join(d, "work", "c.h5")
        os.makedirs(os.path.join(d, "work"))
        os.makedirs(os.path.join(d, "elsewhere", "dir"))
        with open(os.path.join(d, "elsewhere", "file.txt"), "w") as f:
            f.write("elsewhere")
        with open(os.path.join(d, "elsewhere", "dir", "x.txt"), "w") as f:
            f.write("inside")
        rng = np.random.default_rng(0)
        for name, shape in (("A", (64, 24)), ("A2", (64, 24)), ("B", (24, 40))):
            np.save(os.path.join(d, f"{name}.npy"), rng.standard_normal(shape))
        self.n = 0

    def plant(self, items):
        side = self.out + ".d"
        job = None
        if os.path.exists(self.out):
            try:
                job = Checkpoint(self.out).folder
            except Exception:
                job = None
        for place, name, kind in items:
            folder = {"beside": os.path.dirname(self.out), "sidecar": side, "job": job,
                      "sub": os.path.join(side, "u_sub")}[place]
            if folder is None or os.path.islink(folder):
                continue
            os.makedirs(folder, exist_ok=True)
            p = os.path.join(folder, name)
            if os.path.lexists(p):
                continue
            self.n += 1
            if kind == "file":
                with open(p, "w") as f:
                    f.write(f"user data {self.n}")
            elif kind == "folder":
                os.makedirs(os.path.join(p, "u_inner"))
                with open(os.path.join(p, "u_inner", "u_f"), "w") as f:
                    f.write("deep")
            elif kind == "link-file":
                os.symlink(os.path.join(self.d, "elsewhere", "file.txt"), p)
            elif kind == "link-folder":
                os.symlink(os.path.join(self.d, "elsewhere", "dir"), p)
            elif kind == "link-to-job-folder" and job is not None:
                os.symlink(job, p)
            else:
                os.symlink(os.path.join(self.d, "nowhere"), p)

    def job(self, *extra, inputs=("A", "B")):
        a, b = (os.path.join(self.d, f"{x}.npy") for x in inputs)
        return ("matmul", a, b, "-o", self.out, "--planes", 2, *extra)

    def step(self, action):
        slow = {"LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "0.2"}
        if action == "run":
            return run(*self.job()).returncode
        if action == "overwrite":
            return run(*self.job("--overwrite", "--keep", "latest")).returncode
        if action == "overwrite-other":
            return run(*self.job("--overwrite", inputs=("A2", "B"))).returncode
        if action == "resume":
            p = run(*self.job("--resume"))
            return p.returncode
        # a SIGKILL early (the job file may not exist yet) or once a resolution is listed
        proc = start(*self.job("--overwrite", "--planes", 3), env=slow)
        try:
            limit = time.time() + 60
            while time.time() < limit and proc.poll() is None:
                if action == "kill-early" or _listed(self.out):
                    break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            finish(proc, 30)
        finally:
            kill_tree(proc)
        return -9


def _listed(out):
    try:
        ck = Checkpoint(out)
        return ck.attrs.get("planes") == 3 and ck.completed >= 1
    except Exception:
        return False


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plants, steps, plants)
def test_every_planted_thing_survives(first, actions, later):
    with tempfile.TemporaryDirectory() as d:
        box = Sandbox(d)
        box.plant(first)
        outside = snapshot(os.path.join(d, "elsewhere"))
        planted = user_things(os.path.join(d, "work"))
        for action in actions:
            if action == "plant":
                box.plant(later)
                planted = user_things(os.path.join(d, "work"))
                continue
            code = box.step(action)
            assert code in (0, 1, 2, 3, 4, -9), (action, code)
            now = user_things(os.path.join(d, "work"))
            lost = {k: v for k, v in planted.items() if now.get(k) != v}
            assert not lost, (action, sorted(lost))
            assert snapshot(os.path.join(d, "elsewhere")) == outside, action
        if os.path.exists(box.out) and box.step("resume") == 0:
            Checkpoint(box.out).verify()  # what lrmpi kept is still whole
