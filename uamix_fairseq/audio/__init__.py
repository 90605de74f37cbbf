"""Audio in, model input out: reading files (``decode``), the Kaldi-compatible fbank
(``features``) and the batched on-device front end (``frontend``). No fairseq."""
