"""Pictures a person can read: named per-joint columns, joint peaks in their colours on a grey
figure, the crop on photos, curves counted from epoch 1 with integer ticks."""
import os

import cv2
import numpy as np

from figure_pose.core.figures import joint_names
from figure_pose.core.pictures import draw_crop, heat_image, joint_colour, label_columns, peaks_on_grey


def test_peaks_on_grey_marks_each_joint_in_its_colour():
    names = joint_names(13)
    image = np.zeros((64, 64, 3))                       # a black figure: grey after
    maps = np.zeros((16, 16, 13), np.float32)
    maps[5, 9, names.index("left_wrist")] = 0.9         # map pixel (u 9, v 5) -> canvas (37.5, 21.5)
    maps[12, 3, names.index("right_ankle")] = 0.1       # below 0.2: an open ring, not a dot
    out = peaks_on_grey(image, maps, names)
    assert tuple(out[21, 38]) == joint_colour("left_wrist")
    assert tuple(out[50, 14]) != joint_colour("right_ankle")       # the ring's centre stays grey
    assert (out == joint_colour("right_ankle")).all(-1).any()
    assert tuple(out[0, 0]) == (128, 128, 128)


def test_heat_image_is_opencvs_jet_in_rgb():
    """The jet table gives what cv2.applyColorMap gives (converted to RGB), pixel for pixel: 0 is dark
    blue, 1 dark red, values outside [0, 1] clip."""
    ramp = np.linspace(-0.2, 1.2, 8 * 8, dtype=np.float32).reshape(8, 8)
    grey = cv2.resize((np.clip(ramp, 0, 1) * 255).astype(np.uint8), (32, 32), interpolation=cv2.INTER_LINEAR)
    expected = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = heat_image(ramp, 32)
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[0, 0]) == (0, 0, 128) and tuple(out[-1, -1]) == (128, 0, 0)


def test_label_columns_writes_a_name_over_every_column():
    names = ["all joints", *joint_names(13)]
    strip = label_columns(np.zeros((10, 14 * 40, 3), np.uint8), names)
    inked = (strip < 128).any(-1)
    assert strip.shape == (16, 560, 3)
    assert all(inked[:, k * 40:(k + 1) * 40].any() for k in range(14))


def test_draw_crop_draws_the_box_and_the_model_square():
    out = draw_crop(np.zeros((200, 200, 3), np.uint8), [80, 60, 40, 80])
    yellow = (out == (255, 210, 0)).all(-1)
    assert yellow[60:140, 80].mean() > 0.9              # the box's left edge, solid
    assert 0.2 < yellow[40:160, 44].mean() < 0.8        # the square (80 + 20 - 56 = 44): dotted


def test_epoch_pictures_and_curves(tmp_path, monkeypatch):
    import cv2
    import matplotlib.pyplot as plt

    from figure_pose.core.pictures import plot_curves, write_eval_pngs
    rng = np.random.default_rng(0)
    write_eval_pngs(str(tmp_path), 0, rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
                    rng.random((2, 16, 16, 13), dtype=np.float32), rng.random((2, 16, 16, 13), dtype=np.float32))
    heatmap = cv2.imread(str(tmp_path / "0000_heatmap.png"))
    assert heatmap.shape == (16 + 2 * 64, 14 * 64, 3)   # a row of names over the 14 columns
    (tmp_path / "log.csv").write_text("epoch,loss,val_loss,val_pck@0.2\n0,2.0,2.1,0.5\n1,1.5,1.6,0.6\n")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot_curves(str(tmp_path / "log.csv"), str(tmp_path / "curves.png"))
    (axes_loss, _) = figures[0].axes
    assert list(axes_loss.get_lines()[0].get_xdata()) == [1, 2]
    ticks = [t for t in axes_loss.get_xticks() if 1 <= t <= 2]
    assert ticks == [1, 2]


def test_save_png_round_trips_and_leaves_no_partial(tmp_path):
    from figure_pose.core.pictures import save_png
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = str(tmp_path / "x.png")
    save_png(path, rgb)
    back = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, rgb)
    assert os.listdir(tmp_path) == ["x.png"]
