"""Three-way drift (desired / recorded / observed), drift history and self-heal choice: pure."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.plan import observed
from reconciler.states import DriftClass, ObservationStatus

OK, UNREACHABLE, MISSING = (
    ObservationStatus.OK,
    ObservationStatus.UNREACHABLE,
    ObservationStatus.MISSING,
)


@dataclass(frozen=True)
class Seen:
    version: str | None
    status: ObservationStatus = OK
    observed_at: float = 100.0


@dataclass(frozen=True)
class Mark:
    since: float | None = None
    healed_at: float | None = None
    flapping: bool = False


def env(*groups: GroupDesired) -> EnvironmentDesired:
    return EnvironmentDesired(
        "prod", "environments/prod.yaml", "inv.yml", {g.name: g for g in groups}
    )


def group(name: str, hosts: list[str], apps: dict[str, str]) -> GroupDesired:
    return GroupDesired(
        name, apps, tuple(Host(h, h) for h in hosts), (), "deploy-app.yml", Rollout(), (), 60
    )


def test_each_class_from_the_three_versions():
    c = observed.classify
    assert c("2", None, Seen("2"), observing=True) is DriftClass.NEW_HOST
    assert c("2", "1", Seen("1"), observing=True) is DriftClass.PENDING
    assert c("2", "1", None, observing=True) is DriftClass.PENDING
    assert c("2", "2", Seen("2"), observing=True) is DriftClass.IN_SYNC
    assert c("2", "2", Seen("1"), observing=True) is DriftClass.OUT_OF_BAND
    assert c("2", "2", None, observing=True) is DriftClass.UNKNOWN
    assert c("2", "2", Seen(None, UNREACHABLE), observing=True) is DriftClass.UNKNOWN
    assert c("2", "2", Seen(None, MISSING), observing=True) is DriftClass.UNKNOWN
    stopped = Seen(None, ObservationStatus.STOPPED)
    assert c("2", "2", stopped, observing=True) is DriftClass.OUT_OF_BAND, "a stopped app"
    assert c("2", "2", None, observing=False) is DriftClass.IN_SYNC, "observation off"
    assert c("2", "2", Seen("1"), observing=False) is DriftClass.IN_SYNC


versions = st.sampled_from(["1", "2", "3"])


@given(
    desired=versions,
    recorded=st.none() | versions,
    seen=st.none()
    | st.builds(Seen, st.none() | versions, st.sampled_from(list(ObservationStatus))),
)
def test_unreachable_or_unobserved_is_never_in_sync(desired, recorded, seen):
    drift = observed.classify(desired, recorded, seen, observing=True)
    if drift is DriftClass.IN_SYNC:
        assert seen is not None and seen.status is OK and seen.version == recorded == desired
    if seen is not None and seen.status is ObservationStatus.STOPPED and recorded == desired:
        assert drift is DriftClass.OUT_OF_BAND
    if recorded is not None and recorded != desired:
        assert drift is DriftClass.PENDING, "a pending change wins over what a host reports"


def test_host_states_carry_the_observed_version_and_history():
    e = env(group("web", ["w1", "w2", "w3"], {"shop": "2"}))
    recorded = {("w1", "shop"): "2", ("w2", "shop"): "2", ("w3", "shop"): "1"}
    seen = {("w1", "shop"): Seen("2"), ("w2", "shop"): Seen("1", observed_at=50.0)}
    marks = {("w2", "shop"): Mark(since=40.0, flapping=True), ("w1", "shop"): Mark(since=1.0)}
    states = {s.host: s for s in observed.host_states(e, recorded, seen, marks)}
    assert states["w1"].drift is DriftClass.IN_SYNC and states["w1"].since is None
    assert (states["w2"].drift, states["w2"].observed, states["w2"].observed_at) == (
        DriftClass.OUT_OF_BAND,
        "1",
        50.0,
    )
    assert states["w2"].since == 40.0 and states["w2"].flapping
    assert states["w3"].drift is DriftClass.PENDING and states["w3"].observed is None


def test_drift_since_stays_the_first_time_and_clears_when_resolved():
    e = env(group("web", ["w1"], {"shop": "2"}))
    out_of_band = observed.host_states(e, {("w1", "shop"): "2"}, {("w1", "shop"): Seen("1")})
    [first] = observed.next_marks(out_of_band, {}, 100.0, flap_period=3600)
    assert first.since == 100.0 and not first.flapping
    [later] = observed.next_marks(out_of_band, {("w1", "shop"): first}, 200.0, flap_period=3600)
    assert later.since == 100.0
    fixed = observed.host_states(e, {("w1", "shop"): "2"}, {("w1", "shop"): Seen("2")})
    assert observed.next_marks(fixed, {("w1", "shop"): later}, 300.0, flap_period=3600) == []


def test_a_host_that_drifts_again_soon_after_a_heal_is_flapping():
    e = env(group("web", ["w1"], {"shop": "2"}))
    drifting = observed.host_states(e, {("w1", "shop"): "2"}, {("w1", "shop"): Seen("1")})
    [healed] = observed.next_marks(drifting, {}, 1000.0, flap_period=3600, healed={("w1", "shop")})
    assert healed.healed_at == 1000.0 and not healed.flapping
    [again] = observed.next_marks(drifting, {("w1", "shop"): healed}, 2000.0, flap_period=3600)
    assert again.flapping, "out of band again 1000 s after the heal, within the hour"
    [late] = observed.next_marks(drifting, {("w1", "shop"): healed}, 9000.0, flap_period=3600)
    assert not late.flapping, "drifting again long after a heal is new drift, not flapping"


def test_self_heal_only_where_enabled_never_flapping_and_not_during_a_change():
    e = env(
        group("web", ["w1", "w2"], {"shop": "2"}),
        group("api", ["a1"], {"api": "5"}),
        group("db", ["d1", "d2"], {"db": "9"}),
    )
    recorded = {("w1", "shop"): "2", ("w2", "shop"): "2", ("a1", "api"): "5"}
    recorded |= {("d1", "db"): "9", ("d2", "db"): "8"}  # d2 has a pending change
    seen = {(h, a): Seen("0") for (h, a) in recorded}
    marks = {("w2", "shop"): Mark(since=1.0, flapping=True)}
    states = observed.host_states(e, recorded, seen, marks)
    assert observed.to_heal(states, {"web", "db"}) == {"web": ("w1",)}
    assert observed.to_heal(states, {"web", "api", "db"}) == {"web": ("w1",), "api": ("a1",)}
    planned = observed.heal_recorded(recorded, states, {"w1"})
    assert planned[("w1", "shop")] == "0" and planned[("w2", "shop")] == "2"


def test_groups_not_observed_are_classified_on_desired_and_recorded():
    e = env(group("web", ["w1"], {"shop": "2"}), group("api", ["a1"], {"api": "5"}))
    recorded = {("w1", "shop"): "2", ("a1", "api"): "5"}
    states = {s.group: s.drift for s in observed.host_states(e, recorded, {}, unobserved={"api"})}
    assert states == {"web": DriftClass.UNKNOWN, "api": DriftClass.IN_SYNC}
