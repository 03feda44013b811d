"""Writing export rows as streamed JSONL or as a Parquet file, each with its own DB session.

A streamed response outlives the request's session, so the generators here open their own
from the app's sessionmaker and close it when the last byte is written (or the client leaves)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.orm import Session, sessionmaker

RowProducer = Callable[[Session], Iterator[dict[str, Any]]]
ROWS_PER_CHUNK = 500

_messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_ids = pa.list_(pa.int64())
_completion = [("completion_id", pa.int64()), ("position", pa.int64()), ("text", pa.string()), ("model", pa.string())]
_prompt = [
    ("prompt_id", pa.int64()),
    ("prompt_external_id", pa.string()),
    ("prompt_text", pa.string()),
    ("prompt_messages", _messages),
]
_pair_ids = [
    ("rank_gap", pa.int64()),
    ("task_id", pa.int64()),
    ("ranking_id", pa.int64()),
    ("labeler_id", pa.string()),
    ("prompt_id", pa.int64()),
    ("prompt_external_id", pa.string()),
    ("chosen_id", pa.int64()),
    ("rejected_id", pa.int64()),
    ("source", pa.string()),
    ("evaluation_id", pa.int64()),
    # Which form the judgment came from (the task's kind), and for pairs derived from ratings
    # (app/exports/feedback.py): the judgment, the score difference, and what was scored.
    ("form", pa.string()),
    ("feedback_id", pa.int64()),
    ("score_gap", pa.float64()),
    ("scored_by", pa.string()),
]
_critiques = pa.list_(pa.struct([("completion_id", pa.int64()), ("critique", pa.string())]))

RANKINGS = pa.schema(
    [
        ("ranking_id", pa.int64()),
        ("task_id", pa.int64()),
        *_prompt,
        ("labeler_id", pa.string()),
        ("ranking", pa.list_(_ids)),
        ("ranking_texts", pa.list_(pa.list_(pa.string()))),
        ("completions", pa.list_(pa.struct(_completion))),
        ("display_order", _ids),
        ("flags", pa.list_(pa.struct([("completion_id", pa.int64()), ("flags", pa.list_(pa.string()))]))),
        ("none_acceptable", pa.bool_()),
        ("critiques", _critiques),
        ("time_spent_ms", pa.int64()),
        ("comment", pa.string()),
        ("late", pa.bool_()),
        ("submitted_at", pa.string()),
        ("source", pa.string()),
        ("evaluation_id", pa.int64()),
    ]
)
CONSENSUS = pa.schema(
    [
        ("task_id", pa.int64()),
        *_prompt,
        ("status", pa.string()),
        ("n_rankings", pa.int64()),
        ("consensus", pa.list_(_ids)),
        ("consensus_texts", pa.list_(pa.list_(pa.string()))),
        (
            "completions",
            pa.list_(
                pa.struct(
                    [
                        *_completion,
                        ("mean_rank", pa.float64()),
                        ("flags", pa.list_(pa.struct([("flag", pa.string()), ("count", pa.int64())]))),
                    ]
                )
            ),
        ),
        ("none_acceptable_votes", pa.int64()),
        ("kendall_w", pa.float64()),
        ("mean_kendall_tau_b", pa.float64()),
        ("verdict_agreement", pa.float64()),
        ("verdict_pairs", pa.int64()),
        ("source", pa.string()),
        ("evaluation_id", pa.int64()),
    ]
)
PAIRS_STANDARD = pa.schema([("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), *_pair_ids])
PAIRS_CONVERSATIONAL = pa.schema([("prompt", _messages), ("chosen", _messages), ("rejected", _messages), *_pair_ids])
_unpaired_ids = [
    ("label", pa.bool_()),
    ("task_id", pa.int64()),
    ("feedback_id", pa.int64()),
    ("labeler_id", pa.string()),
    ("prompt_id", pa.int64()),
    ("prompt_external_id", pa.string()),
    ("completion_id", pa.int64()),
    ("critique", pa.string()),
]
UNPAIRED_STANDARD = pa.schema([("prompt", pa.string()), ("completion", pa.string()), *_unpaired_ids])
UNPAIRED_CONVERSATIONAL = pa.schema([("prompt", _messages), ("completion", _messages), *_unpaired_ids])
_aspect = pa.struct([("name", pa.string()), ("label", pa.string()), ("scale", pa.string())])
JUDGMENTS = pa.schema(
    [
        ("feedback_id", pa.int64()),
        ("ranking_id", pa.int64()),
        ("task_id", pa.int64()),
        ("form", pa.string()),
        *_prompt,
        ("labeler_id", pa.string()),
        ("completions", pa.list_(pa.struct(_completion))),
        ("display_order", _ids),
        (
            "ratings",
            pa.list_(
                pa.struct(
                    [
                        ("completion_id", pa.int64()),
                        ("aspect", pa.string()),
                        ("value", pa.int64()),
                        ("critique", pa.string()),
                    ]
                )
            ),
        ),
        (
            "settings",
            pa.struct(
                [
                    ("likert_points", pa.int64()),
                    ("likert_labels", pa.list_(pa.string())),
                    ("aspects", pa.list_(_aspect)),
                    ("overall_ranking", pa.bool_()),
                ]
            ),
        ),
        ("verdict", pa.string()),
        ("ranking", pa.list_(_ids)),
        ("none_acceptable", pa.bool_()),
        ("flags", pa.list_(pa.struct([("completion_id", pa.int64()), ("flags", pa.list_(pa.string()))]))),
        ("critiques", _critiques),
        ("time_spent_ms", pa.int64()),
        ("comment", pa.string()),
        ("late", pa.bool_()),
        ("submitted_at", pa.string()),
    ]
)


def jsonl_chunks(sessions: sessionmaker[Session], produce: RowProducer) -> Iterator[bytes]:
    """UTF-8 JSONL, a few hundred rows per chunk."""
    with sessions() as db:
        rows = produce(db)
        while chunk := list(islice(rows, ROWS_PER_CHUNK)):
            yield "".join(_line(row) for row in chunk).encode()


def _line(row: dict) -> str:
    # Raw U+2028/U+2029/U+0085 are valid inside JSON strings, but str.splitlines() and some
    # readers end a line there: escaped, every row is exactly one "\n"-terminated line.
    text = json.dumps(row, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085") + "\n"


def write_parquet(sessions: sessionmaker[Session], produce: RowProducer, schema: pa.Schema) -> str:
    """Writes the rows to a temporary Parquet file in row groups; returns its path (caller deletes it)."""
    handle, path = tempfile.mkstemp(suffix=".parquet", prefix="ranklab-export-")
    os.close(handle)
    try:
        with sessions() as db, pq.ParquetWriter(path, schema) as writer:
            rows = produce(db)
            wrote = False
            while chunk := list(islice(rows, ROWS_PER_CHUNK * 4)):
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                wrote = True
            if not wrote:  # an empty export is still a valid file with the columns
                writer.write_table(schema.empty_table())
    except BaseException:
        os.unlink(path)
        raise
    return path
