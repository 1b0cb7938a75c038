"""The loader returns problems for any content, never raises, in bounded time; ``safe`` makes any
text terminal-safe and short. Property-based (hypothesis): arbitrary bytes, YAML-ish text built
from YAML's own syntax, and well-formed documents with hostile pieces."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired.problems import Problem
from reconciler.support.text import MIN_LIMIT, clip, safe
from tests.hostile.builder import ENV_FILE, VALID
from tests.hostile.conftest import load

UNSAFE = {"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"}
FUZZ = settings(
    max_examples=300,
    deadline=timedelta(seconds=10),  # bounded time, generous on a shared machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SYNTAX = st.sampled_from(
    [*"&*[]{}:-,?|>!#%@`'\"\n\t \\", "---", "...", "<<", "!!", "!!python/object:os.system", "\x00"]
)
WORDS = st.sampled_from(
    [
        "environment",
        "inventory",
        "defaults",
        "groups",
        "web",
        "apps",
        "shop",
        "1.0.0",
        "prod",
        "inventories/prod.yml",
        "rollout",
        "canary",
        "health",
        "after",
        "playbook",
        "a",
        "0",
    ]
)
YAMLISH = st.lists(st.one_of(SYNTAX, WORDS, st.text(max_size=5)), max_size=120).map("".join)


def scalars() -> st.SearchStrategy[str]:
    return st.one_of(
        WORDS,
        st.integers().map(str),
        st.floats().map(repr),
        st.text(max_size=20).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
        st.sampled_from(["~", "null", "true", ".inf", "0x1F", "1e999", "!!binary aGk=", "*a"]),
    )


def documents() -> st.SearchStrategy[str]:
    """Flow-style YAML documents of the schema's words, nested, with hostile leaves."""
    leaves = scalars()
    nodes = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.dictionaries(WORDS, inner, max_size=4).map(
                lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
            ),
        ),
        max_leaves=30,
    )
    return st.dictionaries(WORDS, nodes, max_size=6).map(
        lambda d: "".join(f"{k}: {v}\n" for k, v in d.items())
    )


def _check(repo: Path, data: bytes) -> None:
    (repo / ENV_FILE).write_bytes(data)
    result = load(repo)
    assert (result.state is None) == bool(result.problems)
    for problem in result.problems:
        assert isinstance(problem, Problem) and problem.line >= 1
        shown = str(problem)
        assert len(shown) <= 200 + 500 + 20
        assert not any(unicodedata.category(c) in UNSAFE for c in shown), shown


@FUZZ
@given(data=st.binary(max_size=3000))
def test_arbitrary_bytes(repo, data):
    _check(repo, data)


@FUZZ
@given(text=YAMLISH)
def test_yaml_syntax_soup(repo, text):
    _check(repo, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=documents())
def test_documents_of_the_schema_words(repo, text):
    _check(repo, text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(cut=st.integers(0, len(VALID)), insert=YAMLISH)
def test_the_valid_document_with_something_spliced_in(repo, cut, insert):
    _check(repo, (VALID[:cut] + insert + VALID[cut:]).encode("utf-8", "surrogatepass"))


@given(text=st.text(), limit=st.one_of(st.none(), st.integers(0, 300)))
def test_safe_is_terminal_safe_short_and_idempotent(text, limit):
    shown = safe(text, limit)
    assert not any(unicodedata.category(c) in UNSAFE for c in shown)
    if limit is not None:
        assert len(shown) <= max(limit, MIN_LIMIT)
    assert safe(shown, limit) == shown
    if limit is None and text.isprintable():
        assert shown == text


@given(text=st.text(max_size=200), limit=st.integers(MIN_LIMIT, 100))
def test_clip_keeps_the_start_and_says_how_much_was_cut(text, limit):
    clipped = clip(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
    else:
        head, _, rest = clipped.rpartition("…[+")
        assert text.startswith(head) and rest == f"{len(text) - len(head)} chars]"


def test_safe_examples():
    assert safe("a\x1b[31mb\nc\u202ed\U000e0001") == "a\\x1b[31mb\\nc\\u202ed\\U000e0001"
    assert safe("x" * 100, 30) == "x" * 18 + "…[+82 chars]"
    assert safe("\x1b" * 10, 30) == "\\x1b" * 4 + "…[+6 chars]"
    assert safe("é ü 中文 \u00a0") == "é ü 中文 \u00a0"

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError

    assert safe(Hostile()) == "<unprintable Hostile>"
