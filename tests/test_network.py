"""network.py: output shapes, FLOPs checked by hand, save and load."""
import keras
import numpy as np
import pytest

import figure_pose.training.network as N

SMALL = dict(n_joints=13, size=64, width=0.25)


@pytest.mark.parametrize("arch, map_size", [("simple", 16), ("original", 64)])
def test_output_shapes(arch, map_size):
    model = N.build_model(arch, **SMALL)
    outs = model(np.zeros((2, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outs] == [(2, map_size, map_size, 13)] * 3
    assert model.output_names[0] == "maps"


def test_count_flops_of_a_hand_checkable_model():
    """2 x multiply-adds per output pixel and kernel weight: a 3x3 conv 3 -> 4 at 8 x 8, then a
    strided 1x1 conv 4 -> 2 (4 x 4 out), then a dense 32 -> 5."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.Conv2D(2, 1, strides=2)(x)
    outputs = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    assert N.count_flops(keras.Model(inputs, outputs)) == 2 * 8 * 8 * 3 * 3 * 3 * 4 + 2 * 4 * 4 * 4 * 2 + 2 * 32 * 5


def test_fused_batch_norm_is_keras_batch_normalization():
    """network.BatchNorm (TensorFlow's fused kernel) gives keras BatchNormalization's outputs, moving
    statistics (momentum 0.9, biased batch variance) and gradients, in training and inference."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 8, 8, 5)).astype("float32"))
    layers = [keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), N.BatchNorm(momentum=0.9, epsilon=1e-5)]
    for layer in layers:
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 5).astype("float32"))
        layer.beta.assign(np.linspace(-1, 1, 5).astype("float32"))
    results = []
    for layer in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y ** 3)
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        layer(x, training=True)  # a second step: the moving statistics follow the momentum rule
        results.append([y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)])
    assert float(tf.math.reduce_std(results[0][0])) > 0.5  # a real normalisation, not a pass-through
    graph = tf.function(lambda x: layers[1](x, training=True)).get_concrete_function(x).graph
    assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}  # the fused kernel, not keras' ops
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value), np.asarray(keras_value), rtol=1e-4, atol=1e-4)


def conv_flops(out_side, kernel, c_in, c_out):
    """FLOPs of a square convolution with an out_side x out_side output."""
    return 2 * out_side * out_side * kernel * kernel * c_in * c_out


def bottleneck_flops(side, c_in, a, c, mode):
    """network.bottleneck on a side x side input: 1x1 (a) -> 3x3 (a) -> 1x1 (c) and a projection
    shortcut when the shape changes; "up" makes its 3x3 and the shortcut sub-pixel convs (4x channels)."""
    if mode == "up":
        return (conv_flops(side, 1, c_in, a) + conv_flops(side, 3, a, 4 * a) + conv_flops(2 * side, 1, a, c)
                + conv_flops(side, 1, c_in, 4 * c))
    out = side // 2 if mode == "down" else side
    shortcut = conv_flops(out, 1, c_in, c) if mode == "down" or c_in != c else 0
    return conv_flops(side, 1, c_in, a) + conv_flops(out, 3, a, a) + conv_flops(out, 1, a, c) + shortcut


def stage_flops(side, c_in, c, blocks, mode="same"):
    """network.stage: one bottleneck of `mode` (inner width c / 4), then blocks - 1 plain ones."""
    out = {"down": side // 2, "up": 2 * side, "same": side}[mode]
    return bottleneck_flops(side, c_in, c // 4, c, mode) + (blocks - 1) * bottleneck_flops(out, c, c // 4, c, "same")


def simple_network_flops(s, joints, c2, c4, c8, c16, c32):
    """The simple network at depth 1 (network.simple_network's docstring): stem, encoder to stride
    32, decoder with concatenated skips back to stride 4, heads (1x1 convs) at strides 16, 8 and 4."""
    encoder = (conv_flops(s // 2, 3, 3, c2) + stage_flops(s // 2, c2, c4, 2, "down")
               + stage_flops(s // 4, c4, c8, 2, "down") + stage_flops(s // 8, c8, c16, 2, "down")
               + stage_flops(s // 16, c16, c32, 3, "down"))
    decoder = (stage_flops(s // 32, c32, c16, 1, "up") + stage_flops(s // 16, 2 * c16, c16, 1)
               + stage_flops(s // 16, c16, c8, 1, "up") + stage_flops(s // 8, 2 * c8, c8, 1)
               + stage_flops(s // 8, c8, c4, 1, "up") + stage_flops(s // 4, 2 * c4, c4, 2))
    heads = conv_flops(s // 16, 1, c16, joints) + conv_flops(s // 8, 1, c8, joints) + conv_flops(s // 4, 1, c4, joints)
    return encoder + decoder + heads


@pytest.mark.parametrize("size, width, channels", [(64, 0.25, (16, 16, 32, 64, 64)),        # 16 is the minimum
                                                   (320, 1.0, (16, 64, 128, 256, 256))])   # --width x (16 .. 256)
def test_flops_of_the_simple_network_match_its_layout(size, width, channels):
    expected = simple_network_flops(size, 13, *channels)
    assert N.count_flops(N.build_model("simple", 13, size, width)) == expected
    if size == 320:
        assert round(expected / 1e9, 2) == 1.51  # docs/results.md, "Network size and training speed"


def test_flops_of_the_original_match_the_reference():
    original = N.count_flops(N.build_model("original", 13, 320))
    simple = N.count_flops(N.build_model("simple", 13, 320))
    assert abs(original / 1e9 - 11.2) < 0.1  # REFERENCE.md: 11.2 GFLOPs
    assert original / simple >= 4


def test_save_load_same_predictions(tmp_path):
    """predict_maps = the main output of the preprocessed canvases in [0, 1], the same after a save and load."""
    model = N.build_model("simple", **SMALL)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = N.load_trained_model(path)
    canvases = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    a, b = N.predict_maps(model, canvases), N.predict_maps(loaded, canvases)
    assert a.shape == (3, 16, 16, 13) and a.dtype == np.float32
    raw = np.asarray(model(N.preprocess_images(canvases), training=False)[0])
    np.testing.assert_allclose(a, (raw + 1.0) / 2.0, atol=1e-6)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_load_rejects_foreign_files(tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a figure-pose model"):
        N.load_trained_model(str(text))
    other = tmp_path / "other.keras"
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(str(other))
    with pytest.raises(ValueError, match="is not a figure-pose model"):
        N.load_trained_model(str(other))


def test_host_glorot_uniform_is_keras_glorot_uniform_and_follows_the_seed():
    """The kernels drawn by NumPy have Keras' default distribution (uniform in +-sqrt(6 / (fan_in
    + fan_out)), fans times kh * kw), are float32, and repeat under keras.utils.set_random_seed."""
    shape = (3, 3, 32, 64)
    limit = np.sqrt(6.0 / (9 * 32 + 9 * 64))
    keras.utils.set_random_seed(7)
    ours = N.HostGlorotUniform()(shape, dtype="float32")
    keras.utils.set_random_seed(7)
    again = N.HostGlorotUniform()(shape, dtype="float32")
    theirs = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=1)(shape))
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_array_equal(ours, again)
    for kernel in (ours, theirs):
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.99 * limit                     # the whole range is used
        assert abs(kernel.std() - limit / np.sqrt(3)) < 0.02 * limit   # a uniform's std
    model = N.build_model("simple", 13, 64, 0.5)
    kernels = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert kernels and all(isinstance(k.kernel_initializer, N.HostGlorotUniform) for k in kernels)
