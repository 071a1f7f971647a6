"""--backbone mobilenet_v2: the pretrained encoder loads the shared ImageNet file, freezes its
BatchNorm, learns at its own rate, and its runs save, resume, evaluate and export like any other.

Every test reads ../shared/weights (skipped with a reason where it is absent); nothing downloads.
The runs are 64 px, a few steps, eager: they test the machinery, not learning (benchmarks do).
"""
import contextlib
import io
import json

import keras
import numpy as np
import pytest
from conftest import REPO, read_log
from test_figure_dataset import write_figures

from figure_pose.core.confidence_maps import ARCH_CODECS
from figure_pose.data.figure_dataset import NO_AUGMENT, FigureBatches

import figure_pose.training.network as N
import figure_pose.training.training as T

WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_v2_1.0_imagenet_no_top.weights.h5"
SMALL = dict(n_joints=13, size=64, width=0.25)


@pytest.fixture(scope="session")
def imagenet_weights():
    """Path of the shared MobileNetV2 ImageNet weights; skip if absent."""
    if not WEIGHTS.exists():
        pytest.skip(f"MobileNetV2 ImageNet weights not found at {WEIGHTS} (needs ../shared beside the checkout)")
    return str(WEIGHTS)


def test_encoder_starts_from_the_imagenet_file_with_frozen_batchnorm(imagenet_weights):
    """The encoder's kernels and BatchNorm statistics are the file's; frozen BatchNorm is not
    trainable; the maps come out at stride 4 like the simple network's."""
    network = N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights=imagenet_weights)
    reference = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=imagenet_weights)
    encoder = network.get_layer("encoder")
    for name in ("Conv1", "block_12_depthwise", "block_16_project_BN"):
        for ours, theirs in zip(encoder.get_layer(name).weights, reference.get_layer(name).weights):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    batchnorms = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorms) == 51 and not any(layer.trainable for layer in batchnorms)
    assert [tuple(o.shape) for o in network.outputs] == [(None, 16, 16, 13)] * 3
    trained = N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights=None, train_batchnorm=True)
    assert all(layer.trainable for layer in trained.get_layer("encoder").layers)


def test_wrong_backbone_requests_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--backbone-weights .*no\.h5: no such file"):
        N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights=str(tmp_path / "no.h5"))
    with pytest.raises(ValueError, match="drop --arch original"):
        N.build_model("original", **SMALL, backbone="mobilenet_v2", backbone_weights=None)
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        N.build_model("simple", **SMALL, backbone="vgg")


def one_batch_trainer(weights, tmp_path, **compile_kw):
    """(network, trainer, batch): the 64-px backbone network from `weights`, compiled eagerly at
    lr 1e-3 with compile_kw (encoder_lr_scale, encoder_frozen_steps), and one batch of 4 figures."""
    keras.utils.set_random_seed(0)
    network = N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights=weights)
    data = write_figures(tmp_path / "coco.npy", n=4, size=64)
    batches = FigureBatches(data, batch_size=4, augment=NO_AUGMENT, shuffle=False)
    trainer = T.compile_model(T.make_trainer(network, batches, ARCH_CODECS["simple"]), lr=1e-3, run_eagerly=True,
                              **compile_kw)
    return network, trainer, batches[0]


@pytest.mark.parametrize("lr_scale", [0.0, 0.5])
def test_encoder_learns_at_its_own_rate(lr_scale, imagenet_weights, tmp_path):
    """--backbone-lr-scale s: the encoder's Adam steps are s x the decoder's (Adam's first step moves
    every weight by about lr x sign(gradient)); frozen BatchNorm statistics stay the file's."""
    network, trainer, batch = one_batch_trainer(imagenet_weights, tmp_path, encoder_lr_scale=lr_scale)
    encoder, decoder = network.get_layer("encoder"), network.get_layer("dec4_block1_2_conv")
    kernels = [encoder.get_layer("block_5_project").kernel, decoder.kernel]
    moving_mean = encoder.get_layer("block_5_project_BN").moving_mean
    before = [np.asarray(v).copy() for v in (*kernels, moving_mean)]
    trainer.train_on_batch(batch)
    encoder_step, decoder_step = (np.median(np.abs(np.asarray(k) - b)) for k, b in zip(kernels, before))
    assert decoder_step == pytest.approx(1e-3, rel=0.05)
    assert encoder_step == pytest.approx(lr_scale * 1e-3, rel=0.05, abs=1e-9)
    np.testing.assert_array_equal(np.asarray(moving_mean), before[2])


def test_a_frozen_encoder_warm_up_holds_the_encoder_then_lets_it_learn(imagenet_weights, tmp_path):
    """--backbone-frozen-steps 1: the first step moves the decoder only, the second the encoder too."""
    network, trainer, batch = one_batch_trainer(imagenet_weights, tmp_path, encoder_lr_scale=0.5,
                                                encoder_frozen_steps=1)
    kernels = [network.get_layer("encoder").get_layer("block_5_project").kernel,
               network.get_layer("dec4_block1_2_conv").kernel]
    steps = []
    for _ in range(2):
        before = [np.asarray(k).copy() for k in kernels]
        trainer.train_on_batch(batch)
        steps.append([np.median(np.abs(np.asarray(k) - b)) for k, b in zip(kernels, before)])
    (encoder_first, decoder_first), (encoder_second, _) = steps
    assert encoder_first == 0 and decoder_first > 1e-4
    assert encoder_second > 1e-5


@pytest.fixture(scope="module")
def backbone_run(imagenet_weights, tiny_data, tmp_path_factory):
    """A model.py run with the backbone (64 px, 1 epoch x 2 steps, encoder at half the rate), resumed
    for a second epoch; returns its folder."""
    import model as M
    out = tmp_path_factory.mktemp("backbone") / "run"
    argv = ["--data", tiny_data, "--out", str(out), "--size", "64", "--width", "0.25", "--batch-size", "4",
            "--steps-per-epoch", "2", "--backbone", "mobilenet_v2", "--backbone-weights", imagenet_weights,
            "--backbone-lr-scale", "0.5", "--run-eagerly", "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        M.main(argv + ["--epochs", "1"])
    (out.parent / "first_run.txt").write_text(printed.getvalue())
    M.main(argv + ["--epochs", "2", "--resume"])
    return out


def test_a_backbone_run_resumes_and_records_its_backbone(backbone_run):
    assert [row["epoch"] for row in read_log(backbone_run)] == ["0", "1"]
    config = json.loads((backbone_run / "config.json").read_text())
    assert (config["backbone"], config["backbone_batchnorm"], config["backbone_lr_scale"]) == ("mobilenet_v2", "frozen", 0.5)
    assert ("--backbone mobilenet_v2: encoder frozen for 300 steps, then at 0.5 x the lr; its BatchNorm frozen; "
            "decoder --width 0.25") in (backbone_run.parent / "first_run.txt").read_text()


def test_a_backbone_model_loads_plainly_evaluates_and_exports(backbone_run, tiny_data, tmp_path):
    """best.keras loads without custom objects (a new process would too: keras.applications layers
    and ours, registered), scores with the flip test, and its TFLite export predicts the same maps."""
    import evaluate as E
    from figure_pose.evaluation.inference import exported_predictor
    model = N.load_trained_model(str(backbone_run / "best.keras"))
    E.main(["--model", str(backbone_run / "best.keras"), "--data", tiny_data, "--out", str(tmp_path / "eval"),
            "--pictures", "0", "--quiet"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["figures"] == 16 and 0.0 <= metrics["pck@0.2"] <= 1.0
    E.main(["--model", str(backbone_run / "best.keras"), "--export", "tflite", "--out", str(tmp_path / "export"),
            "--quiet"])
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    reference = N.predict_maps(model, images)
    exported = exported_predictor(str(tmp_path / "export"))(None, images)
    np.testing.assert_allclose(exported, reference, atol=1e-3)


def test_the_heads_are_normalised_and_the_simple_ones_start_at_the_background():
    """BatchNorm-LeakyReLU before the heads of both networks (without it their tanh saturates at -1),
    head_norm=False removes it (benchmarks/bench_plateau.py); the simple network's heads start at
    HEAD_START (their bias atanh(-0.8)), the MobileNetV2 network's at 0 (as measured)."""
    def heads(**kw):
        network = N.build_model("simple", **SMALL, **kw)
        names = {layer.name for layer in network.layers}
        biases = {round(float(np.asarray(network.get_layer(f"{h}_conv").bias).mean()), 5)
                  for h in ("maps", "side_s16", "side_s8")}
        return {"maps_bn", "side_s16_bn", "side_s8_bn"} <= names, biases
    mobilenet = dict(backbone="mobilenet_v2", backbone_weights=None)
    normed, biases = heads()
    assert normed and biases == {round(float(np.arctanh(-0.8)), 5)} and N.HEAD_START == -0.8
    assert heads(head_norm=False) == (False, {0.0})
    assert heads(**mobilenet) == (True, {0.0}) and heads(**mobilenet, head_norm=False) == (False, {0.0})


def test_an_offline_imagenet_download_is_one_line(monkeypatch):
    """weights "imagenet" with no internet: keras.utils.get_file's bare Exception becomes one line
    naming the flag and the way out (simulated: tests never download)."""
    from figure_pose.core.cli import InputError

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2]")  # noqa: TRY002
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(InputError, match=r"^--backbone-weights imagenet: Keras could not download .*URL fetch "
                                         r"failure.*give the path of a MobileNetV2 \.weights\.h5 file instead$"):
        N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights="imagenet")


def test_imagenet_is_the_224_px_checkpoint_at_every_input_size(monkeypatch, imagenet_weights):
    """weights "imagenet" asks Keras for the official 224-px file (the checkpoint measured, whatever
    --size is), not keras.applications' pick by input size (..._128_no_top.h5 at 128 px); the
    download is simulated by the shared file."""
    asked = []

    def get_file(fname, origin, **kwargs):
        asked.append((fname, origin, kwargs.get("cache_subdir")))
        return imagenet_weights
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    network = N.build_model("simple", **SMALL, backbone="mobilenet_v2", backbone_weights="imagenet")
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert asked == [(name, "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + name,
                      "models")]
    reference = keras.applications.MobileNetV2(input_shape=(64, 64, 3), include_top=False, weights=imagenet_weights)
    np.testing.assert_array_equal(np.asarray(network.get_layer("encoder").get_layer("Conv1").kernel),
                                  np.asarray(reference.get_layer("Conv1").kernel))
