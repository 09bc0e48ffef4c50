"""compare: failed shapes count at the section's worst value; figures show every category in turn."""

from deepsdf_ad.compare import score_failures, table_stats


def test_failures_count_at_the_sections_worst():
    ok = {"key": "a", "category": "c", "chamfer_x1e3": 2.0, "iou": 0.8}
    bad = {"key": "b", "category": "c", "failed": "empty mesh", "iou": 0.0}
    other = {"key": "a", "category": "c", "chamfer_x1e3": 7.0, "iou": 0.5}
    evs = {"m1": [{"mode": "optimise", "shapes": [ok, bad]}], "m2": [{"mode": "encode", "shapes": [other]}]}
    scored = score_failures(evs, ["chamfer_x1e3", "iou"])
    row = scored["m1"][0]["shapes"][1]
    assert row["chamfer_x1e3"] == 7.0 and row["iou"] == 0.0 and row["failed"] == "empty mesh"
    st = table_stats(scored["m1"][0]["shapes"], ["chamfer_x1e3", "iou"])["all"]
    assert st["failed"] == 1 and st["chamfer_x1e3"]["n"] == 2 and st["chamfer_x1e3"]["mean"] == 4.5
    assert evs["m1"][0]["shapes"][1].get("chamfer_x1e3") is None  # the input is not changed


def test_figures_show_every_category_in_turn():
    from deepsdf_ad.viz.report import figure_keys

    keys = [f"0/{i}" for i in range(5)] + [f"1/{i}" for i in range(5)] + ["2/0"]
    assert figure_keys(keys, 4) == ["0/0", "1/0", "2/0", "0/1"]
    assert figure_keys(keys[:2], 4) == ["0/0", "0/1"]


def test_panels_carry_their_own_number():
    from deepsdf_ad.viz.report import panel_label

    assert panel_label("autodecoder", {"chamfer_x1e3": 12.345}) == "autodecoder: CD 12.3"
    assert panel_label("autoencoder", {"iou": 0.5}) == "autoencoder: IoU 0.50"
    assert panel_label("x", {"failed": "empty"}) == "x"


def test_observed_points_are_drawn_where_they_lie():
    import numpy as np

    from deepsdf_ad.viz.report import points_picture

    img = points_picture(np.array([[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0]]), 21)
    assert img.shape == (21, 21, 3) and img.dtype == np.uint8
    assert img[0, 0, 0] < 100 and img[20, 20, 0] < 100 and img[10, 10, 0] < 100  # (-1, 1), (1, -1), centre
    assert img[0, 20, 0] == 255 and img[20, 0, 0] == 255  # nothing at the other corners


def test_code_loss_curves_average_over_their_common_length():
    from deepsdf_ad.evaluate import mean_curve

    assert mean_curve([]) == []
    assert mean_curve([[4.0, 2.0, 1.0], [2.0, 0.0]]) == [3.0, 1.0]
