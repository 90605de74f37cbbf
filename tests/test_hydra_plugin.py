"""hydra_plugins/uamix_fairseq_plugin: every field of the shipped configs' components
takes a plain key=value override (README: no `++` needed)."""

import glob
import os
import subprocess
import sys

import pytest
from omegaconf import MISSING, OmegaConf

from fairseq_helpers import REPO, compose_config

sys.path.insert(0, REPO)  # the plugin lives beside the package, in hydra_plugins/
from hydra_plugins.uamix_fairseq_plugin import user_dir_from_argv  # noqa: E402

CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(REPO, "configs", "*.yaml")))
GROUPS = ("task", "model", "criterion", "optimizer", "lr_scheduler")


def _dataclass(group, name):
    from fairseq.models import MODEL_DATACLASS_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_DATACLASS_REGISTRY

    if group == "task":
        return TASK_DATACLASS_REGISTRY[name]
    if group == "model":
        return MODEL_DATACLASS_REGISTRY[name]
    return REGISTRIES[group]["dataclass_registry"][name]


def _as_override(value):
    """A Hydra override value that parses back to `value`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_as_override(v) for v in value) + "]"
    text = str(value)
    if text == MISSING:
        text = "/placeholder"
    if text.startswith("${"):
        return text  # an interpolation, e.g. ${common.seed}
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_configs_are_all_found():
    assert {"demo", "uamix_as20k", "demo_unremix", "finetune_demo"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_component_field_takes_a_plain_override(name):
    cfg = compose_config(name)
    overrides = []
    for group in GROUPS:
        node = cfg[group]
        fields = set(_dataclass(group, node._name).__dataclass_fields__)
        assert fields <= set(node), (name, group, fields - set(node))
        values = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
        overrides += [f"{group}.{k}={_as_override(values[k])}" for k in sorted(fields)]
    # All of them at once, without '+' or '++': Hydra refuses any key not composed.
    again = compose_config(name, overrides)
    for group in GROUPS:
        assert again[group]._name == cfg[group]._name


def test_a_plain_override_changes_the_value():
    cfg = compose_config("demo", ["criterion.mix_mode=none", "criterion.temperature=0.2",
                                  "model.layer_decay=0.5", "optimizer.weight_decay=0.01",
                                  "task.view_gain_db=3", "lr_scheduler.min_lr=1e-6"])
    assert str(cfg.criterion.mix_mode) == "none" and cfg.criterion.temperature == 0.2
    assert cfg.model.layer_decay == 0.5 and cfg.optimizer.weight_decay == 0.01
    assert cfg.task.view_gain_db == 3 and cfg.lr_scheduler.min_lr == 1e-6
    assert cfg.model.queue_size == 4096  # the yaml's value over the dataclass default


def test_a_component_can_be_switched_by_its_group():
    cfg = compose_config("demo", ["criterion=uamix_swaro", "criterion.adv_weight=0"])
    assert cfg.criterion._name == "uamix_swaro" and cfg.criterion.adv_weight == 0


def test_user_dir_is_read_from_the_overrides():
    assert user_dir_from_argv(["task.data=/d", "common.user_dir=/x/uamix_fairseq"]) == \
        "/x/uamix_fairseq"
    assert user_dir_from_argv(["++common.user_dir='/y/uamix_fairseq'"]) == "/y/uamix_fairseq"
    assert user_dir_from_argv(["common.user_dir_x=/z", "task.data=/d"]) is None


def test_plugin_leaves_other_hydra_apps_alone(tmp_path):
    """Outside fairseq (fairseq not imported) discovery imports nothing of the plugin."""
    code = ("import sys; from hydra_plugins.uamix_fairseq_plugin import "
            "register_plugin_components as r; r(['common.user_dir=/nowhere']); "
            "assert 'uamix_fairseq' not in sys.modules and 'fairseq' not in sys.modules")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_missing_user_dir_is_named():
    from hydra_plugins.uamix_fairseq_plugin import register_plugin_components

    import fairseq  # noqa: F401
    with pytest.raises(FileNotFoundError, match="common.user_dir=/no/such/uamix_fairseq"):
        register_plugin_components(["common.user_dir=/no/such/uamix_fairseq"])


def test_installed_plugin_is_discovered_by_hydra(tmp_path):
    """As fairseq-hydra-train finds it: from a folder outside the repo, with nothing on
    PYTHONPATH, Hydra's plugin discovery must list it. (setuptools' default editable
    install hides namespace packages from pkgutil, hence editable_mode=compat in
    scripts/install.sh; a regular install works as well.)"""
    code = ("from hydra.core.plugins import Plugins\n"
            "from hydra.plugins.search_path_plugin import SearchPathPlugin\n"
            "print(sorted(p.__name__ for p in Plugins.instance().discover(SearchPathPlugin)))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "UamixFairseqSearchPathPlugin" in out.stdout, (
        out.stdout + "\nreinstall with: bash scripts/install.sh")
