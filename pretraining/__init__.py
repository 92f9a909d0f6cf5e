"""The kit's own model making: what only the kit's authors run, never part of a submission or the
student starter. `python -m pretraining.base_vlm pretrain` remakes the committed base VLMs (each
one's flags: `homework.base_vlm.BASES`)."""
