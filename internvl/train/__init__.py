"""Training glue (layer 3): process groups and logging, precision, numbered checkpoints and resume, and the
HF Trainer entry points (upstream's flags, complete-checkpoint resume, DeepSpeed checks). Imports the models
and data below it, never ``internvl.eval``."""
