"""Helpers for tests that run the plugin through fairseq's own command line."""

import os
import subprocess
import sys

from uamix_fairseq.modules.audiomae import EncoderConfig, write_random_audiomae
from demo_data import make_demo_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_DIR = os.path.join(REPO, "uamix_fairseq")

# A 4-block encoder on 0.32 s crops: seconds per run on 2 CPU cores.
TINY_ENCODER = EncoderConfig(embed_dim=64, depth=4, num_heads=1, num_frames=32)

# The GPU recipes' settings that this CPU cannot run, switched off (bf16 path included).
CPU_OVERRIDES = {"common.cpu": "true", "common.on_cpu_convert_precision": "true",
                 "common.log_format": "simple",
                 "distributed_training.distributed_world_size": 1,
                 "distributed_training.ddp_backend": "legacy_ddp", "dataset.num_workers": 0}


def make_tiny_setup(root):
    corpus = os.path.join(root, "corpus")
    # 15 seen sources x 2 clips: 27 train clips (6 batches of 4 an epoch, the last 3
    # dropped, so that update 6 ends epoch 1) and 3 valid clips.
    make_demo_corpus(corpus, clips_per_class=2, seconds=0.5, seed=0, valid_percent=0.1)
    ckpt = os.path.join(root, "tiny_audiomae.pth")
    write_random_audiomae(ckpt, TINY_ENCODER, seed=0)
    return corpus, ckpt


def tiny_overrides(corpus, ckpt, save_dir, **extra):
    args = {
        "task.data": corpus,
        "task.num_frames": 32,
        "model.audiomae_checkpoint": ckpt,
        "model.proj_hidden_dim": 32,
        "model.pred_hidden_dim": 32,
        "model.proj_out_dim": 16,
        "model.freeze_schedule": "'[(0, 0), (3, 2)]'",
        "common.user_dir": USER_DIR,
        "common.log_interval": 1,
        "common.tensorboard_logdir": os.path.join(save_dir, "tb"),
        "checkpoint.save_dir": save_dir,
        "checkpoint.save_interval_updates": 3,
        "checkpoint.keep_interval_updates": 10,
        "dataset.batch_size": 4,
        "dataset.validate_interval_updates": 3,
        "optimization.max_update": 6,
        "lr_scheduler.warmup_updates": 2,
        # A schedule that does not depend on max_update, so runs of different
        # lengths share their learning rates (the resume test compares them).
        "lr_scheduler.lr_period_updates": 20,
    }
    args.update(extra)
    # Plain key=value: the configs' defaults lists give every field of the plugin's
    # dataclasses to the composed config (hydra_plugins/uamix_fairseq_plugin).
    return [f"{k}={v}" for k, v in args.items()]


def compose_config(name, overrides=()):
    """Compose configs/<name>.yaml as fairseq-hydra-train does (fairseq's schema under
    the config name, the repo's configs/ as --config-dir, Hydra's plugins discovered)."""
    import fairseq  # noqa: F401  (the plugin registers only inside fairseq apps)
    from fairseq.dataclass.initialize import hydra_init
    from hydra import compose, initialize_config_dir

    hydra_init(name)
    with initialize_config_dir(config_dir=os.path.join(REPO, "configs"), version_base="1.1"):
        return compose(name, overrides=list(overrides))


def train_command(overrides, config_name="demo", script=None):
    """The fairseq-hydra-train command line; ``script``: a python file run instead
    (one that ends in fairseq_cli.hydra_train.cli_main, e.g. fault_train.py)."""
    entry = ([sys.executable, script] if script else
             [os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")])
    return [*entry, "--config-dir", os.path.join(REPO, "configs"),
            "--config-name", config_name, *overrides]


def train_env(**extra):
    """The repo root on PYTHONPATH: its Hydra plugin (hydra_plugins/) is found even
    under an older install."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_train(overrides, cwd, timeout=300, config_name="demo", script=None, env=None):
    """Run fairseq-hydra-train; returns (returncode, combined output). ``env``: extra
    environment variables."""
    proc = subprocess.run(train_command(overrides, config_name, script), cwd=cwd,
                          env=train_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr
