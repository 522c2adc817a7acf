"""The paper's numbers load into one pandas table with measured records."""

import json

from evaluation.results import paper_results, results_table, side_by_side


def test_paper_numbers_ship_and_load():
    paper = paper_results()
    assert len(paper) == 274 and set(paper["source"]) == {"paper"}
    row = paper[(paper["dataset"] == "MP-100") & (paper["setting"] == "1-shot split1") & (paper["method"] == "KptLLM")]
    assert row["value"].tolist() == [91.66]


def test_records_join_the_table(tmp_path):
    record = {"model": "/ckpt/mine", "benchmark": "mp100", "task": "visual", "shots": 1, "limit": None,
              "annotations": "/data/mp100_split1_test.json", "metrics": {"PCK@0.2": 0.9012, "mPCK": 0.8},
              "date": "2026-11-26T00:00:00+00:00"}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "record.json").write_text(json.dumps(record))
    table = results_table(tmp_path, benchmark="mp100")
    mine = table[table["method"] == "mine"]
    assert mine["setting"].unique().tolist() == ["1-shot split1"]
    assert mine.set_index("metric")["value"]["PCK@0.2"] == 90.12
    wide = side_by_side(table)
    assert wide.loc[("MP-100", "1-shot split1", "PCK@0.2"), "mine"] == 90.12
    assert wide.loc[("MP-100", "1-shot split1", "PCK@0.2"), "KptLLM"] == 91.66
