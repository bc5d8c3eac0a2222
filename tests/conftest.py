"""Hypothesis profiles: ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) replays the same examples on
every run, so a red CI always means a change, never a new draw; locally the search stays random."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))
