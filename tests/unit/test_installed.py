"""Where lrmpi was loaded from: its kernels beside its code, every package found by the
packaging, and (CI's wheel leg, LRMPI_EXPECT_INSTALLED=site-packages) both from the
installed wheel, not a checkout."""
import os
import pkgutil

import pytest

import lrmpi
from lrmpi._ext import kernels


def test_the_extension_belongs_to_this_lrmpi():
    assert os.path.dirname(os.path.dirname(kernels.__file__)) == os.path.dirname(lrmpi.__file__)


def test_every_folder_of_code_is_a_package():
    """setuptools finds packages by their __init__.py: a folder of modules without one
    would be left out of the wheel (as lrmpi.jobs.checkpoint once was from a list)."""
    top = os.path.dirname(lrmpi.__file__)
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, f"{folder} has modules but no __init__.py"
    found = {m.name for m in pkgutil.walk_packages(lrmpi.__path__, "lrmpi.") if m.ispkg}
    assert {"lrmpi.jobs.checkpoint", "lrmpi.experiments.bench", "lrmpi.jobscripts"} <= found


def test_loaded_from_where_ci_installed_it():
    where = os.environ.get("LRMPI_EXPECT_INSTALLED")
    if where is None:
        pytest.skip("LRMPI_EXPECT_INSTALLED is not set (CI's wheel leg sets it)")
    for path in (lrmpi.__file__, kernels.__file__):
        assert f"{os.sep}{where}{os.sep}" in path, f"{path} is not in {where}"
