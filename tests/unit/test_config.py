"""The one table of settings: environment parsing, run-time changes, the README table."""
import pytest

from lrmpi import config
from lrmpi.errors import ConfigError


def test_environment_variables_are_typed_and_named_after_the_fields():
    c = config.Config.from_env({"LRMPI_DEPTH": "5", "LRMPI_KERNEL": "ref",
                                "LRMPI_BACKUP_FACTOR": "3.5", "OTHER": "x"})
    assert c.depth == 5 and c.kernel == "ref" and c.backup_factor == 3.5
    assert c.lookahead == config.Config().lookahead  # unset: the default
    with pytest.raises(ConfigError, match="LRMPI_DEPTH='two': expected a int"):
        config.Config.from_env({"LRMPI_DEPTH": "two"})


def test_configure_changes_settings_for_a_block_and_refuses_unknown_names():
    before = config.get().depth
    with config.configure(depth=7):
        assert config.get().depth == 7
    assert config.get().depth == before
    with pytest.raises(ConfigError, match="unknown setting.*nosuch.*valid: kernel"):
        with config.configure(nosuch=1):
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
    with pytest.raises(ConfigError, match="not usable here"):
        with config.configure(kernel="avx9000"):
            pass
    assert kernels.selected_isa() == before and config.get().kernel != "avx9000"
