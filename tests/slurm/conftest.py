"""SLURM tests run against a real SLURM (.ci/slurm-up.sh starts one); they skip
cleanly when none is reachable, unless LRMPI_REQUIRE_SLURM=1 (CI) makes that a
failure."""
import os
import shutil
import subprocess

import numpy as np
import pytest


def slurm_reachable():
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not installed"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                           timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out"
    if p.returncode != 0 or "idle" not in p.stdout and "mix" not in p.stdout:
        detail = (p.stderr.strip() or p.stdout.strip()).splitlines()
        return f"no SLURM controller with an idle node ({detail[-1] if detail else 'no output'})"
    return None


@pytest.fixture(scope="session", autouse=True)
def require_slurm():
    why = slurm_reachable()
    if why is not None:
        if os.environ.get("LRMPI_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM required (LRMPI_REQUIRE_SLURM=1) but {why}")
        pytest.skip(f"no SLURM: {why}")


@pytest.fixture
def operands(tmp_path):
    rng = np.random.default_rng(7)
    A = rng.standard_normal((160, 96)) * np.exp(rng.uniform(-4, 4, (160, 1)))
    B = rng.standard_normal((96, 120))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    return A, B
