"""Evaluation and use of a trained model (evaluate.py's work): PCK and COCO AP/AR on a coco.npy,
prediction, decoding and export, and pose on new photos."""
