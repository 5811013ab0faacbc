"""Pulumi entry point: read config, build both regions, export outputs."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from infra.program import StackConfig, build  # noqa: E402

build(StackConfig.from_pulumi())
