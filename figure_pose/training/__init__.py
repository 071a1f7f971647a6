"""Training (model.py's work): the network and its layers, the training model with its loss and
learning-rate schedule, the per-epoch callbacks, the run folder's rules and the run's settings."""
