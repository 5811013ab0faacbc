"""CrossGuard entry point: ``pulumi preview --policy-pack infra/policy`` runs every rule of rules.py
as a mandatory stack validation (see pack.py)."""

import os
import sys

from pulumi_policy import EnforcementLevel, PolicyPack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pack import policies  # noqa: E402

PolicyPack(name="emailplatform", enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
