"""Ninth pass, job scripts: `lrmpi jobscript` with options in abbreviated, attached and
`=` forms, values that begin with a dash; the scripts run under bash with a fake srun /
scontrol (no SLURM needed)."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adversary import attrs_of, job_folder, mlp_onnx, run, save
from adversary9 import fake_slurm, run_script


def script_of(tmp_path, *args, cwd=None):
    res = run("jobscript", *args, cwd=cwd)
    assert res.returncode == 0, res.stderr
    p = tmp_path / "job.sbatch"
    p.write_text(res.stdout)
    return p, res.stdout


def knob(text, name):
    for line in text.splitlines():
        if line.startswith(name + "="):
            return line.split("#")[0].strip()[len(name) + 1:]
    raise AssertionError(name)


def recording_slurm(tmp_path):
    folder = tmp_path / "fakebin"
    return fake_slurm(str(folder), srun_body=f'shift; printf "%s\\n" "$@" > {folder}/srun.args; exec "$@"')


def srun_args(fakebin):
    with open(os.path.join(fakebin, "srun.args")) as f:
        return f.read().splitlines()


def test_abbreviated_overwrite_first_run_only(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert run("matmul", a, b, "-o", out, "--planes", "2").returncode == 0
    job0 = attrs_of(out)["job_id"]
    script, text = script_of(tmp_path, "matmul", a, b, "-o", out, "--overw", "--plan", "2")
    assert knob(text, "OPTIONS") == "(--planes 2 --overwrite)"
    fb = recording_slurm(tmp_path)
    r0 = run_script(script, fb, env={"SLURM_RESTART_COUNT": "0"}, cwd=tmp_path)
    assert r0.returncode == 0, r0.stderr
    assert "--overwrite" in srun_args(fb) and "--resume" not in srun_args(fb)
    job1 = attrs_of(out)["job_id"]
    assert job1 != job0
    r1 = run_script(script, fb, env={"SLURM_RESTART_COUNT": "1"}, cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    assert "--resume" in srun_args(fb) and "--overwrite" not in srun_args(fb)
    assert attrs_of(out)["job_id"] == job1


def test_attached_short_output_made_absolute_and_runs(ops, tmp_path):
    a, b, _, _ = ops
    sub = tmp_path / "sub"
    sub.mkdir()
    script, text = script_of(tmp_path, "matmul", os.path.relpath(a, sub),
                             os.path.relpath(b, sub), "-oC.h5", "--planes", "2", cwd=sub)
    assert knob(text, "OUT") == str(sub / "C.h5")
    r = run_script(script, recording_slurm(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert attrs_of(sub / "C.h5")["status"] == "complete"
    assert not (tmp_path / "C.h5").exists()


def test_ambiguous_abbreviation_refused_prints_no_script(ops, tmp_path):
    a, b, _, _ = ops
    res = run("jobscript", "matmul", a, b, "-o", tmp_path / "C.h5", "--dead", "5m")
    assert res.returncode == 2
    assert res.stdout == ""
    assert "ambiguous" in res.stderr and "Traceback" not in res.stderr


def test_equals_forms_keep_latest_ranks_script_runs(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    script, text = script_of(tmp_path, "matmul", a, b, f"--output={out}", "--keep=latest",
                             "--write=ranks", "--planes=2")
    opts = knob(text, "OPTIONS")
    assert "--keep latest" in opts and "--write ranks" in opts and "--planes 2" in opts, opts
    assert "=" not in opts
    r = run_script(script, recording_slurm(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    files = sorted(f for f in os.listdir(job_folder(out)) if f.startswith("res"))
    assert files == ["res003.h5"]


def test_infer_h5_dataset_data_relative_from_subfolder(tmp_path, rng):
    sub = tmp_path / "sub"
    sub.mkdir()
    mlp_onnx(tmp_path / "m.onnx", rng)
    import h5py
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["grp/x"] = rng.standard_normal((3, 16)).astype(np.float32)
    script, text = script_of(tmp_path, "infer", "../m.onnx", "../d.h5:/grp/x", "-o", "../I.h5",
                             "--planes", "2", cwd=sub)
    assert knob(text, "INPUTS") == f"({tmp_path}/m.onnx {tmp_path}/d.h5:/grp/x)"
    r = run_script(script, recording_slurm(tmp_path), cwd=sub,
                   env={"LRMPI_CACHE_DIR": ""})
    assert r.returncode == 0, r.stderr
    assert attrs_of(tmp_path / "I.h5")["status"] == "complete"


def test_deadline_ok_given_explicitly_reaches_lrmpi_once(ops, tmp_path):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    script, text = script_of(tmp_path, "matmul", a, b, "-o", out, "--deadline-ok",
                             "--planes", "2")
    assert knob(text, "DEADLINE_OK") == "yes"
    fb = recording_slurm(tmp_path)
    r = run_script(script, fb, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert srun_args(fb).count("--deadline-ok") == 1


@pytest.mark.parametrize("restart,requeued", [("4", True), ("5", False)])
def test_max_restarts_option_bounds_the_requeues(ops, tmp_path, restart, requeued):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    script, text = script_of(tmp_path, "matmul", a, b, "-o", out, "--planes", "4",
                             "--max-restarts", "5", "--no-deadline-ok")
    assert knob(text, "MAX_RESTARTS") == "5"
    fb = recording_slurm(tmp_path)
    r = run_script(script, fb, cwd=tmp_path,
                   env={"SLURM_RESTART_COUNT": restart, "SLURM_JOB_ID": "77",
                        "LRMPI_TEST_SLOW_RANK": "0", "LRMPI_TEST_SLOW_S": "1",
                        "SLURM_JOB_END_TIME": str(int(__import__("time").time()) + 4)})
    assert r.returncode == 3, (r.stdout, r.stderr)
    log = os.path.join(fb, "scontrol.log")
    assert os.path.exists(log) == requeued
    if requeued:
        with open(log) as f:
            assert f.read().split() == ["requeue", "77"]


def test_model_output_name_beginning_with_a_dash(tmp_path, rng):
    W1 = rng.standard_normal((16, 12)).astype(np.float32)
    W2 = rng.standard_normal((12, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["-logits"]),
             helper.make_node("Relu", ["-logits"], ["other"])]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("-logits", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("other", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    m = tmp_path / "m.onnx"
    onnx.save(model, str(m))
    x = save(tmp_path / "x.npy", rng.standard_normal((3, 16)).astype(np.float32))
    direct = tmp_path / "D.h5"
    assert run("infer", m, x, "-o", direct, "--model-output=-logits", "--planes", "2",
               env={"LRMPI_CACHE_DIR": ""}).returncode == 0
    out = tmp_path / "I.h5"
    script, text = script_of(tmp_path, "infer", m, x, "-o", out, "--model-output=-logits",
                             "--planes", "2")
    r = run_script(script, recording_slurm(tmp_path), cwd=tmp_path, env={"LRMPI_CACHE_DIR": ""})
    assert r.returncode == 0, r.stderr
    from lrmpi.jobs.checkpoint import Checkpoint

    def scores(path):
        ck = Checkpoint(str(path))
        return np.asarray(ck.resolution(ck.resolution_indices()[-1])[1]["scores"])
    assert np.array_equal(scores(out), scores(direct))
