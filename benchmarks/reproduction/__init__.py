"""CPU reproduction of "The Conformer Encoder May Reverse the Time Dimension" (see docs/reproduction.md).

Run as modules from the repository root: ``python -m benchmarks.reproduction.train baseline-seed0``,
``python -m benchmarks.reproduction.sweep``, ``python -m benchmarks.reproduction.evaluate``,
``python -m benchmarks.reproduction.table``.
"""
