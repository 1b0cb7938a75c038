"""The pure planning core: drift, canary steps and cohort stability."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.plan import canary as planning


def group(name: str, hosts: list[str], apps: dict[str, str], canary=(100,), after=()):
    return GroupDesired(
        name=name,
        apps=apps,
        hosts=tuple(Host(h, "127.0.0.1") for h in hosts),
        after=after,
        playbook="deploy-app.yml",
        rollout=Rollout(canary=tuple(canary)),
        health=(),
        timeout_s=60,
    )


def environment(*groups: GroupDesired) -> EnvironmentDesired:
    return EnvironmentDesired(
        "prod", "environments/prod.yaml", "inv.yml", {g.name: g for g in groups}
    )


def test_nothing_recorded_means_every_host_drifts():
    env = environment(group("web", ["a", "b"], {"shop": "1.0"}))
    rows = planning.drift(env, {})
    assert [(r.host, r.app, r.desired, r.recorded) for r in rows] == [
        ("a", "shop", "1.0", None),
        ("b", "shop", "1.0", None),
    ]


def test_in_sync_group_plans_no_step():
    env = environment(group("web", ["a", "b"], {"shop": "1.0"}))
    plan = planning.plan_environment(env, {("a", "shop"): "1.0", ("b", "shop"): "1.0"})
    assert plan.in_sync
    assert plan.group("web").steps == ()


def test_only_drifted_apps_and_hosts_are_planned():
    env = environment(group("web", ["a", "b", "c"], {"shop": "2.0", "cart": "1.0"}))
    recorded = {
        ("a", "shop"): "2.0",
        ("a", "cart"): "1.0",
        ("b", "shop"): "1.0",
        ("b", "cart"): "1.0",
    }
    plan = planning.plan_environment(env, recorded).group("web")
    changes = {c.host: dict(c.apps) for c in plan.changes}
    assert changes == {
        "b": {"shop": ("1.0", "2.0")},
        "c": {"shop": (None, "2.0"), "cart": (None, "1.0")},
    }


def test_ten_hosts_in_10_50_100_give_steps_of_1_4_5():
    hosts = [f"web-{i:02d}" for i in range(10)]
    env = environment(group("web", hosts, {"shop": "2.0"}, canary=(10, 50, 100)))
    plan = planning.plan_environment(env, {}).group("web")
    assert [len(s.hosts) for s in plan.steps] == [1, 4, 5]
    assert [s.cohort_size for s in plan.steps] == [1, 5, 10]


def test_step_with_only_synced_hosts_is_skipped_but_keeps_its_cohort():
    hosts = [f"h{i}" for i in range(4)]
    ordered = planning.cohort("prod", "web", hosts)
    recorded = {(ordered[0], "shop"): "2.0"}  # the canary host is already done
    env = environment(group("web", hosts, {"shop": "2.0"}, canary=(25, 100)))
    plan = planning.plan_environment(env, recorded).group("web")
    assert [(s.index, s.hosts) for s in plan.steps] == [(2, ordered[1:])]


def test_groups_keep_dependency_order():
    env = environment(
        group("web", ["a"], {"shop": "1"}), group("worker", ["w"], {"jobs": "1"}, after=("web",))
    )
    plan = planning.plan_environment(env, {})
    assert [g.group for g in plan.groups] == ["web", "worker"]
    assert plan.group("worker").after == ("web",)


def test_cohort_differs_between_groups_and_environments():
    hosts = [f"h{i}" for i in range(50)]
    assert planning.cohort("prod", "web", hosts) != planning.cohort("prod", "api", hosts)
    assert planning.cohort("prod", "web", hosts) != planning.cohort("stage", "web", hosts)


hosts_st = st.lists(
    st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=1, max_size=60, unique=True
)
canary_st = st.lists(st.integers(1, 99), max_size=4, unique=True).map(lambda xs: (*sorted(xs), 100))


@given(hosts=hosts_st, canary=canary_st, data=st.data())
def test_steps_partition_the_drifted_hosts(hosts, canary, data):
    synced = data.draw(st.sets(st.sampled_from(hosts)))
    env = environment(group("web", hosts, {"shop": "2"}, canary=canary))
    recorded = {(h, "shop"): "2" for h in synced}
    plan = planning.plan_environment(env, recorded).group("web")
    stepped = [h for s in plan.steps for h in s.hosts]
    assert len(stepped) == len(set(stepped))
    assert set(stepped) == set(hosts) - synced
    # The steps kept are exactly the canary steps with work, each with its own percent and
    # cumulative count: a step whose cohort slice is all in sync is dropped, none is invented.
    counts = planning.step_counts(canary, len(hosts))
    assert all(s.hosts for s in plan.steps)
    assert [(s.index, s.percent, s.cohort_size) for s in plan.steps] == [
        (k, canary[k - 1], counts[k - 1])
        for k in range(1, len(canary) + 1)
        if set(cohort_slice(plan, hosts, canary, k)) - synced
    ]


def cohort_slice(plan, hosts, canary, k: int) -> tuple[str, ...]:
    """The hosts step k covers in the stable cohort: between the cumulative counts of k-1 and k."""
    ordered = planning.cohort("prod", plan.group, hosts)
    counts = (0, *planning.step_counts(canary, len(hosts)))
    return ordered[counts[k - 1] : counts[k]]


@given(hosts=hosts_st, canary=canary_st, data=st.data())
def test_step_k_changes_the_drifted_hosts_of_its_cohort_slice(hosts, canary, data):
    shop_done = data.draw(st.sets(st.sampled_from(hosts)))
    cart_done = data.draw(st.sets(st.sampled_from(hosts)))
    env = environment(group("web", hosts, {"shop": "2", "cart": "1"}, canary=canary))
    recorded = {(h, "shop"): "2" for h in shop_done} | {(h, "cart"): "1" for h in cart_done}
    plan = planning.plan_environment(env, recorded).group("web")
    in_sync = shop_done & cart_done
    assert plan.steps or not set(hosts) - in_sync
    for step in plan.steps:
        window = cohort_slice(plan, hosts, canary, step.index)
        # in the slice, in cohort order, and every drifted host of the slice
        assert step.hosts == tuple(h for h in window if h not in in_sync)


VERSIONS = ("1.0", "1.1", "2.0")
apps_st = st.dictionaries(
    st.sampled_from(["shop", "cart", "shop-worker", "search"]),
    st.sampled_from(VERSIONS),
    min_size=1,
)


@st.composite
def environments_and_records(draw):
    """Several groups (disjoint hosts, `after` a chain), several apps each, and a record that
    holds the desired version, another version or nothing for each (host, app)."""
    names = draw(
        st.lists(st.sampled_from(["web", "api", "worker", "cron"]), min_size=1, unique=True)
    )
    groups: list[GroupDesired] = []
    for name in names:
        suffix_st = st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True)
        suffixes = draw(st.lists(suffix_st, min_size=1, max_size=15, unique=True))
        after = (groups[-1].name,) if groups else ()
        hosts = [f"{name}-{suffix}" for suffix in suffixes]
        groups.append(group(name, hosts, draw(apps_st), canary=draw(canary_st), after=after))
    recorded = {}
    for g in groups:
        for host in g.host_names:
            for app, version in g.apps.items():
                others = [v for v in VERSIONS if v != version]
                choice = draw(st.sampled_from([version, None, *others]))
                if choice is not None:
                    recorded[(host, app)] = choice
    return environment(*groups), recorded


@given(case=environments_and_records())
def test_drift_and_plan_agree(case):
    env, recorded = case
    rows = planning.drift(env, recorded)
    plan = planning.plan_environment(env, recorded)
    assert [g.group for g in plan.groups] == list(env.groups)
    assert plan.in_sync == (not rows)
    for name, desired in env.groups.items():
        # drift: exactly the (host, app) pairs whose record is not the desired version
        expected = {
            (host, app): (recorded.get((host, app)), version)
            for host in desired.host_names
            for app, version in desired.apps.items()
            if recorded.get((host, app)) != version
        }
        mine = [r for r in rows if r.group == name]
        assert all(r.environment == "prod" for r in mine)
        assert {(r.host, r.app): (r.recorded, r.desired) for r in mine} == expected
        assert len(mine) == len(expected)
        # plan: the hosts of all steps are the drifted hosts, each once; each change lists
        # exactly the drifted apps with their recorded and desired versions
        group_plan = plan.group(name)
        drifted_hosts = {host for host, _ in expected}
        stepped = [h for s in group_plan.steps for h in s.hosts]
        assert sorted(stepped) == sorted(drifted_hosts)
        assert group_plan.in_sync == (not drifted_hosts)
        assert {c.host: dict(c.apps) for c in group_plan.changes} == {
            host: {app: versions for (h, app), versions in expected.items() if h == host}
            for host in drifted_hosts
        }
        assert group_plan.total_hosts == len(desired.host_names)
        assert dict(group_plan.apps) == dict(desired.apps)


@given(total=st.integers(1, 10_000), canary=canary_st)
def test_step_counts_follow_ceil_rule(total, canary):
    counts = planning.step_counts(canary, total)
    assert counts[-1] == total
    assert all(a <= b for a, b in itertools.pairwise(counts))
    for pct, count in zip(canary, counts, strict=True):
        assert count == max(1, math.ceil(pct * total / 100))


@given(hosts=hosts_st, seed=st.randoms())
def test_cohort_is_independent_of_input_order(hosts, seed):
    shuffled = list(hosts)
    seed.shuffle(shuffled)
    assert planning.cohort("prod", "web", hosts) == planning.cohort("prod", "web", shuffled)


@given(hosts=hosts_st, extra=st.from_regex(r"[a-z]{3,6}-new", fullmatch=True))
def test_adding_a_host_keeps_the_others_relative_order(hosts, extra):
    before = planning.cohort("prod", "web", hosts)
    after = planning.cohort("prod", "web", [*hosts, extra])
    assert [h for h in after if h != extra] == list(before)


def test_cohort_is_pinned_across_machines():
    # sha256 of "environment\0group\0host": the same order on every machine and Python version
    assert (
        planning.cohort_key("production", "web", "web-01")
        == "8c0b831040f525cdfe459a8cb9a89894ac75f84f59446726743de7e97fbe51b2"
    )
    assert planning.cohort("production", "web", ["web-04", "web-03", "web-02", "web-01"]) == (
        "web-02",
        "web-01",
        "web-03",
        "web-04",
    )
