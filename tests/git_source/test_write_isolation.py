"""Write-back never holds up reading, and a stalled remote cannot hold a write for long.

A real bare remote gets a ``pre-receive`` hook that stalls pushes of the reconciler's own
commits (and only those) until the test releases them, so a push hangs exactly as it would on a
remote that stops answering. The test synchronises with the hook through fifos, never by
sleeping: the hook writes to ``entered`` when it starts to stall and reads its verdict from
``release``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reconciler.desired.messages import RevertRequest
from reconciler.edges.git import PushResult
from reconciler.edges.git.reader import GitSource
from reconciler.edges.git.writer import WriteBack
from reconciler.support.backoff import Backoff
from tests.git_source.test_revert import BASE, ENV_FILE, WEB_BUMPED, _other_push, _request
from tests.gitrepo import GitRemote

BOT = "bot@reconciler.invalid"
#: A promptness bound, not a behaviour: time to kill a git process group and reap it, on a
#: loaded shared machine.
PROMPTNESS_S = 10.0
#: How long the test waits for the hook to start stalling before it calls that a failure.
HOOK_START_S = 60.0

HOOK = """\
#!/bin/sh
# Stall pushes of commits authored by the reconciler until the test releases them.
while read old new ref; do
  if [ "$(git log -1 --format=%ae "$new")" = "{bot}" ]; then
    echo $$ > "{pid}"
    echo entered > "{entered}"
    read verdict < "{release}"
    [ "$verdict" = ok ] && exit 0
    echo "released: $verdict" >&2
    exit 1
  fi
done
exit 0
"""


class StallingRemote:
    """The ``pre-receive`` hook and the test's end of its fifos."""

    def __init__(self, remote: GitRemote, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.entered = base / "entered"
        self.release_fifo = base / "release"
        self.pid_file = base / "hook.pid"
        os.mkfifo(self.entered)
        os.mkfifo(self.release_fifo)
        self.hook = remote.bare / "hooks" / "pre-receive"
        self.hook.write_text(
            HOOK.format(bot=BOT, pid=self.pid_file, entered=self.entered, release=self.release_fifo)
        )
        self.hook.chmod(0o755)

    def wait_entered(self, timeout: float = HOOK_START_S) -> None:
        """Block until a push of the reconciler stalls in the hook (an event, not a sleep)."""
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.append(self.entered.read_text()))
        reader.start()
        reader.join(timeout)
        if reader.is_alive():  # unblock our reader before failing
            with contextlib.suppress(OSError):
                os.close(os.open(self.entered, os.O_WRONLY | os.O_NONBLOCK))
            reader.join()
            pytest.fail(f"no push stalled in the hook within {timeout:g} s")
        assert said == ["entered\n"]

    def release(self, verdict: str) -> bool:
        """Give a stalled hook its verdict; False when no hook is waiting."""
        try:
            fd = os.open(self.release_fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False
            raise
        with os.fdopen(fd, "w") as handle:
            handle.write(verdict + "\n")
        return True

    def hook_process(self) -> psutil.Process | None:
        try:
            return psutil.Process(int(self.pid_file.read_text()))
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None

    def remove(self) -> None:
        self.hook.unlink(missing_ok=True)
        self.release("teardown")
        process = self.hook_process()
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


@pytest.fixture
def bumped(git_remote: GitRemote) -> str:
    git_remote.commit("base", {ENV_FILE: BASE, "README.md": "hi\n"})
    return git_remote.commit("Bump shop to 2.0.0", {ENV_FILE: WEB_BUMPED})


@pytest.fixture
def stalling(git_remote: GitRemote, tmp_path: Path) -> Iterator[StallingRemote]:
    remote = StallingRemote(git_remote, tmp_path / "hook")
    yield remote
    remote.remove()


def _writer(remote: GitRemote, cache: Path, **kwargs) -> WriteBack:
    return WriteBack(
        remote.url, "main", cache, author_name="Reconciler Bot", author_email=BOT, **kwargs
    )


class _InThread:
    """A write running in a thread of its own, as the rollout runs it."""

    def __init__(self, writer: WriteBack, request: RevertRequest) -> None:
        self.result: PushResult | None = None
        self.started = time.monotonic()
        self.finished = 0.0
        self.thread = threading.Thread(target=self._run, args=(writer, request), daemon=True)
        self.thread.start()

    def _run(self, writer: WriteBack, request: RevertRequest) -> None:
        self.result = writer.revert_rollout(request)
        self.finished = time.monotonic()

    def join(self, timeout: float) -> PushResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the write did not end within {timeout:g} s"
        assert self.result is not None
        return self.result


def test_a_stalled_push_does_not_block_fetching_a_new_commit(
    git_remote, bumped, stalling, tmp_path
):
    cache = tmp_path / "cache"
    reader = GitSource(git_remote.url, "main", cache)
    assert reader.fetch().sha == bumped
    write = _InThread(_writer(git_remote, cache, deadline_s=600), _request(bumped))
    stalling.wait_entered()  # the revert's push now hangs inside the remote

    newer = _other_push(git_remote, {"README.md": "newer\n"}, "someone else's commit")
    tip = reader.fetch()  # the reader's clone and lock are not the writer's
    assert tip.sha == newer and tip.subject == "someone else's commit"
    assert (reader.snapshot(newer) / "README.md").read_text() == "newer\n"
    assert write.thread.is_alive() and write.result is None, "the push is still stalled"

    assert stalling.release("refused")
    result = write.join(PROMPTNESS_S)
    assert (result.status, result.sha, result.attempts) == ("error", None, 1)
    assert "released: refused" in result.detail and "cannot push" in result.detail
    assert git_remote.remote_head() == newer


def test_a_stalled_push_gives_up_at_the_write_deadline(git_remote, bumped, stalling, tmp_path):
    deadline_s = 3.0
    writer = _writer(git_remote, tmp_path / "cache", deadline_s=deadline_s)
    write = _InThread(writer, _request(bumped))
    stalling.wait_entered()  # stalled, and never released
    result = write.join(deadline_s + PROMPTNESS_S)
    elapsed = write.finished - write.started
    assert (result.status, result.sha, result.attempts) == ("error", None, 1)
    assert "gave up at the write deadline (3 s)" in result.detail
    assert "push to" in result.detail and str(git_remote.bare) in result.detail
    assert deadline_s <= elapsed < deadline_s + PROMPTNESS_S
    assert git_remote.remote_head() == bumped
    # The push was killed with its whole process group: the remote side's hook is gone too.
    hook = stalling.hook_process()
    if hook is not None:
        _, alive = psutil.wait_procs([hook], timeout=PROMPTNESS_S)
        assert not alive
    # The writer's clone was put back: once the remote answers again the revert goes through.
    stalling.hook.unlink()
    again = writer.revert_rollout(_request(bumped))
    assert (again.status, again.kind) == ("pushed", "revert")
    assert git_remote.remote_head() == again.sha


def test_waiting_for_another_write_counts_against_the_deadline(
    git_remote, bumped, stalling, tmp_path
):
    """Another process's writer (``reconciler rollback`` while the daemon reverts) on the same
    cache: the flock serialises them, and the waiting one gives up at its deadline."""
    cache = tmp_path / "cache"
    first = _InThread(_writer(git_remote, cache, deadline_s=600), _request(bumped))
    stalling.wait_entered()
    started = time.monotonic()
    result = _writer(git_remote, cache, deadline_s=1.0).revert_rollout(_request(bumped))
    elapsed = time.monotonic() - started
    assert (result.status, result.attempts) == ("error", 0)
    assert "gave up at the write deadline (1 s): waiting for another write to" in result.detail
    assert 1.0 <= elapsed < 1.0 + PROMPTNESS_S
    assert stalling.release("refused")
    assert first.join(PROMPTNESS_S).status == "error"


def test_a_shutdown_interrupts_the_wait_between_push_attempts(git_remote, bumped, tmp_path):
    writer = _writer(git_remote, tmp_path / "cache", deadline_s=600, retry=Backoff(60.0, 60.0))
    raced = threading.Event()

    def someone_pushes_first(attempt: int) -> None:
        _other_push(git_remote, {"README.md": f"race {attempt}\n"}, f"race {attempt}")
        raced.set()

    writer._before_push = someone_pushes_first
    write = _InThread(writer, _request(bumped))
    assert raced.wait(HOOK_START_S)
    writer.cancel.set()  # the daemon shuts down while the writer waits 60 s to retry
    result = write.join(PROMPTNESS_S)
    assert (result.status, result.attempts) == ("error", 1)
    assert "interrupted (shutting down)" in result.detail and "[rejected]" in result.detail
