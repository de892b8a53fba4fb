"""Ingest: find the cases of a source dataset, check every pair, fingerprint, plan, split, preprocess,
and write ``data/NAME/`` (docs/INTERNALS.md). ``ingest(...)`` is the entry point."""

from __future__ import annotations

from medseg.ingest.pipeline import ingest
from medseg.ingest.plan import auto_target_spacing, make_plan, make_splits, parse_target_spacing
from medseg.ingest.sources import Case, find_cases, labels_from_json, match_by_stem

__all__ = ["ingest", "find_cases", "Case", "labels_from_json", "match_by_stem", "auto_target_spacing",
           "make_plan", "make_splits", "parse_target_spacing"]
