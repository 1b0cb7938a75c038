"""The record (TEMPORARY shim until the store reshape lands)."""

from reconciler.record.sqlite import (
    DeployedVersion,
    EnvironmentStatus,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    StateStore,
    StepRecord,
    StoreError,
)

__all__ = [
    "DeployedVersion",
    "EnvironmentStatus",
    "QuarantineRecord",
    "RolloutRecord",
    "RunRecord",
    "StateStore",
    "StepRecord",
    "StoreError",
]
