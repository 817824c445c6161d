#!/usr/bin/env python
"""The bridge's map (`mmsearch align --map linear|mlp|auto`) on synthetic sentence embeddings at the real sizes.

What it measures. Two "models" embed the same ``--sentences`` sentences (default 3,300, as many as mmsearch
ships) in ``--dim-a`` and ``--dim-b`` dimensions (512 each, CLAP's and CLIP's). Each sentence has a
``--latent``-d meaning; each model sees it with its own noise (``--noise`` times the meaning's spread), so no
map can be perfect. The source model embeds the meaning linearly; the target model through

- ``non-linear``: a random 2-layer network, 512 cosine units (random Fourier features, gain 2);
- ``mildly non-linear``: a random 2-layer tanh network (512 units, gain 4) over a 4-d meaning, whose
  linear part carries most of it;
- ``linear``: a random linear map;
- ``noisy linear``: the same with three times the noise (R@1 well below 1, room for an MLP to fit noise).

Each case is fitted with ``fit_space_map`` (what ``Engine.align`` runs after embedding the sentences) for
each ``map``: its held-out R@1 and mean cosine (20 % of the sentences, the figures ``auto`` decides on),
the R@1 of the saved map on ``--fresh`` sentences drawn the same way and never fitted on (among all of
them), which map was kept, and the seconds the fit took (after one small warm-up fit, so torch's import is
not counted). Both directions (source -> target: ``fwd``, back: ``rev``).

    .venv/bin/python benchmarks/bench_bridge_map.py
    .venv/bin/python benchmarks/bench_bridge_map.py --json > bridge-map.json
    .venv/bin/python benchmarks/bench_bridge_map.py --cases linear --maps linear,auto --sentences 1000
    .venv/bin/python benchmarks/bench_bridge_map.py --sentences 1000 --dim-a 24 --dim-b 40 --cases "noisy linear" \
        --maps auto --null-seeds 40

``--null-seeds N`` adds a study of the margin: the ``noisy linear`` case drawn N times (seeds 1000...), both
directions fitted with ``mlp`` and ``linear``: how often ``auto`` keeps the MLP on a map that is linear, how
often R@1 >= linear + ``MLP_MARGIN`` alone (without the chance test) would have, and what those MLPs then do
to R@1 on the fresh sentences (a gain that is luck of the held-out draw does not carry over).

No trained CLAP or CLIP weights can be downloaded here, so how much the MLP adds on real sentences is
not measured by this script; ``mmsearch align --map auto`` prints both candidates' held-out figures for
the models a store really uses.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from machine import cpu_model

from mmsearch.bridge.heldout import retrieval_score
from mmsearch.bridge.linear import MAPS, MLP_MARGIN, MLP_MIN_Z, SpaceMap, fit_space_map, keeps_mlp
from mmsearch.encoders.base import l2_normalise

CASES = ("non-linear", "mildly non-linear", "linear", "noisy linear")


def two_spaces(case: str, n: int, *, d_a: int, d_b: int, latent: int, noise: float,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i of each: sentence i as the source and the target model embed it (unit rows)."""
    rng = np.random.default_rng(seed)
    latent = 4 if case == "mildly non-linear" else latent
    noise = 3 * noise if case == "noisy linear" else noise
    meaning = rng.standard_normal((n, latent))
    embed = rng.standard_normal((latent, d_a))
    source = l2_normalise((meaning + noise * rng.standard_normal((n, latent))) @ embed)
    seen = l2_normalise((meaning + noise * rng.standard_normal((n, latent))) @ embed)
    if case == "non-linear":
        hidden = np.cos(2.0 * seen @ rng.standard_normal((d_a, 512)) + rng.uniform(0, 2 * np.pi, 512))
    elif case == "mildly non-linear":
        hidden = np.tanh(4.0 * seen @ rng.standard_normal((d_a, 512)) + 2.0 * rng.standard_normal(512))
    else:
        hidden = seen
    return source, l2_normalise(hidden @ rng.standard_normal((hidden.shape[1], d_b)))


def direction_row(bridge: SpaceMap, name: str, fresh_source: np.ndarray, fresh_target: np.ndarray) -> dict:
    direction = bridge.forward if name == "fwd" else bridge.reverse
    mapped = bridge.apply(fresh_source) if name == "fwd" else bridge.apply_reverse(fresh_target)
    fresh_r_at_1 = retrieval_score(mapped, fresh_target if name == "fwd" else fresh_source)[0]
    fit = direction.fit
    return {"kept": fit.method, "heldout_r_at_1": fit.heldout_r_at_1, "heldout_mean_cosine": fit.heldout_mean_cosine,
            "fresh_r_at_1": fresh_r_at_1, "epochs": fit.epochs,
            "candidates": {c.map: {"method": c.method, "heldout_r_at_1": c.heldout_r_at_1,
                                   "heldout_mean_cosine": c.heldout_mean_cosine, "epochs": c.epochs,
                                   "gained": c.gained, "lost": c.lost} for c in fit.candidates}}


def run(args: argparse.Namespace) -> dict:
    warm_source, warm_target = two_spaces("non-linear", 200, d_a=16, d_b=16, latent=4, noise=0.1, seed=99)
    fit_space_map(warm_source, warm_target, source_fingerprint="a", target_fingerprint="b", map="mlp")
    rows = []
    for case in args.cases:
        source, target = two_spaces(case, args.sentences + args.fresh, d_a=args.dim_a, d_b=args.dim_b,
                                    latent=args.latent, noise=args.noise, seed=args.seed)
        known, fresh = slice(0, args.sentences), slice(args.sentences, None)
        for map_kind in args.maps:
            started = time.perf_counter()
            bridge = fit_space_map(source[known], target[known], source_fingerprint="a", target_fingerprint="b",
                                   map=map_kind, seed=args.seed)
            seconds = time.perf_counter() - started
            rows.append({"case": case, "map": map_kind, "fit_seconds": round(seconds, 2),
                         **{name: direction_row(bridge, name, source[fresh], target[fresh]) for name in ("fwd", "rev")}})
            print(f"bench_bridge_map: {case}, {map_kind}: {seconds:.1f} s", file=sys.stderr)
    import torch

    return {"null_study": null_study(args) if args.null_seeds else None, "sentences": args.sentences, "fresh": args.fresh, "dims": [args.dim_a, args.dim_b],
            "latent": args.latent, "noise": args.noise, "seed": args.seed, "mlp_margin": MLP_MARGIN,
            "mlp_min_z": MLP_MIN_Z, "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(), "rows": rows}


def null_study(args: argparse.Namespace) -> dict:
    kept, margin_alone = [], []  # fresh R@1 change (MLP - linear) where auto / the margin alone kept the MLP
    for seed in range(1000, 1000 + args.null_seeds):
        source, target = two_spaces("noisy linear", args.sentences + args.fresh, d_a=args.dim_a, d_b=args.dim_b,
                                    latent=args.latent, noise=args.noise, seed=seed)
        known, fresh = slice(0, args.sentences), slice(args.sentences, None)
        bridges = {map_kind: fit_space_map(source[known], target[known], source_fingerprint="a",
                                           target_fingerprint="b", map=map_kind) for map_kind in ("mlp", "linear")}
        for name in ("fwd", "rev"):
            fit = (bridges["mlp"].forward if name == "fwd" else bridges["mlp"].reverse).fit
            linear, mlp = fit.candidate("linear"), fit.candidate("mlp")
            if mlp.heldout_r_at_1 - linear.heldout_r_at_1 < MLP_MARGIN:
                continue
            fresh_r_at_1 = {map_kind: direction_row(bridge, name, source[fresh], target[fresh])["fresh_r_at_1"]
                            for map_kind, bridge in bridges.items()}
            change = round(fresh_r_at_1["mlp"] - fresh_r_at_1["linear"], 4)
            margin_alone.append(change)
            if keeps_mlp(linear, mlp):
                kept.append(change)
    return {"seeds": args.null_seeds, "directions": 2 * args.null_seeds, "auto_kept_mlp": kept,
            "margin_alone_kept_mlp": margin_alone}


def table(report: dict) -> str:
    lines = ["| case | map | fit s | dir | kept | held-out R@1 (linear / mlp) | mean cosine (linear / mlp) | "
             "fresh R@1 of kept |", "|---|---|---:|---|---|---|---|---:|"]
    for row in report["rows"]:
        for name in ("fwd", "rev"):
            direction = row[name]
            candidates = direction["candidates"]

            def both(key: str) -> str:
                return " / ".join(f"{candidates[m][key]:.3f}" if m in candidates else "-" for m in ("linear", "mlp"))
            kept = direction["kept"] + (f" ({direction['epochs']} ep)" if direction["epochs"] is not None else "")
            lines.append(f"| {row['case']} | {row['map']} | {row['fit_seconds']:.1f} | {name} | {kept} | "
                         f"{both('heldout_r_at_1')} | {both('heldout_mean_cosine')} | {direction['fresh_r_at_1']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=3300, help="sentences fitted on (held-out 20 %% included)")
    parser.add_argument("--fresh", type=int, default=1000, help="further sentences, never fitted on")
    parser.add_argument("--dim-a", type=int, default=512)
    parser.add_argument("--dim-b", type=int, default=512)
    parser.add_argument("--latent", type=int, default=8, help="dimensions of a sentence's meaning")
    parser.add_argument("--noise", type=float, default=0.1, help="each model's noise on the meaning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--maps", default=",".join(MAPS), help="comma-separated: linear, mlp, auto")
    parser.add_argument("--null-seeds", type=int, default=0, help="draws of the noisy linear case for the margin "
                                                                   "study (0: none)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    args.maps = [m.strip() for m in args.maps.split(",") if m.strip()]
    if not set(args.cases) <= set(CASES) or not set(args.maps) <= set(MAPS):
        parser.error(f"--cases from {', '.join(CASES)}; --maps from {', '.join(MAPS)}")
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['sentences']} sentences ({report['fresh']} fresh), {report['dims'][0]}-d <-> {report['dims'][1]}-d, "
              f"{report['latent']}-d meaning, noise {report['noise']}, seed {report['seed']}; auto keeps the MLP at "
              f"R@1 +{report['mlp_margin']} and z >= {report['mlp_min_z']}")
        print(f"CPU: {report['cpu']} ({report['cores']} cores, torch {report['torch_threads']} threads), "
              f"load average {report['load_average']}, Python {report['python']}")
        print(table(report))
        if report["null_study"]:
            study = report["null_study"]
            print(f"margin study, noisy linear x {study['seeds']} seeds ({study['directions']} directions), "
                  "MLP kept by / fresh R@1 change (MLP - linear) there:")
            for label, key in (("auto", "auto_kept_mlp"), ("R@1 margin alone", "margin_alone_kept_mlp")):
                changes = study[key]
                print(f"  {label}: {len(changes)} directions; fresh R@1 change mean "
                      f"{np.mean(changes) if changes else 0:+.3f}, best {max(changes, default=0):+.3f}, "
                      f"worst {min(changes, default=0):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
