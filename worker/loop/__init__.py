"""Glue between the round state machine (app/rounds) and the ML library (worker/ml).

Each module is one step of a round: it reads ids' rows, builds the ML inputs, calls worker.ml,
and writes results, progress and status back. Tasks in worker/tasks.py only call these.
See docs/loop.md for the state machine, idempotency and recovery."""
