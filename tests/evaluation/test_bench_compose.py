"""benchmarks/bench_compose.py on a small coco-mini subset with the tiny random model: the report's shape,
recall bounds, and the oracle row (an indexed photo used as the query file finds itself first)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_compose.py"


def load_script():
    if str(SCRIPT.parent) not in sys.path:  # as when it runs as a script: its folder's modules import
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_compose", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compose"] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


def test_bench_compose_on_a_subset(corpus, tmp_path):
    bench = load_script()
    photos = bench.load_coco(corpus / "coco-mini")
    assert len(photos) == 159 and all(len(p.captions) >= 5 for p in photos)
    subset = bench.stage_subset(photos, 24, tmp_path / "photos", seed=0)
    store = tmp_path / "store"
    report = bench.run(subset, [tmp_path / "photos"], store, model="test-tiny:random", queries=20, seed=0)

    assert report["photos"] == 24 and report["queries"] == 20 and report["ks"] == [1, 5, 10]
    assert report["index_seconds"] is not None
    assert report["chance"] == {"1": 1 / 24, "5": 5 / 24, "10": 10 / 24}
    rows = {(row["method"], row["fusion"]): row for row in report["rows"]}
    for fusion in ("early", "rrf", "score"):
        for method in ("image A + text B", "like A + text B", "image A×0.5 + text B"):
            assert rows[(method, fusion)]["used"] == fusion  # the fusion asked for is the one that ran
    for name in ("text B", "image A", "like A", "oracle: image B"):
        assert rows[(name, "auto")]["used"] == "single"
    for row in report["rows"]:
        recall = [row["recall"][str(k)] for k in report["ks"]]
        assert all(0.0 <= r <= 1.0 for r in recall), row
        assert recall == sorted(recall), row  # R@k never falls as k grows
        assert row["missing"] == 0, row  # every query's full ranking holds its target
        assert 1 <= row["median_rank"] <= 24 and row["ms_per_query"] > 0 and 0.0 <= row["a_first"] <= 1.0
    oracle = rows[("oracle: image B", "auto")]
    assert oracle["recall"]["1"] == 1.0 and oracle["mean_rank"] == 1.0  # exact search: B finds itself first
    assert rows[("image A", "auto")]["recall"]["1"] == 0.0  # ... and so A, not B, comes first for image A
    assert rows[("image A", "auto")]["a_first"] == 1.0
    for fusion in ("auto", "early", "rrf", "score"):  # a like part's file is left out of its own hits
        name = "like A" if fusion == "auto" else "like A + text B"
        assert rows[(name, fusion)]["a_returned"] == 0.0
    assert rows[("image A", "auto")]["a_returned"] == 1.0

    again = bench.run(subset, [tmp_path / "photos"], store, model="test-tiny:random", queries=3, seed=1)
    assert again["index_seconds"] is None  # the store already held the photos: reused, not re-indexed
    assert len(again["rows"]) == len(report["rows"])
