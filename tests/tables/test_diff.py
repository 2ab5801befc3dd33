"""Comparing tables: B / A ratios, and what rebuilding a table keeps of the previous one."""

from __future__ import annotations

import pytest

from lutnas.device_agents.base import DeviceInfo, RunSettings
from lutnas.tables.diff import carry_over, diff_tables
from lutnas.tables.table import LatencyTable

DEVICE = DeviceInfo("host-z", "host", "test")
KEY_A = "conv:hw=32,cin=3,cout=8,k=3,s=2,act=hswish"
KEY_B = "mbconv:hw=16,cin=8,cout=8,k=3,s=1,e=1,se=0,act=hswish"
KEY_C = "head:hw=2,cin=64,cmid=384,chid=128,ncls=10,act=hswish"
CORRECTION = {"scale": 1.05, "intercept": 0.01, "n": 5}


def table(latencies: dict[str, float], run: RunSettings = RunSettings(),
          correction: dict | None = None) -> LatencyTable:
    return LatencyTable.from_latencies(latencies, DEVICE, run, "tiny", {"correction": correction})


def test_diff_ratios_per_key_and_kind() -> None:
    a = table({KEY_A: 1.0, KEY_B: 2.0, KEY_C: 1.0})
    b = table({KEY_A: 2.0, KEY_B: 3.0})
    result = diff_tables(a, b)
    assert result.only_a == 1 and result.only_b == 0
    assert result.per_key.loc[KEY_A, "ratio"] == 2.0 and result.per_key.index[0] == KEY_B
    assert result.per_kind.loc["mbconv", "ratio_of_sums"] == 1.5


def test_rebuild_keeps_the_correction_and_says_what_changed() -> None:
    previous = table({KEY_A: 1.0, KEY_B: 2.0}, correction=CORRECTION)
    rebuilt = table({KEY_A: 1.0, KEY_B: 2.2, KEY_C: 0.5})
    change = carry_over(previous, rebuilt)
    assert rebuilt.correction == CORRECTION and change.correction == "kept"
    assert change.added == [KEY_C] and change.removed == [] and change.changed == 1
    assert change.max_change == pytest.approx(0.1) and change.rows_changed
    assert change.summary() == "1 keys added, 0 removed, 1 changed (up to 10.0%); correction kept"


def test_rebuild_of_the_same_rows_changes_nothing() -> None:
    previous = table({KEY_A: 1.0}, correction=CORRECTION)
    change = carry_over(previous, table({KEY_A: 1.0}))
    assert not change.rows_changed and change.correction == "kept"


def test_rebuild_drops_replaces_or_refuses_the_correction_when_it_should() -> None:
    previous = table({KEY_A: 1.0}, correction=CORRECTION)
    fresh = table({KEY_A: 1.0})
    assert carry_over(previous, fresh, keep_correction=False).correction == "dropped"
    assert fresh.correction is None
    recalibrated = table({KEY_A: 1.0}, correction={"scale": 0.9, "intercept": 0.0, "n": 3})
    assert carry_over(previous, recalibrated).correction == "replaced"
    assert recalibrated.correction["scale"] == 0.9
    other = table({KEY_A: 1.0}, run=RunSettings(runtime="onnxruntime"))
    change = carry_over(previous, other)
    assert change.correction.startswith("not kept") and other.correction is None
    assert change.settings_changed == ["runtime"]
    assert carry_over(table({KEY_A: 1.0}), table({KEY_A: 1.0})).correction == "none"


def test_diff_plot_labels_its_log_axes_in_plain_numbers_that_do_not_overlap(
        tmp_path, monkeypatch, tiny_space) -> None:
    import lutnas.tables.diff as diff_module
    from lutnas.plotting import pyplot

    drawn = []

    def keep(fig, path):
        fig.canvas.draw()
        drawn.append(fig.axes[0])
        return path

    monkeypatch.setattr(diff_module, "save_figure", keep)
    keys = [spec.key for spec in tiny_space.unique_blocks()][:40]
    # About one decade, as blocks of a small space on a fast host: matplotlib's default labels
    # every minor tick there, and the labels ran together (3×10⁻³4×10⁻³6×10⁻³...).
    a_ms = [0.003 * 1.05 ** i for i in range(len(keys))]
    a, b = table(dict(zip(keys, a_ms))), table({k: 1.2 * ms for k, ms in zip(keys, a_ms)})
    diff_module.plot_diff(diff_tables(a, b), tmp_path / "diff.png")
    left = drawn[0]
    renderer = left.figure.canvas.get_renderer()
    for axis in (left.xaxis, left.yaxis):
        assert all(not label.get_text() for label in axis.get_ticklabels(minor=True))
        low, high = sorted(axis.get_view_interval())
        labels = [label for label, value in zip(axis.get_ticklabels(), axis.get_majorticklocs())
                  if low <= value <= high]
        assert len(labels) >= 3
        assert all(float(label.get_text()) > 0 for label in labels)  # plain numbers, no 10^x
        boxes = sorted((label.get_window_extent(renderer) for label in labels),
                       key=lambda box: (box.x0, box.y0))
        assert not any(first.overlaps(second) for first, second in zip(boxes, boxes[1:]))
    pyplot().close(left.figure)
