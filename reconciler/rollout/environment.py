"""Roll out the groups of one environment: ``after`` order, independent groups in parallel.

Contract (``roll_out``): every group of the plan gets exactly one outcome. A group starts once
every group it follows has an outcome (``plan.policy.GroupOrder``); ``plan.policy.decide`` says
what becomes of a group that must not roll out (in sync, held, waiting behind a blocking group,
or a stop came first); the others run ``roll(group_plan)`` in a pool of at most ``parallel``
threads. Outcomes come back in plan order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from reconciler.plan import policy
from reconciler.plan.canary import EnvironmentPlan, GroupPlan
from reconciler.plan.outcomes import GroupOutcome


def roll_out(
    plan: EnvironmentPlan,
    held: Mapping[str, GroupOutcome],
    roll: Callable[[GroupPlan], GroupOutcome],
    *,
    parallel: int,
    stopping: threading.Event,
) -> dict[str, GroupOutcome]:
    order = policy.GroupOrder(plan)
    outcomes: dict[str, GroupOutcome] = {}
    queued: list[GroupPlan] = []
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="group") as pool:
        running: dict[Future[GroupOutcome], str] = {}
        while order.active or queued or running:
            queued.extend(order.ready())
            for group_plan in list(queued):
                decided = policy.decide(group_plan, outcomes, held, stopping=stopping.is_set())
                if decided is None and len(running) >= parallel:
                    continue
                queued.remove(group_plan)
                if decided is not None:
                    outcomes[group_plan.group] = decided
                    order.done(group_plan.group)
                else:
                    running[pool.submit(roll, group_plan)] = group_plan.group
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                outcomes[name] = future.result()
                order.done(name)
    return {g.group: outcomes[g.group] for g in plan.groups}
