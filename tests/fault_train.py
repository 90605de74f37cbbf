"""fairseq-hydra-train with a fault at a chosen file write (for the checkpoint tests).

Usage: python fault_train.py [fairseq-hydra-train arguments...], with
    FAULT_DIR     the folder watched (checkpoint.save_dir)
    FAULT_AT      the fault hits when this process opens, for writing, a file in FAULT_DIR
                  whose name starts with FAULT_AT (e.g. "checkpoint_last": the file itself
                  or a temporary file named after it) ...
    FAULT_AFTER   ... once a file whose name starts with FAULT_AFTER was opened for
                  writing (optional: armed from the start without it)
    FAULT_ACTION  TERM or KILL: send this signal to itself;
                  WAIT:<path>: create <path>.waiting, then wait until <path> exists.
An audit hook sees every open() and a profile hook the next step, so the fault lands
just after the file is created, whatever code does the writing.
"""

import os
import signal
import sys
import time

from fairseq_cli import hydra_train

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _opens_for_writing(mode, flags):
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & WRITE_FLAGS)


def _install_fault():
    folder = os.path.realpath(os.environ["FAULT_DIR"])
    at, after = os.environ["FAULT_AT"], os.environ.get("FAULT_AFTER")
    action = os.environ["FAULT_ACTION"]
    state = {"armed": after is None, "done": False}

    def hook(event, args):
        if event != "open" or state["done"] or not isinstance(args[0], (str, bytes)):
            return
        path = os.fsdecode(args[0])
        if not _opens_for_writing(args[1], args[2]):
            return
        if os.path.dirname(os.path.realpath(path)) != folder:
            return
        name = os.path.basename(path)
        if not state["armed"]:
            state["armed"] = name.startswith(after)
            return
        if not name.startswith(at):
            return
        state["done"] = True
        # The hook runs before the file is opened: strike at the first Python event
        # after it exists (created, truncated, nothing written yet).
        sys.setprofile(lambda *_: os.path.exists(path) and strike(name))

    def strike(name):
        sys.setprofile(None)
        print(f"FAULT {action} after opening {name}", flush=True)
        if action in ("TERM", "KILL"):
            os.kill(os.getpid(), getattr(signal, "SIG" + action))
            time.sleep(60)  # the signal ends the process before this returns
        else:
            go = action.split(":", 1)[1]
            open(go + ".waiting", "w").close()
            while not os.path.exists(go):
                time.sleep(0.1)

    sys.addaudithook(hook)


if __name__ == "__main__":
    _install_fault()
    sys.exit(hydra_train.cli_main())
