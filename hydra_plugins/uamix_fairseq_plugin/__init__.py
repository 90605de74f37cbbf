"""Hydra plugin of uamix-fairseq: the plugin's config dataclasses, known before Hydra
composes a config.

fairseq-hydra-train composes the yaml first and imports the user dir afterwards, so
without this a field the yaml does not name (``criterion.mix_mode``) is not in the
composed config and a plain ``key=value`` override of it fails ("Key ... is not in
struct"). Hydra imports every module of the ``hydra_plugins`` namespace package before
it builds the config search path; ``manipulate_search_path`` then imports the plugin the
way fairseq's own argparse CLIs import ``--user-dir`` before parsing (the folder
``common.user_dir=...`` names on the command line, else the installed ``uamix_fairseq``).
Importing it registers every ``uamix_*`` task, model, criterion and optimizer dataclass
in Hydra's ConfigStore (fairseq's registries do that), and the yaml files select them in
their defaults list (``- task: uamix_contrastive``), so the composed config holds every
field with its default.

Nothing happens in a Hydra app that has not imported fairseq.
"""

import argparse
import importlib
import importlib.util
import os
import sys
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PACKAGE = "uamix_fairseq"
USER_DIR_KEY = "common.user_dir"


def user_dir_from_argv(argv: List[str]) -> Optional[str]:
    """The value of ``common.user_dir=...`` (also with ``+``/``++``) among Hydra
    overrides, or None."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == USER_DIR_KEY and value:
            return value.strip("'\"")
    return None


def register_plugin_components(argv: List[str]) -> None:
    """Import the plugin (and so register its dataclasses in Hydra's ConfigStore) if the
    running Hydra app is fairseq's."""
    if "fairseq" not in sys.modules:
        return  # another Hydra application: leave it alone
    user_dir = user_dir_from_argv(argv)
    if user_dir is not None:
        from fairseq import utils

        if not os.path.isdir(os.path.abspath(user_dir)):
            raise FileNotFoundError(
                f"{USER_DIR_KEY}={user_dir}: no such folder; give the absolute path of "
                f"the plugin's {PACKAGE}/ folder")
        # fairseq's own import, remembered by path: its later call is a no-op.
        utils.import_user_module(argparse.Namespace(user_dir=user_dir))
    elif importlib.util.find_spec(PACKAGE) is not None:
        importlib.import_module(PACKAGE)


class UamixFairseqSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # The search path itself is unchanged (configs come from --config-dir); this is
        # the hook Hydra calls before composing, the moment the dataclasses must exist.
        register_plugin_components(sys.argv[1:])
