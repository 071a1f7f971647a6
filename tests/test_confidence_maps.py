"""The confidence-map codec: rendering and decoding are inverses."""
import numpy as np
import pytest

from figure_pose.core.confidence_maps import (canvas_to_map, decode_keypoints, dequantise_maps, flip_maps,
                                              map_to_canvas, quantise_maps, render_confidence_maps)
from figure_pose.core.figures import flip_permutation, joint_names, mirror_x, rescale_pixel_coords


def random_keypoints(rng, n=13, lo=40.0, hi=280.0):
    return np.c_[rng.uniform(lo, hi, (n, 2)), rng.integers(0, 3, n)].astype(np.float32)


def test_map_coordinates_round_trip():
    xy = np.random.default_rng(0).uniform(-10, 330, (100, 2))
    np.testing.assert_allclose(map_to_canvas(canvas_to_map(xy)), xy, atol=1e-12)
    assert canvas_to_map([1.5])[0] == 0.0            # map pixel 0 is centred on canvas 1.5


def test_peaks_at_keypoints_subpixel_and_unlabelled_maps_empty():
    rng = np.random.default_rng(0)
    keypoints = random_keypoints(rng)
    maps = render_confidence_maps(keypoints, 80)
    assert maps.shape == (80, 80, 13) and maps.dtype == np.float32
    labelled = keypoints[:, 2] > 0
    assert np.all(maps[..., ~labelled] == 0)
    assert np.all(maps[..., labelled].max(axis=(0, 1)) > 0.75)
    decoded = decode_keypoints(dequantise_maps(quantise_maps(maps)))
    errors = np.linalg.norm(decoded[labelled, :2] - keypoints[labelled, :2], axis=1)
    assert errors.max() < 0.1                         # sub-pixel, on uint8-stored maps
    assert np.all(decoded[~labelled, 2] == 0)


@pytest.mark.parametrize("refine,limit", [("none", 2.9), ("quarter", 1.5), ("dark", 0.1)])
def test_refinements_are_ordered(refine, limit):
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(20):
        kp = random_keypoints(rng)
        kp[:, 2] = 2
        decoded = decode_keypoints(render_confidence_maps(kp, 80), refine=refine)
        errors.append(np.linalg.norm(decoded[:, :2] - kp[:, :2], axis=1))
    assert np.max(errors) < limit


def test_flip_maps_mirrors_and_swaps_joints():
    names = joint_names(13)
    rng = np.random.default_rng(2)
    kp = random_keypoints(rng)
    kp[:, 2] = 2
    flipped = decode_keypoints(flip_maps(render_confidence_maps(kp, 80), flip_permutation(names)))
    left, right = names.index("left_wrist"), names.index("right_wrist")
    expected = np.array([mirror_x(kp[right, 0], 320), kp[right, 1]])
    assert np.abs(flipped[left, :2] - expected).max() < 0.1


def test_flip_maps_twice_gives_the_maps_back():
    """The mirror and the left/right swap are each their own inverse: maps flipped twice are the maps."""
    for n_joints in (13, 17):
        perm = flip_permutation(joint_names(n_joints))
        maps = render_confidence_maps(random_keypoints(np.random.default_rng(n_joints), n=n_joints), 80)
        assert not np.array_equal(flip_maps(maps, perm), maps)
        np.testing.assert_array_equal(flip_maps(flip_maps(maps, perm), perm), maps)


def test_batched_decode_matches_single():
    rng = np.random.default_rng(3)
    maps = np.stack([render_confidence_maps(random_keypoints(rng), 80) for _ in range(4)])
    batched = decode_keypoints(maps.reshape(2, 2, 80, 80, 13))
    assert batched.shape == (2, 2, 13, 3)
    np.testing.assert_allclose(batched[1, 0], decode_keypoints(maps[2]))


def test_codec_encodes_the_same_on_the_device():
    """encode (NumPy) and encode_on_device (keras.ops) are one formula: equal maps."""
    from keras import ops

    from figure_pose.core.confidence_maps import ARCH_CODECS
    codec = ARCH_CODECS["simple"]
    kp = np.stack([random_keypoints(np.random.default_rng(s), lo=0, hi=127) for s in range(3)])
    maps, weights = codec.encode(kp, 128)
    assert maps.shape == (3, 32, 32, 13) and weights.tolist() == (kp[..., 2] > 0).astype(float).tolist()
    on_device = codec.encode_on_device(ops.convert_to_tensor(kp[..., :2]), ops.convert_to_tensor(weights), 128, ops)
    np.testing.assert_allclose(np.asarray(on_device), maps, atol=1e-6)


def test_device_decoding_matches_quarter_offset():
    """decode_on_device (argmax + quarter offset, for PCK during training) = decode(refine='quarter')."""
    from keras import ops

    from figure_pose.core.confidence_maps import ConfidenceMapCodec
    codec = ConfidenceMapCodec(stride=4, sigma=8)
    kp = np.stack([random_keypoints(np.random.default_rng(s)) for s in range(4)])
    kp[..., 2] = 2
    maps, _ = codec.encode(kp, 320)
    on_device = np.asarray(codec.decode_on_device(ops.convert_to_tensor(maps), ops))
    np.testing.assert_allclose(on_device, codec.decode(maps, refine="quarter")[..., :2], atol=1e-4)
    assert np.abs(on_device - kp[..., :2]).max() < 1.5


def test_codec_of_a_model_and_on_another_canvas():
    """A model's codec comes from its shapes (original: stride 1, sigma 8 map px); decoding its
    maps on a canvas k times larger gives k times the coordinates (pixel-centre convention)."""
    from figure_pose.core.confidence_maps import SIGMA, codec_of_model
    assert codec_of_model(320, 80).to_json() == {"stride": 4.0, "sigma_px": SIGMA, "sigma_map_px": SIGMA / 4}
    assert codec_of_model(128, 128).to_json()["sigma_map_px"] == SIGMA
    codec = codec_of_model(128, 32)
    kp = random_keypoints(np.random.default_rng(5), lo=30, hi=98)
    kp[:, 2] = 2
    maps, _ = codec.encode(kp, 128)
    on_canvas = codec.rescaled(2.5).decode(maps)[:, :2]
    np.testing.assert_allclose(on_canvas, rescale_pixel_coords(kp[:, :2], 2.5), atol=0.1)
