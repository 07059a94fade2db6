"""The one table of settings: environment parsing, ranges, run-time changes, the README table."""
import os
import subprocess
import sys

import pytest

from lrmpi import config
from lrmpi.errors import ConfigError


def test_environment_variables_are_typed_and_named_after_the_fields():
    c = config.Config.from_env({"LRMPI_DEPTH": "5", "LRMPI_KERNEL": "ref",
                                "LRMPI_BACKUP_FACTOR": "3.5", "OTHER": "x",
                                "LRMPI_NOT_A_SETTING": "whatever"})  # not ours to refuse
    assert c.depth == 5 and c.kernel == "ref" and c.backup_factor == 3.5
    assert c.lookahead == config.Config().lookahead  # unset: the default
    with pytest.raises(ConfigError, match="LRMPI_DEPTH='two': expected an integer in 1..1024"):
        config.Config.from_env({"LRMPI_DEPTH": "two"})


# issue #24 D10-D12: each of these hung a job, disabled a limit or failed deep inside a run
BAD = [("LRMPI_WRITE_QUEUE", "0", "an integer in 1..1024"),
       ("LRMPI_DEPTH", "0", "an integer in 1..1024"),
       ("LRMPI_DEPTH", "-1", "an integer in 1..1024"),
       ("LRMPI_LOOKAHEAD", "0", "an integer in 1..1024"),
       ("LRMPI_KERNEL", "foo", "one of \"\" (none), 'ref', 'avx2', 'avx512', 'amx'"),
       ("LRMPI_CHUNK_COLS", "abc", "an integer in 1.."),
       ("LRMPI_CHUNK_COLS", "0", "an integer in 1.."),
       ("LRMPI_LOG_LEVEL", "LOUD", "one of 'DEBUG', 'INFO'"),
       ("LRMPI_MIN_TILE_ROWS", "0", "an integer in 1.."),
       ("LRMPI_BOUND_ROW_BLOCK", "0", "an integer in 1.."),
       ("LRMPI_STOP_TIMEOUT_S", "-1", "a number > 0"),
       ("LRMPI_MEMORY_FRACTION", "0", "a number > 0 and <= 1"),
       ("LRMPI_HANG_MIN_S", "nan", "a number > 0"),
       ("LRMPI_HANG_FIRST_S", "inf", "a number > 0"),
       ("LRMPI_MARGIN_FRACTION", "1", "a number >= 0 and <= 0.9"),
       ("LRMPI_ROOT_COMPUTES", "maybe", "one of 'yes', 'no', 'auto'"),
       ("LRMPI_WRITER_NICE", "40", "an integer in -20..19"),
       ("LRMPI_TEST_FAIL_AFTER", "0", "an integer in 1.."),
       ("LRMPI_CHUNK_COLS", "1" * 400, "an integer in 1.."),  # no OverflowError
       ("LRMPI_DEPTH", "\u0662", "an integer in 1..")]  # ASCII digits only


@pytest.mark.parametrize("name, value, allowed", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_a_setting_outside_its_range_is_refused_naming_it_and_the_range(name, value, allowed):
    with pytest.raises(ConfigError) as exc:
        config.Config.from_env({name: value})
    assert str(exc.value).startswith(f"{name}={value!r}: expected {allowed}")


def test_every_setting_has_a_rule_that_accepts_its_default():
    assert set(config.RULES) == set(config.Config.names())
    for name in config.Config.names():
        config._check(name, getattr(config.Config(), name))


def test_a_bad_environment_is_one_line_and_exit_2_not_an_import_traceback():
    """config.check() is the CLI's first step: the import itself must not fail."""
    for env in ({"LRMPI_KERNEL": "foo"}, {"LRMPI_LOG_LEVEL": "LOUD"}, {"LRMPI_DEPTH": "0"}):
        p = subprocess.run([sys.executable, "-m", "lrmpi", "info"], capture_output=True,
                           text=True, env={**os.environ, **env}, check=False)
        name = next(iter(env))
        assert p.returncode == 2, p.stderr
        assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"lrmpi: error: {name}="), \
            p.stderr
        assert "Traceback" not in p.stderr


def test_configure_changes_settings_for_a_block_and_refuses_unknown_names():
    before = config.get().depth
    with config.configure(depth=7):
        assert config.get().depth == 7
    assert config.get().depth == before
    with pytest.raises(ConfigError, match="unknown setting.*nosuch.*valid: kernel"):
        with config.configure(nosuch=1):
            pass
    with pytest.raises(ConfigError, match="write_queue=0: expected an integer in 1..1024"):
        with config.configure(write_queue=0):
            pass


def test_every_setting_has_a_line_of_meaning_for_the_readme():
    rows = config.table()
    assert len(rows) == len(config.Config.names())
    for env, default, meaning in rows:
        assert env.startswith("LRMPI_") and meaning, env


def test_the_readme_lists_every_setting():
    import pathlib
    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    missing = [env for env, _, _ in config.table() if f"`{env}`" not in readme]
    assert not missing, missing


def test_configure_kernel_takes_effect_or_is_refused():
    from lrmpi.numerics import kernels
    before = kernels.selected_isa()
    with config.configure(kernel="ref"):
        assert kernels.selected_isa() == "ref" and config.get().kernel == "ref"
    assert kernels.selected_isa() == before
    with pytest.raises(ConfigError, match="kernel='avx9000': expected one of"):
        with config.configure(kernel="avx9000"):  # not an ISA lrmpi has: its range
            pass
    assert kernels.selected_isa() == before and config.get().kernel != "avx9000"
