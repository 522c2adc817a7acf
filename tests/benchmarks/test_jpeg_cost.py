"""benchmarks.jpeg_cost: the same scenes, lossless first, then through JPEG; the changes are against lossless."""

from benchmarks.jpeg_cost import main, table


def test_rows_compare_each_quality_with_the_lossless_render(capsys):
    out = main(["--objects", "6", "--images", "6", "--qualities", "95", "5"])
    assert [r["quality"] for r in out["model"]] == [None, 95, 5] == [r["quality"] for r in out["detector"]]
    lossless, _, ruined = out["detector"]
    assert ruined["plain AP"] < lossless["plain AP"]  # quality 5 wrecks the picture: both halves do see JPEG
    lossless, _, ruined = out["model"]
    assert ruined["semantic_accuracy"] < lossless["semantic_accuracy"]
    printed = capsys.readouterr().out
    assert "| lossless |" in printed and "| JPEG 5 |" in printed


def test_the_table_prints_changes_against_the_first_row():
    text = table([{"quality": None, "AP": 0.8, "visual": None}, {"quality": 95, "AP": 0.75, "visual": None}])
    assert "| lossless | 0.800 | - |" in text and "| JPEG 95 | 0.750 (-0.050) | - |" in text
