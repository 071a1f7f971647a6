"""Crop geometry and the record format: every geometric step round-trips."""
import cv2
import numpy as np
import pytest


from figure_pose.core.figures import (JOINT_SETS, apply_affine, canvas_image, crop_to_record, figure_dtype,
                                      figure_transform, flip_permutation, invert_affine, joint_names, mirror_affine,
                                      mirror_x, render_figure, rescale_affine, rescale_pixel_coords,
                                      unscale_pixel_coords, warp_to_canvas, white_border)


def test_figure_transform_centres_bbox_and_frames_it():
    bbox = (100.0, 50.0, 80.0, 200.0)                 # tall person: side = h = 200
    affine = figure_transform(bbox, size=320)
    centre = apply_affine(affine, [[140.0, 150.0]])[0]
    np.testing.assert_allclose(centre, [159.5, 159.5])
    top, bottom = apply_affine(affine, [[140.0, 50.0], [140.0, 250.0]])[:, 1]
    # the bbox spans 320 / 1.4 canvas pixels: a frame of side/5 on each side
    assert bottom - top == pytest.approx(320 / 1.4)


@pytest.mark.parametrize("bbox", [(0, 0, 50, 60), (13.7, 400.2, 333.3, 120.9), (600, 10, 5000, 900)])
def test_affine_round_trip(bbox):
    affine = figure_transform(bbox, size=320)
    points = np.random.default_rng(1).uniform(-100, 1000, (50, 2))
    back = apply_affine(invert_affine(affine), apply_affine(affine, points))
    assert np.abs(back - points).max() < 1e-9


@pytest.mark.parametrize("ratio", [0.25, 0.3, 1 / 3, 2.5, 4.0])
def test_pixel_rescale_round_trip_and_edges(ratio):
    """Pixel i covers [i - 0.5, i + 0.5): scaling maps a picture's edges onto each other, and
    unscale_pixel_coords undoes rescale_pixel_coords (to float precision, far inside 0.5 px)."""
    xy = np.random.default_rng(2).uniform(-50, 400, (100, 2))
    back = unscale_pixel_coords(rescale_pixel_coords(xy, ratio), ratio)
    assert np.abs(back - xy).max() < 1e-9
    np.testing.assert_allclose(rescale_pixel_coords(np.array([-0.5, 319.5]), ratio), [-0.5, 320 * ratio - 0.5])
    np.testing.assert_allclose(apply_affine(rescale_affine(ratio), xy), rescale_pixel_coords(xy, ratio))
    tall = rescale_affine(ratio, 2 * ratio)
    assert np.abs(apply_affine(invert_affine(tall), apply_affine(tall, xy)) - xy).max() < 1e-9
    np.testing.assert_allclose(apply_affine(tall, [[3.0, 3.0]])[0],
                               [rescale_pixel_coords(3.0, ratio), rescale_pixel_coords(3.0, 2 * ratio)])


def test_pixel_rescale_values_at_stride_4():
    """Map pixel 0 of a stride-4 map covers canvas pixels 0..3: its centre is canvas x 1.5."""
    assert rescale_pixel_coords(0.0, 4) == 1.5 and unscale_pixel_coords(1.5, 4) == 0.0
    assert unscale_pixel_coords(0.0, 4) == -0.375 and rescale_pixel_coords(79.0, 4) == 317.5


def test_mirror_is_its_own_inverse():
    """x -> S - 1 - x: pixel centres onto pixel centres, edges onto edges, twice = identity;
    as an affine it is exactly the column reversal that flip_maps does on maps."""
    x = np.random.default_rng(3).uniform(-40, 360, 200)
    assert np.abs(mirror_x(mirror_x(x, 320), 320) - x).max() < 1e-12
    assert mirror_x(0, 320) == 319 and mirror_x(-0.5, 320) == 319.5 and mirror_x(159.5, 320) == 159.5
    xy = np.c_[x, x[::-1]]
    np.testing.assert_array_equal(apply_affine(mirror_affine(320), xy), np.c_[mirror_x(x, 320), x[::-1]])
    twice = np.vstack([mirror_affine(320), [0, 0, 1]]) @ np.vstack([mirror_affine(320), [0, 0, 1]])
    np.testing.assert_array_equal(twice, np.eye(3))
    image = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cv2.warpAffine(image, mirror_affine(40), (40, 30)), image[:, ::-1])


@pytest.mark.parametrize("scale_down", [True, False])
def test_warp_puts_a_source_pixel_where_the_affine_says(scale_down):
    """A bright pixel at a known source position lands at the affine's canvas position."""
    src = np.zeros((900, 1200), np.float32)
    x, y = 611, 433
    src[y - 1:y + 2, x - 1:x + 2] = 1.0                 # 3x3 blob centred on (x, y)
    bbox = (400, 200, 500, 500) if scale_down else (560, 380, 100, 100)
    affine = figure_transform(bbox, size=320)
    canvas = warp_to_canvas(src, affine, 320, border_value=0)
    ys, xs = np.mgrid[:320, :320]
    centroid = np.array([(canvas * xs).sum(), (canvas * ys).sum()]) / canvas.sum()
    expected = apply_affine(affine, [[x, y]])[0]
    assert np.abs(centroid - expected).max() < 0.5


def test_render_figure_masks_by_mask_not_colour():
    """Black pixels inside the mask stay black; everything outside it becomes white."""
    image = np.full((200, 300, 3), 90, np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[40:160, 100:180] = 1
    image[60:140, 120:160] = 0                         # pure black clothing
    canvas, affine = render_figure(image, mask, (100, 40, 80, 120), size=320)
    inside = apply_affine(affine, [[140, 100]])[0].round().astype(int)
    outside = apply_affine(affine, [[95, 100]])[0].round().astype(int)
    assert (canvas[inside[1], inside[0]] == 0).all()
    assert (canvas[outside[1], outside[0]] == 255).all()
    assert (canvas[:white_border(320)] == 255).all()


def test_canvas_storage_round_trip():
    record = np.zeros((), figure_dtype(13, 320))
    record["canvas_size"] = 320
    canvas = np.full((320, 320, 3), 255, np.uint8)
    b = white_border(320)
    canvas[b:-b, b:-b] = np.random.default_rng(0).integers(0, 256, (320 - 2 * b, 320 - 2 * b, 3))
    crop_to_record(canvas, record)
    np.testing.assert_array_equal(canvas_image(record), canvas)


def test_joint_sets_and_flip_pairs():
    names = joint_names(13)
    assert names == JOINT_SETS[13] and len(names) == 13 and "left_eye" not in names
    perm = flip_permutation(names)
    assert names[perm[names.index("left_wrist")]] == "right_wrist"
    assert perm[names.index("nose")] == names.index("nose")
    np.testing.assert_array_equal(perm[perm], np.arange(13))
    with pytest.raises(ValueError):
        joint_names(15)
