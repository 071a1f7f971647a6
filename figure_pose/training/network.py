"""The figure pose network: a U-Net of pre-activation residual bottlenecks, and the original's.

    build_model("simple", n_joints=13, size=128, width=0.5)   # (B, 128, 128, 3) -> 3 x (B, 32, 32, 13)

Input: a figure canvas (B, S, S, 3) in [-1, 1] (`preprocess_images` of uint8 RGB). Output:
[maps, side_s16, side_s8], one confidence map per joint in tanh range [-1, 1]; `maps` is the
prediction, the two side outputs are the deep supervision of the decoder stages at stride 16
and 8 (upsampled to the maps' size). `simple` puts the maps at stride 4 (S / 4);
`original` is a faithful port of the original generator (REFERENCE.md section 2), maps at
stride 1. Layer names say where a layer is (`down2_block1_conv3`, `side_s8_conv`), never what
size it has at one input size. The codec that turns maps into joints is confidence_maps.py.
"""
import os
import zipfile

import cv2
import keras
import numpy as np
from keras import layers, ops

from figure_pose.core.cli import InputError
from figure_pose.core.confidence_maps import ConfidenceMapCodec

PACKAGE = "figure_pose"  # the registered name space of our layers in .keras files


@keras.saving.register_keras_serializable(package=PACKAGE)
class DepthToSpace(layers.Layer):
    """Sub-pixel upsampling: (B, H, W, 4C) -> (B, 2H, 2W, C) (pixel shuffle)."""

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x):
        return ops.depth_to_space(x, self.block_size, data_format="channels_last")

    def compute_output_shape(self, shape):
        b = self.block_size
        return (shape[0], shape[1] and shape[1] * b, shape[2] and shape[2] * b, shape[3] // (b * b))

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNorm(layers.BatchNormalization):
    """keras BatchNormalization that runs TensorFlow's fused kernel (FusedBatchNormV3: one op
    instead of about ten) on the TensorFlow backend for (B, H, W, C) inputs; elsewhere (JAX,
    masks, renorm, synchronized, other ranks) keras' own code. Same maths, variables and
    moving-statistics update (keras' momentum rule with the biased batch variance), so weights,
    backups and --init-weights are interchangeable, and older .keras files load as before.
    Training 1.2-1.5x faster on 2 CPU cores (benchmarks/bench_train.py: the 320-px simple
    network at batch 8, 14.7 -> 18.0 figures/s; docs/results.md); GPUs have the kernel too."""

    def call(self, inputs, training=None, mask=None):
        if (keras.backend.backend() != "tensorflow" or mask is not None or self.renorm or self.synchronized
                or len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.scale and self.center)):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TensorFlow backend is running, so this is loaded already
        x = ops.cast(inputs, "float32")  # keras' rule: statistics in float32 also under mixed precision
        gamma, beta = ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32")
        if training and self.trainable:
            y, mean, corrected_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros_like(gamma), variance=tf.ones_like(gamma),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")  # values per channel
            variance = corrected_variance * (n - 1.0) / n  # the kernel returns the unbiased variance
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            y = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)[0]
        return ops.cast(y, self.compute_dtype)


def make_divisible(value: float, divisor: int = 8, min_value: int = 16) -> int:
    """timm's rule: `value` rounded to a multiple of `divisor`, at least `min_value`, never
    more than 10 % below `value` (channel counts of a --width multiplied network)."""
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@keras.saving.register_keras_serializable(package=PACKAGE)
class HostGlorotUniform(keras.initializers.Initializer):
    """Keras' default kernel initializer (Glorot uniform), drawn by NumPy on the host.

    Why: on the JAX backend Keras draws every initial kernel with a compiled program of its
    own, one per kernel shape: 13.8 s of `build_model` at 320 px on a CPU (1.3 s this way),
    and part of the 42.6 s of set-up measured on an H100. NumPy draws the same distribution
    at once. Its global generator is seeded by `keras.utils.set_random_seed` (model.py
    --seed), so runs stay reproducible, and both backends start from the same weights.
    Kernel (kh, kw, in, out): limit sqrt(6 / (fan_in + fan_out)) with fan_in = kh * kw * in,
    fan_out = kh * kw * out.
    """

    def __call__(self, shape, dtype=None):
        receptive = int(np.prod(shape[:-2]))
        limit = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
        dtype = keras.backend.standardize_dtype(dtype or "float32")
        return np.random.uniform(-limit, limit, shape).astype(dtype)


def conv(x, filters: int, kernel: int, stride: int = 1, name: str = "conv"):
    """Bias-free 'same' convolution (B, H, W, C) -> (B, H/stride, W/stride, filters)."""
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=HostGlorotUniform(), name=name)(x)


def norm_act(x, name: str):
    """BatchNorm -> LeakyReLU(0.2), shape unchanged: what every conv of a pre-activation network reads."""
    x = BatchNorm(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.LeakyReLU(negative_slope=0.2, name=f"{name}_act")(x)


def norm_act_conv(x, filters: int, kernel: int, stride: int = 1, name: str = "unit"):
    """The pre-activation unit: BatchNorm -> LeakyReLU(0.2) -> conv; (B, H, W, C) -> (B, H/s, W/s, filters)."""
    return conv(norm_act(x, name), filters, kernel, stride, name=f"{name}_conv")


def subpixel_conv(x, filters: int, kernel: int, name: str):
    """Conv to 4 * filters channels then pixel shuffle: (B, H, W, C) -> (B, 2H, 2W, filters)."""
    return DepthToSpace(2, name=f"{name}_shuffle")(conv(x, 4 * filters, kernel, name=f"{name}_conv"))


def bottleneck(x, a: int, b: int, c: int, mode: str = "same", dropout: float = 0.0, name: str = "block"):
    """Pre-activation bottleneck 1x1(a) -> 3x3(b) -> 1x1(c), each BN-LReLU-conv, plus a shortcut.

    mode: "same" (B, H, W, C) -> (B, H, W, c); "down" (3x3 at stride 2) -> (B, H/2, W/2, c);
    "up" (3x3 sub-pixel conv) -> (B, 2H, 2W, c). The shortcut is the input when shapes
    match, else a (strided / sub-pixel) 1x1 conv. Dropout (if any) follows the sum.
    """
    y = norm_act_conv(x, a, 1, name=f"{name}_1")
    if mode == "up":
        y = subpixel_conv(norm_act(y, f"{name}_2"), b, 3, f"{name}_2")
    else:
        y = norm_act_conv(y, b, 3, stride=2 if mode == "down" else 1, name=f"{name}_2")
    y = norm_act_conv(y, c, 1, name=f"{name}_3")
    if mode == "up":
        shortcut = subpixel_conv(x, c, 1, f"{name}_shortcut")
    elif mode == "down" or x.shape[-1] != c:
        shortcut = conv(x, c, 1, stride=2 if mode == "down" else 1, name=f"{name}_shortcut")
    else:
        shortcut = x
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Dropout(dropout, name=f"{name}_dropout")(y) if dropout else y


def stage(x, c: int, blocks: int, mode: str = "same", ratio: int = 4, dropout: float = 0.0, name: str = "stage"):
    """One bottleneck of `mode` to c channels (inner width c / ratio), then `blocks` - 1 plain ones."""
    a = max(4, c // ratio)
    x = bottleneck(x, a, a, c, mode, dropout, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = bottleneck(x, a, a, c, name=f"{name}_block{i}")
    return x


# Where the simple network's heads start, in tanh range: near the background's -1, not at 0.
# Its heads are normalised (BatchNorm-LeakyReLU), so only the conv's bias can move their mean,
# by about the learning rate a step; from 0 the maps take hundreds of steps to reach the
# background (the 64-px runs of the tests then end below the mean pose). Not -1: tanh saturates.
HEAD_START = -0.8


def head(x, n_joints: int, upsample: int = 1, before: bool = False, norm: bool = False, start: float = 0.0,
         name: str = "maps"):
    """1x1 conv to n_joints then tanh, upsampled x `upsample` (before the conv if `before`).

    (B, H, W, C) -> (B, H*upsample, W*upsample, n_joints), float32 (also under mixed precision).
    norm: BatchNorm -> LeakyReLU first, as a pre-activation network ends. Without it the conv
    reads the un-normalised residual sum, and Adam can drive the tanh into saturation at -1
    (every map background, zero gradient): the MobileNetV2 decoder did so within 40 steps,
    the simple network at 256 and 320 px too (docs/results.md "The background plateau").
    start: the tanh value the head outputs before training (its bias is atanh(start)).
    """
    if norm:
        x = norm_act(x, name)
    if upsample > 1 and before:  # the original's order (wasteful: a 1x1 conv at full size)
        x = layers.UpSampling2D(upsample, interpolation="nearest", name=f"{name}_up")(x)
    bias = keras.initializers.Constant(float(np.arctanh(start))) if start else "zeros"
    x = layers.Conv2D(n_joints, 1, use_bias=True, kernel_initializer=HostGlorotUniform(), bias_initializer=bias,
                      name=f"{name}_conv")(x)
    if upsample > 1 and not before:
        x = layers.UpSampling2D(upsample, interpolation="bilinear", name=f"{name}_up")(x)
    return layers.Activation("tanh", dtype="float32", name=name)(x)


def unet_decoder(x, skips, n_joints: int, width: float, depth: int, head_norm: bool = True, head_start: float = 0.0):
    """The U-Net decoder from stride 32 back to stride 4, with deep-supervision side outputs.

    x (B, S/32, S/32, C); skips (s16, s8, s4): encoder features at strides 16, 8 and 4.
    -> [maps (B, S/4, S/4, J), side_s16, side_s8 (B, S/4, S/4, J)]; the side outputs come
    from the stride-16 and stride-8 stages, projected there and upsampled. head_norm: each
    head starts with BatchNorm-LeakyReLU; head_start: the heads' output before training (see `head`).
    """
    s16, s8, s4 = skips
    c4, c8, c16 = (make_divisible(c * width) for c in (64, 128, 256))
    x = stage(x, c16, 1, "up", dropout=0.1, name="up16")
    x = stage(layers.Concatenate(name="skip16")([x, s16]), c16, depth, name="dec16")   # (B, S/16, S/16, c16)
    side_s16 = head(x, n_joints, 4, norm=head_norm, start=head_start, name="side_s16")  # (B, S/4, S/4, J)
    x = stage(x, c8, 1, "up", dropout=0.1, name="up8")
    x = stage(layers.Concatenate(name="skip8")([x, s8]), c8, depth, name="dec8")       # (B, S/8, S/8, c8)
    side_s8 = head(x, n_joints, 2, norm=head_norm, start=head_start, name="side_s8")    # (B, S/4, S/4, J)
    x = stage(x, c4, 1, "up", dropout=0.1, name="up4")
    x = stage(layers.Concatenate(name="skip4")([x, s4]), c4, depth + 1, name="dec4")   # (B, S/4, S/4, c4)
    return [head(x, n_joints, norm=head_norm, start=head_start, name="maps"), side_s16, side_s8]


def simple_network(inputs, n_joints: int, width: float, depth: int, head_norm: bool = True):
    """(B, S, S, 3) -> [maps (B, S/4, S/4, J), side_s16, side_s8 (B, S/4, S/4, J)].

    Encoder of residual bottlenecks to strides 2 (stem), 4, 8, 16, 32; the U-Net decoder, its
    heads normalised and starting at HEAD_START (without both, 256 and 320 px stay on the
    background plateau: docs/results.md "The background plateau"); head_norm False: plain
    heads starting at 0, as before (benchmarks/bench_plateau.py's comparison).
    """
    c2, c4, c8, c16, c32 = (make_divisible(c * width) for c in (16, 64, 128, 256, 256))
    x = conv(inputs, c2, 3, stride=2, name="stem")                               # (B, S/2, S/2, c2)
    s4 = stage(x, c4, depth + 1, "down", name="down4")                           # (B, S/4, S/4, c4)
    s8 = stage(s4, c8, depth + 1, "down", name="down8")                          # (B, S/8, S/8, c8)
    s16 = stage(s8, c16, depth + 1, "down", name="down16")                       # (B, S/16, S/16, c16)
    x = stage(s16, c32, 2 * depth + 1, "down", name="down32")                    # (B, S/32, S/32, c32)
    return unet_decoder(x, (s16, s8, s4), n_joints, width, depth, head_norm, HEAD_START if head_norm else 0.0)


def original_network(inputs, n_joints: int, width: float, depth: int):
    """The original generator (REFERENCE.md section 2): (B, S, S, 3) -> 3 x (B, S, S, J).

    Encoder widths 32, 64, 128, 256, 256, 512 at strides 1 .. 32, five sub-pixel up stages
    back to stride 1 with skips, side outputs after the stride-16 and stride-4 stages,
    upsampled before their conv.
    """
    c = [make_divisible(ch * width) for ch in (32, 64, 128, 256, 256, 256, 512, 16)]
    x = bottleneck(inputs, c[0] // 4, c[0] // 4, c[0], name="enc1_in")
    skips = [stage(x, c[0], depth, name="enc1")]                                  # (B, S, S, c0)
    for ch, stride in zip(c[1:5], (2, 4, 8, 16)):                                 # (B, S/2 .. S/16, ch)
        skips.append(stage(skips[-1], ch, depth + 2, "down", name=f"down{stride}"))
    x = bottleneck(skips[-1], c[5] // 2, c[5] // 2, c[5], "down", name="down32")  # (B, S/32, S/32, c5)
    for i in range(2 * depth):
        x = bottleneck(x, c[5] // 2, c[5] // 2, c[5], name=f"bottom{i + 1}")
    for i in range(4 * depth):
        x = bottleneck(x, c[6] // 4, c[6] // 4, c[6], name=f"middle{i + 1}")
    sides = {}
    for ch, skip, stride in zip((256, 256, 128, 64, 32), reversed(skips), (16, 8, 4, 2, 1)):
        ch = make_divisible(ch * width)
        x = stage(x, ch, 1, "up", dropout=0.1, name=f"up{stride}")
        x = stage(layers.Concatenate(name=f"skip{stride}")([x, skip]), ch, 2 * depth, name=f"dec{stride}")
        if stride in (16, 4):                                                     # (B, S, S, J) each
            sides[stride] = head(x, n_joints, stride, before=True, name=f"side_s{stride}")
    x = stage(stage(x, c[7], 1, name="out1"), c[7], 2 * depth, name="out2")      # (B, S, S, c7)
    return [head(x, n_joints, name="maps"), sides[16], sides[4]]


# keras.applications' MobileNetV2 (alpha 1.0): the layers whose outputs the decoder takes, at
# strides 4, 8, 16 and 32 (24, 32, 96 and 320 channels): the linear bottlenecks, not the
# ReLU6 of its last 1x1 conv (1280 sparse channels, whose batch statistics at batch 8 are
# far from their moving averages: inference then diverged from training). Its input range is
# [-1, 1], like ours.
MOBILENET_V2_SKIPS = ("block_2_add", "block_5_add", "block_12_add", "block_16_project_BN")
BACKBONES = ("mobilenet_v2",)


# The official ImageNet file of keras.applications' MobileNetV2 (alpha 1.0, no top) trained at
# 224 px, the checkpoint every measurement used (../shared/weights holds the same values).
# Left to itself, keras.applications fetches the checkpoint of the input size (..._1.0_128_no_top.h5
# at --size 128), other weights than those measured; this file fits any input size.
MOBILENET_V2_IMAGENET_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
MOBILENET_V2_IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"


def backbone_weights(weights: str | None):
    """keras.applications' `weights` for --backbone-weights: "imagenet" (the 224-px ImageNet file,
    downloaded once by Keras into ~/.keras/models; offline: InputError, one line), None or "none"
    (random), else a .weights.h5 path, which must exist (FileNotFoundError, one line)."""
    if weights in (None, "none"):
        return None
    if weights == "imagenet":
        try:
            return keras.utils.get_file(MOBILENET_V2_IMAGENET_FILE, MOBILENET_V2_IMAGENET_URL + MOBILENET_V2_IMAGENET_FILE,
                                        cache_subdir="models")
        except Exception as err:  # keras.utils.get_file raises a bare Exception when it cannot download
            raise InputError(f"--backbone-weights imagenet: Keras could not download MobileNetV2's ImageNet weights "
                             f"({err}); give the path of a MobileNetV2 .weights.h5 file instead") from None
    if os.path.isfile(weights):
        return weights
    raise FileNotFoundError(f"--backbone-weights {weights}: no such file (imagenet, none or a "
                            "MobileNetV2 .weights.h5 file)")


def mobilenet_v2_encoder(size: int, weights: str | None = "imagenet", train_batchnorm: bool = False):
    """keras.applications' MobileNetV2 as a U-Net encoder, fine-tuned end to end.

    (B, size, size, 3) in [-1, 1] -> [s4 (B, S/4, S/4, 24), s8 (.., S/8, 32), s16 (.., S/16, 96),
    s32 (B, S/32, S/32, 320)]. weights: see backbone_weights. train_batchnorm False keeps the
    ImageNet BatchNorm statistics and scales frozen (the layers run in inference mode), which
    is what small batches need (docs/training.md "Transfer learning"); its kernels still train.
    """
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                          weights=backbone_weights(weights))
    if not train_batchnorm:
        for layer in base.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    return keras.Model(base.input, [base.get_layer(name).output for name in MOBILENET_V2_SKIPS],
                       name="encoder")


def mobilenet_v2_network(inputs, n_joints: int, width: float, depth: int, weights="imagenet",
                         train_batchnorm: bool = False, head_norm: bool = True):
    """(B, S, S, 3) -> [maps (B, S/4, S/4, J), side_s16, side_s8]: the MobileNetV2 encoder
    (mobilenet_v2_encoder), then the U-Net decoder from its stride-32 features."""
    encoder = mobilenet_v2_encoder(inputs.shape[1], weights, train_batchnorm)
    s4, s8, s16, s32 = encoder(inputs)                                           # strides 4, 8, 16, 32
    return unet_decoder(s32, (s16, s8, s4), n_joints, width, depth, head_norm)


def build_model(arch="simple", n_joints=13, size=320, width=1.0, depth=1, backbone=None,
                backbone_weights="imagenet", train_batchnorm=False, head_norm=True):
    """Functional model (B, size, size, 3) in [-1, 1] -> [maps, side_s16, side_s8] in tanh range.

    simple: maps at size / 4; original: maps at size. size must be a multiple of 32.
    backbone: None (the arch's own encoder) or "mobilenet_v2" (with arch simple: a pretrained
    encoder, mobilenet_v2_network), from `backbone_weights`. head_norm: BatchNorm-LeakyReLU
    before the heads of the U-Net decoder (simple's heads then start at HEAD_START, the
    backbone's at 0, as measured); False: plain heads, which saturate
    (benchmarks/bench_plateau.py's comparison).
    """
    if size % 32:
        raise ValueError(f"--size {size} must be a multiple of 32")
    if arch not in ("original", "simple"):
        raise ValueError(f"unknown arch {arch!r}; choose one of ['original', 'simple']")
    if backbone not in (None, *BACKBONES):
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
    if backbone and arch != "simple":
        raise ValueError(f"--backbone {backbone} builds the simple network's decoder; drop --arch {arch}")
    inputs = keras.Input((size, size, 3), name="figure")
    if backbone:
        outputs = mobilenet_v2_network(inputs, n_joints, width, depth, backbone_weights, train_batchnorm,
                                       head_norm)
        return keras.Model(inputs, outputs, name=f"figure_pose_{backbone}")
    if arch == "simple":
        outputs = simple_network(inputs, n_joints, width, depth, head_norm)
    else:
        outputs = original_network(inputs, n_joints, width, depth)
    return keras.Model(inputs, outputs, name=f"figure_pose_{arch}")


def all_layers(model):
    """Every layer of `model`, nested models (a backbone) expanded, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def count_flops(model) -> int:
    """Forward FLOPs (2 x multiply-adds) of one input, from the conv and dense layer shapes."""
    total = 0
    for layer in all_layers(model):
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            out = layer.output.shape
            total += 2 * out[1] * out[2] * kh * kw * cin * cout
        elif isinstance(layer, layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


def preprocess_images(canvases_uint8):
    """uint8 RGB canvases (B, S, S, 3) -> float32 (B, S, S, 3) in [-1, 1] (the network's input range)."""
    return np.asarray(canvases_uint8, dtype=np.float32) / 127.5 - 1.0


def load_trained_model(path):
    """A model saved by model.py (a .keras file), loaded without custom_objects.

    Raises ValueError("<path> is not a figure-pose model ...") for anything else, and for a
    model whose weights hold a NaN or an infinity (every user of a .keras file loads it here).
    """
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a figure-pose model (not a .keras file)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - any failure means "not ours"
        raise ValueError(f"{path} is not a figure-pose model ({type(err).__name__}: {err})") from None
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    outs = [tuple(o.shape) for o in model.outputs]
    ok = (len(shape) == 4 and shape[3] == 3 and shape[1] == shape[2] and outs
          and all(len(o) == 4 and o[1] == o[2] and shape[1] % o[1] == 0 for o in outs))
    if not ok:
        raise ValueError(f"{path} is not a figure-pose model (inputs {shape}, outputs {outs})")
    bad = [w.path for w in model.weights if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
    if bad:  # a run that diverged: its maps would be NaN, and score as a model that found nothing
        raise ValueError(f"{path} holds NaN or infinite weights ({len(bad)} of {len(model.weights)} variables, first {bad[0]}): "
                         "the run that saved it diverged; use an earlier checkpoint or train again")
    return model


def predict_maps(model, canvases_uint8, batch_size=16):
    """Main-output maps float32 (N, M, M, J) in [0, 1] for uint8 canvases (N, S, S, 3).

    Canvases of another size than the model's input are resized (area); the map stride
    is then S / M in canvas pixels.
    """
    canvases = np.asarray(canvases_uint8)
    size = model.inputs[0].shape[1]
    if canvases.shape[1] != size:
        canvases = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in canvases])
    out = model.predict(preprocess_images(canvases), batch_size=batch_size, verbose=0)
    return ConfidenceMapCodec.from_tanh(out[0] if isinstance(out, (list, tuple)) else out)
