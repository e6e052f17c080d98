"""The mcpdeploy policy pack: ``pulumi preview --policy-pack policies`` runs this file.

Every policy is mandatory unless it says otherwise (required-tags is advisory); a stack
waives one through ``--policy-pack-config`` (policies/README.md).
"""

from guardrails import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=PACK_NAME,
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="The deployment guide's security rules for the mcpdeploy AWS stack",
)
