"""Benchmarks of the real path (``explore bench``): worker events/s, event-to-plan latency,
planner plans/s, Feast rows/s and a batch-size sweep, each against the naive per-event path
where that makes sense. Every function here prints nothing; ``plugin.cli.bench`` does.
"""
