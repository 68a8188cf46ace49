"""`GET /api/stats/quality`: counts per flag, rejection reasons, duplicate clusters, and the
coverage matrix (practice area x difficulty x sample type) with its gaps."""
from __future__ import annotations

from typing import Any, Iterable

import polars as pl

from config.catalog import DIFFICULTIES, PRACTICE_AREAS, SAMPLE_TYPES
from quality.checks import FLAGS


def flag_counts(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    exploded = frame.select(pl.col("flags")).explode("flags").drop_nulls()
    counted = dict(exploded.group_by("flags").agg(pl.len()).iter_rows()) if exploded.height else {}
    return {code: {"count": int(counted.get(code, 0)), "severity": spec.severity, "meaning": spec.meaning}
            for code, spec in FLAGS.items()}


def duplicate_clusters(edges: Iterable[tuple[str, str]], limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """Groups of samples linked by `duplicate_of` (union-find), largest first."""
    parent: dict[str, str] = {}

    def root(node: str) -> str:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for sample_id, other in edges:
        parent[root(sample_id)] = root(other)
    groups: dict[str, list[str]] = {}
    for node in parent:
        groups.setdefault(root(node), []).append(node)
    clusters = sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
    return len(clusters), [{"size": len(g), "ids": g} for g in clusters[:limit]]


def coverage(frame: pl.DataFrame) -> dict[str, Any]:
    counts = {(a, d, t): n for a, d, t, n in frame.group_by("practice_area", "difficulty", "sample_type")
              .agg(pl.len()).iter_rows()}
    matrix: dict[str, dict[str, dict[str, int]]] = {}
    gaps = []
    for area in PRACTICE_AREAS:
        matrix[area] = {}
        for difficulty in DIFFICULTIES:
            matrix[area][difficulty] = {}
            for kind in SAMPLE_TYPES:
                n = counts.get((area, difficulty, kind), 0)
                matrix[area][difficulty][kind] = n
                if n == 0:
                    gaps.append({"practice_area": area, "difficulty": difficulty, "sample_type": kind})
    cells = [n for d in matrix.values() for t in d.values() for n in t.values()]
    return {"matrix": matrix, "cells": len(cells), "empty_cells": len(gaps), "min_cell": min(cells),
            "max_cell": max(cells), "gaps": gaps}


def quality_stats(frame: pl.DataFrame) -> dict[str, Any]:
    scored = frame.filter(pl.col("quality_score").is_not_null())
    rejectable = {code for code, spec in FLAGS.items() if spec.severity == "reject"}
    flagged_rejectable = frame.filter(pl.col("flags").list.eval(pl.element().is_in(list(rejectable))).list.any())
    edges = frame.filter(pl.col("duplicate_of").is_not_null()).select("id", "duplicate_of").iter_rows()
    cluster_count, clusters = duplicate_clusters(edges)
    return {
        "total_samples": frame.height,
        "scored_samples": scored.height,
        "mean_score": round(float(scored["quality_score"].mean()), 4) if scored.height else None,
        "samples_with_reject_flags": flagged_rejectable.height,
        "flags": flag_counts(frame),
        "duplicate_cluster_count": cluster_count,
        "duplicate_clusters": clusters,
        "coverage": coverage(frame.filter(pl.col("sample_type").is_not_null())),
    }
