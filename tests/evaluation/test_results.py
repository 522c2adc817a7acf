"""The paper's numbers and measured records: stacked with provenance, never merged (issue #6.5)."""

import json
from pathlib import Path

import pytest

from evaluation.results import RECORD_COLUMNS, load_records, paper_results, provenance, results_table, side_by_side


def _write(folder, **fields):
    record = {"model": "/ckpt/mine", "benchmark": "mp100", "task": "visual", "shots": 1, "limit": None,
              "annotations": "/data/mp100_split1_test.json", "metrics": {"PCK@0.2": 0.9012, "mPCK": 0.8},
              "date": "2026-11-26T00:00:00+00:00", "checkpoint_sha256": "ab" * 32, "annotations_sha256": "cd" * 32,
              "annotations_label": "mp100_split1_test.json (2000 instances, sha256 cdcdcdcd)",
              "units_evaluated": 10, "units_total": 10}
    record.update(fields)
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(record))


def test_paper_numbers_ship_and_load():
    paper = paper_results()
    assert len(paper) == 274 and set(paper["source"]) == {"paper"}
    row = paper[(paper["dataset"] == "MP-100") & (paper["setting"] == "1-shot split1") & (paper["method"] == "KptLLM")]
    assert row["value"].tolist() == [91.66]
    assert "Finetune" not in set(paper["method"]) and (paper["method"] == "Fine-tune").sum() == 16


def test_records_join_the_table(tmp_path):
    _write(tmp_path / "a")
    table = results_table(tmp_path, benchmark="mp100")
    mine = table[table["source"] == "measured"]
    assert mine["method"].unique().tolist() == ["mine abababab"]
    assert mine["setting"].unique().tolist() == ["1-shot split1"]
    assert mine.set_index("metric")["value"]["PCK@0.2"] == 90.12
    wide = side_by_side(table)
    assert wide.loc[("MP-100", "1-shot split1", "PCK@0.2"), ("measured", "mine abababab")] == 90.12
    assert wide.loc[("MP-100", "1-shot split1", "PCK@0.2"), ("paper", "KptLLM")] == 91.66
    assert wide.attrs["provenance"]["record"].tolist() == [str(tmp_path / "a" / "record.json")]


def test_a_folder_named_like_a_paper_method_does_not_replace_its_numbers(tmp_path):
    _write(tmp_path / "a", model="/ckpt/KptLLM++", benchmark="coco", task="text",
           annotations="/data/test_coco.json", metrics={"AP": 0.5})
    wide = side_by_side(results_table(tmp_path, benchmark="coco"))
    assert wide.loc[("COCO val", "GT boxes; no flip", "AP"), ("paper", "KptLLM++")] == 78.1
    _write(tmp_path / "b", model="/ckpt/KptLLM++", name="KptLLM++", benchmark="coco", task="text",
           annotations="/data/test_coco.json", metrics={"AP": 0.5})  # even with --name KptLLM++
    wide = side_by_side(results_table(tmp_path, benchmark="coco"))
    assert wide.loc[("COCO val", "GT boxes; no flip", "AP"), ("paper", "KptLLM++")] == 78.1
    assert wide.loc[("COCO val", "GT boxes; no flip", "AP"), ("measured", "KptLLM++")] == 50.0


def test_duplicate_names_stay_apart(tmp_path):
    _write(tmp_path / "run1", model="/ckpts/a/final", name="final", metrics={"PCK@0.2": 0.1})
    _write(tmp_path / "run2", model="/ckpts/b/final", name="final", metrics={"PCK@0.2": 0.2})
    table = load_records(tmp_path)
    assert sorted(table["method"].unique()) == ["final (run1)", "final (run2)"]
    wide = side_by_side(table)
    assert sorted(wide.loc[("MP-100", "1-shot split1", "PCK@0.2")].tolist()) == [10.0, 20.0]


def test_load_records_columns_and_provenance(tmp_path):
    _write(tmp_path / "a", metrics={"PCK@0.2": 0.5, "pck@0.2": 0.5}, units_evaluated=4, units_total=10)
    table = load_records(tmp_path)
    assert list(table.columns) == RECORD_COLUMNS
    assert table["metric"].tolist() == ["PCK@0.2"]  # the alias is not a second row
    row = table.iloc[0]
    assert row["checkpoint_sha256"] == "ab" * 32 and row["annotations_sha256"] == "cd" * 32
    assert row["units_evaluated"] == 4 and row["units_total"] == 10 and row["date"].startswith("2026")
    assert row["annotations_label"].startswith("mp100_split1_test.json (2000 instances")
    assert row["setting"] == "1-shot split1 (4 of 10 units)"  # part of a file never lines up with the paper
    assert provenance(table)["units_total"].tolist() == [10]


def test_unknown_files_are_labelled_by_identity(tmp_path):
    _write(tmp_path / "a", annotations="/data/my_test.json", annotations_label="my_test.json (20 instances, sha256 1234abcd)")
    assert load_records(tmp_path)["setting"].unique().tolist() == ["1-shot my_test.json (20 instances, sha256 1234abcd)"]


def test_a_broken_record_is_skipped_with_a_warning(tmp_path):
    _write(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "record.json").write_text("[]")
    with pytest.warns(UserWarning) as caught:
        table = load_records(tmp_path)
    assert set(table["record"]) == {str(tmp_path / "good" / "record.json")}
    assert {str(tmp_path / "bad" / "record.json"), str(tmp_path / "empty" / "record.json")} == \
        {m for w in caught for m in [str(w.message).split(": ")[0].replace("skipping ", "")]}


def test_cli_results_skips_broken_records(tmp_path, capsys):
    from evaluation.cli import main

    _write(tmp_path / "good")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "record.json").write_text("{not json")
    with pytest.warns(UserWarning, match="bad"):
        assert main(["results", "--benchmark", "mp100", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mine abababab" in out and "measured runs:" in out and "10 of 10 units" in out


def test_benchmarks_without_paper_numbers_filter_by_their_records(tmp_path, capsys):
    """`--benchmark keypointworld` (no paper numbers) keeps its records; an unknown name and a missing
    --results folder are one-line errors."""
    from evaluation.cli import main

    _write(tmp_path / "kw", benchmark="keypointworld", task="text", metrics={"PCK@0.2": 0.95})
    _write(tmp_path / "mp", metrics={"PCK@0.2": 0.5})
    table = results_table(tmp_path, benchmark="keypointworld")
    assert set(table["benchmark"]) == {"keypointworld"} and table["value"].tolist() == [95.0]
    with pytest.raises(ValueError, match="unknown benchmark 'imagenet'.*keypointworld"):
        results_table(tmp_path, benchmark="imagenet")
    assert main(["results", "--results", str(tmp_path / "none")]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_keypointworld_records_use_the_papers_task_names_and_name_their_data(tmp_path):
    """One taxonomy: a measured text-prompt record sits under `text_prompt` like the paper's text-prompt rows;
    its dataset says which KeypointWorld scenes (from the file's own description) and its setting the protocol."""
    _write(tmp_path / "t", benchmark="keypointworld", task="text", metrics={"PCK@0.2": 0.95},
           annotations_description="KeypointWorld, 60 images, seed 424242")
    _write(tmp_path / "o", benchmark="keypointworld", task="visual", shots=1, metrics={"PCK@0.2": 0.6},
           annotations_description="KeypointWorld, 60 images, seed 424242, off-centre in larger canvases")
    _write(tmp_path / "s", benchmark="keypointworld", task="semantic", metrics={"accuracy": 0.7}, constrained=False,
           annotations_description="KeypointWorld, 60 images, seed 424242")
    _write(tmp_path / "old", benchmark="keypointworld", task="text", metrics={"PCK@0.2": 0.9})  # no description
    table = load_records(tmp_path)
    table = table.set_index(table["record"].map(lambda p: Path(p).parent.name))
    assert (table.loc["t", "task"], table.loc["t", "dataset"], table.loc["t", "setting"]) == (
        "text_prompt", "KeypointWorld seed 424242", "GT boxes")
    assert (table.loc["o", "task"], table.loc["o", "dataset"], table.loc["o", "setting"]) == (
        "visual_prompt", "KeypointWorld seed 424242, off-centre", "1-shot")
    assert (table.loc["s", "task"], table.loc["s", "setting"]) == ("semantic_understanding", "GT points, free decoding")
    assert table.loc["old", "dataset"].startswith("KeypointWorld ")
    assert "text_prompt" in set(paper_results()["task"])  # the same name the paper's rows use
