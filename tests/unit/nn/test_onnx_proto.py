"""The ONNX reader without `import onnx` (0.6-0.8 s of start-up): the same
tensors and attributes as onnx's own helpers, and onnx stays unimported."""
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import helper, numpy_helper  # noqa: E402

from lrmpi.nn import onnx_proto  # noqa: E402

TYPES = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.uint16, np.int32,
         np.int64, np.uint32, np.uint64, np.bool_]


@pytest.mark.parametrize("dtype", TYPES, ids=[np.dtype(t).name for t in TYPES])
@pytest.mark.parametrize("raw", [True, False])
def test_tensors_convert_as_onnx_converts_them(dtype, raw):
    rng = np.random.default_rng(0)
    for shape in [(), (0,), (3,), (2, 3, 4)]:
        v = (rng.standard_normal(shape) * 100).astype(dtype) if dtype != np.bool_ else \
            rng.random(shape) > 0.5
        if raw:
            t = numpy_helper.from_array(v, "t")
        else:
            kind = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            vals = v.view(np.uint16) if dtype == np.float16 else v
            t = helper.make_tensor("t", kind, shape, vals.reshape(-1).tolist(), raw=False)
        want = numpy_helper.to_array(t)
        got = onnx_proto.to_array(t)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_attributes_convert_as_onnx_converts_them():
    t = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    n = helper.make_node("X", ["a"], ["b"], f=1.5, i=3, s="SAME_UPPER", t=t,
                         floats=[1.0, 2.5], ints=[1, -2], strings=["a", "b"])
    got = onnx_proto.attributes(n)
    for a in n.attribute:
        want = helper.get_attribute_value(a)
        if a.name == "t":
            np.testing.assert_array_equal(got["t"], numpy_helper.to_array(want))
        else:
            assert got[a.name] == want, a.name


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet"])
def test_a_zoo_model_reads_as_onnx_reads_it(name):
    from onnx_graphs import zoo_source
    path = zoo_source(name)
    ours, theirs = onnx_proto.load(path), onnx.load(path)
    assert ours.SerializeToString() == theirs.SerializeToString()
    for a, b in zip(ours.graph.initializer, theirs.graph.initializer):
        np.testing.assert_array_equal(onnx_proto.to_array(a), numpy_helper.to_array(b))


def test_importing_a_model_does_not_import_onnx(tmp_path):
    from onnx_graphs import model, node
    path = model(tmp_path / "m.onnx", [node("Gemm", ["x", "W"], "y", transB=1)],
                 {"W": np.ones((3, 4), np.float32)}, (4,))
    code = ("import sys; from lrmpi.nn.onnx_import import load_model; "
            f"g = load_model({str(path)!r}); assert g.outputs == 3; "
            "assert 'onnx' not in sys.modules and 'ml_dtypes' not in sys.modules, "
            "sorted(m for m in sys.modules if 'onnx' in m)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_external_data_reads_as_onnx_reads_it(tmp_path):
    from onnx_graphs import external_model
    path = external_model(str(tmp_path), 1)
    ours = onnx_proto.load(path)
    onnx_proto.load_external(ours, path)
    theirs = onnx.load(path)
    for a, b in zip(ours.graph.initializer, theirs.graph.initializer):
        np.testing.assert_array_equal(onnx_proto.to_array(a), numpy_helper.to_array(b))
    data = (tmp_path / "w.bin").read_bytes()
    (tmp_path / "w.bin").write_bytes(data[:-4])  # the last tensor cut short
    from lrmpi.errors import InputError
    with pytest.raises(InputError, match="ends early"):
        onnx_proto.load_external(onnx_proto.load(path), path)
