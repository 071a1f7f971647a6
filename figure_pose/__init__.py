"""figure-pose's library: the modules behind the top-level scripts (coco_process.py, model.py,
evaluate.py), one subpackage per stage. Nothing is imported here; import the module you need,
e.g. `from figure_pose.training.network import build_model`.

core/        the shared pieces; they import nothing from data/, training/ or evaluation/
    atomic.py           atomic file writes (a temporary name, then a rename)
    backend.py          the Keras backend: a quiet start, the dtype policy, multi-device training
    cli.py              argparse pieces of every script: one-line errors, range-checked types
    figures.py          single figures: the joints, the crop geometry, the coco.npy record format
    confidence_maps.py  the map codec: keypoints to Gaussian confidence maps and back
    metrics.py          PCK and the mean-pose baseline
    pictures.py         every picture written: crops, evaluation grids, PCK bars, training curves
data/        from COCO to coco.npy (coco_process.py) and back into training batches
    coco_io.py          COCO annotation JSON, person masks, photos
    figure_plan.py      which annotations become figures, and why the others do not
    figure_writer.py    coco.npy written as a stream that a killed run resumes
    figure_dataset.py   training batches: stored bytes read on the host, augmentation on the device
training/    the network and its training (model.py)
    network.py          the U-Nets (own encoder or pretrained MobileNetV2), building and loading models
    training.py         the loss, the training model, the optimizer and the learning-rate schedule
    callbacks.py        what happens after every step and epoch of a run
    run_folder.py       the run folder: starting, resuming and reading one
    train_config.py     TrainConfig: every training setting's default, flag and help
evaluation/  scoring and using a trained model (evaluate.py)
    evaluation.py       a model (or the oracle) evaluated on a coco.npy: metrics.json and pictures
    coco_eval.py        COCO keypoint AP/AR and OKS with pycocotools
    inference.py        predicting maps, decoding them, exporting and running exported models
    photos.py           pose on new photos (evaluate.py --images)
"""
