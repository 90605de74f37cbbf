"""What every uamix task keeps about its encoder in the checkpoint's task state: the
shape (so a model rebuilds without the original encoder file) and the monitor's
starting embeddings."""


class EncoderStateMixin:
    """Mixed into the uamix fairseq tasks; call ``_init_encoder_state()`` in __init__.

    ``encoder_config`` is what the model built last (saved with every checkpoint);
    ``restored_encoder_config`` is set only while a checkpoint is restored, and only
    then does a model take its shape from the task instead of the encoder file.
    """

    def _init_encoder_state(self):
        self.encoder_config = None
        self.restored_encoder_config = None

    def _encoder_state_dict(self):
        state = {"encoder_config": self.encoder_config}
        starts = getattr(self, "monitor_start", None)  # per monitor set, tasks/monitoring.py
        if starts:
            state["monitor_start"] = starts[0]
            if len(starts) > 1:
                state["monitor_start_more"] = list(starts[1:])
        return state

    def _load_encoder_state(self, state_dict):
        self.restored_encoder_config = state_dict.get("encoder_config")
        self.encoder_config = self.restored_encoder_config or self.encoder_config
        if state_dict.get("monitor_start") is not None:
            self.monitor_start = [state_dict["monitor_start"],
                                  *state_dict.get("monitor_start_more", [])]

    def state_dict(self):
        return self._encoder_state_dict()

    def load_state_dict(self, state_dict):
        self._load_encoder_state(state_dict)

