"""The CrossGuard side: pulumi_policy's view of a stack → ``rules.Resource`` records, and each rule
as a mandatory ``StackValidationPolicy``. ``__main__.py`` serves them; tests/infra calls them.

During a preview of resources not created yet some values (ARNs) are unknown; pulumi_policy then
reports the rule as advisory ("can't run policy during preview") instead of failing it. A preview
of an existing stack, or ``pulumi up --policy-pack``, gives the full verdict.
"""

from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, StackValidationArgs, StackValidationPolicy

try:  # as a package (tests) or as the policy pack's own directory (pulumi runs __main__.py there)
    from .rules import RULES, Resource
except ImportError:  # pragma: no cover
    from rules import RULES, Resource  # type: ignore[no-redef]


def to_resources(args: StackValidationArgs) -> list[Resource]:
    """pulumi_policy's resources → the records the rules take (their providers included)."""
    out: dict[str, Resource] = {}
    for r in args.resources:
        if r.provider is not None and r.provider.urn not in out:
            out[r.provider.urn] = Resource(r.provider.resource_type, r.provider.name, r.provider.urn, r.provider.props)
        out[r.urn] = Resource(
            type=r.resource_type, name=r.name, urn=r.urn, props=r.props,
            provider=r.provider.urn if r.provider is not None else None,
            dependencies=[d.urn for d in r.dependencies], protect=bool(r.opts.protect),
            parent=r.opts.parent or (r.parent.urn if r.parent is not None else None))
    return list(out.values())


def stack_policy(name: str, rule: Any) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: Any) -> None:
        for v in rule(to_resources(args)):
            report_violation(v.message, v.urn or None)

    return StackValidationPolicy(name=name, description=(rule.__doc__ or name).strip().splitlines()[0],
                                 validate=validate, enforcement_level=EnforcementLevel.MANDATORY)


def policies() -> list[StackValidationPolicy]:
    return [stack_policy(name, rule) for name, rule in RULES.items()]
