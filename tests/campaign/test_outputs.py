"""Report and plot helpers: fixed split order, split legend, wall times, readable axes."""

from pathlib import Path

from al_lightning.campaign.outputs import plot_learning_curves, write_report
from al_lightning.campaign.plotting import ordered_splits, pyplot, scale_axis

SPLITS = ["test_ood_both", "test_id", "val", "test_zeolite", "test_ood_cat", "test_ood_ads"]


def _state():
    rounds = [{"round": r, "n_labeled": 10 * (r + 1), "selected_ids": [], "fit_seconds": 12.5 + r,
               "acquire_seconds": 3.25, "metrics": {f"{s}/{m}": 0.1 * (i + 1) / (r + 1)
                                                    for i, s in enumerate(SPLITS)
                                                    for m in ("forces_mae", "energy_mae", "forces_rmse", "energy_rmse")}}
              for r in range(3)]
    return {"name": "c", "status": "complete", "rounds": rounds, "failed": [],
            "config": {"strategy": "pv_lcmd", "budget": 10, "rounds": 2, "seed": 0, "oracle": "stored"}}


def test_splits_are_in_logical_order_unknown_last():
    assert ordered_splits(SPLITS) == ["val", "test_id", "test_ood_ads", "test_ood_cat", "test_ood_both",
                                      "test_zeolite"]


def test_report_has_legend_ordered_columns_and_wall_times(tmp_path):
    write_report(_state(), tmp_path / "report.md")
    text = (tmp_path / "report.md").read_text()
    assert "| round | labels | val | test_id | test_ood_ads | test_ood_cat | test_ood_both | test_zeolite |" in text
    assert "- `test_ood_ads`: unseen adsorbates" in text and "- `test_zeolite`" not in text
    assert "| 1 | 20 | 13.5 | 3.2 |" in text  # fit and acquisition seconds per round


def test_log_axis_only_when_the_data_span_a_decade():
    plt = pyplot()
    fig, (narrow, wide) = plt.subplots(1, 2)
    scale_axis(narrow, [0.12, 0.3])
    scale_axis(wide, [0.01, 0.3])
    assert narrow.get_yscale() == "linear" and wide.get_yscale() == "log"
    wide.plot([0, 1], [0.01, 0.3])
    fig.canvas.draw()
    labels = [t.get_text() for t in wide.get_yticklabels() if t.get_text()]
    assert len(labels) >= 4  # 0.01, 0.02, 0.03, 0.05, 0.1, ...
    plt.close(fig)


def test_learning_curve_png_is_written(tmp_path):
    plot_learning_curves(_state()["rounds"], tmp_path / "lc.png", title="campaign c: strategy pv_lcmd")
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_full_disk_while_saving_a_figure_keeps_the_old_one(tmp_path):
    """A figure whose write hits a full disk: the old PNG stays whole, no temp file is left, and the
    error names the figure's path (the console line says which file, then how to go on)."""
    import errno

    import pytest

    from al_lightning.campaign.plotting import pyplot, save
    from al_lightning.campaign.state import os_error_line

    plt = pyplot()
    path = tmp_path / "learning_curve.png"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save(fig, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    real = fig.savefig

    def full(fh, **kw):
        real(fh, **kw)
        raise OSError(errno.ENOSPC, "No space left on device")

    fig.savefig = full
    with pytest.raises(OSError) as info:
        save(fig, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["learning_curve.png"]
    assert os_error_line(info.value).startswith(f"{path}: the disk is full; free some space")
