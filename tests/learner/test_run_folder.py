"""The start-up check that every learner rank sees the run folder (learner/run_folder.py): the
driver's sentinel, each rank's reading of it, and the one-line error. No Ray: a rank on a node
without the shared folder is stood in for by a reader whose folder is another one."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from learner.run_folder import (SENTINEL_PREFIX, RunFolderNotShared, check_sentinel, not_shared_error,
                                remove_sentinel, write_sentinel)


def test_the_driver_writes_a_sentinel_a_rank_on_the_same_storage_reads_it(tmp_path):
    run_dir = tmp_path / "runs" / "a"  # not there yet: the driver makes it
    path, token = write_sentinel(run_dir)
    assert Path(path).parent == run_dir and Path(path).name.startswith(SENTINEL_PREFIX)
    assert Path(path).read_text() == token and len(token) == 32
    assert check_sentinel(path, token, wait_s=0) is None
    again, other = write_sentinel(run_dir)  # each start its own file and token
    assert again != path and other != token
    remove_sentinel(path)
    remove_sentinel(path)  # gone already: nothing to do
    assert not Path(path).exists() and Path(again).exists()


def test_a_rank_that_does_not_see_the_folder_says_why(tmp_path):
    path, token = write_sentinel(tmp_path / "shared" / "run")
    # another node: the same path on its own disk, without the file ...
    elsewhere = str(tmp_path / "node2" / "run" / Path(path).name)
    t0 = time.monotonic()
    assert check_sentinel(elsewhere, token, wait_s=0.3).startswith("no such file")
    assert time.monotonic() - t0 >= 0.3  # retried for wait_s before giving up
    # ... with a stale file of an earlier start, or something that is not a file at all
    Path(elsewhere).parent.mkdir(parents=True)
    Path(elsewhere).write_text("0" * 32)
    assert check_sentinel(elsewhere, token, wait_s=0).startswith("it holds another token")
    Path(elsewhere).unlink()
    Path(elsewhere).mkdir()
    assert check_sentinel(elsewhere, token, wait_s=0).startswith("IsADirectoryError")


def test_a_file_that_shows_up_late_is_waited_for(tmp_path):
    """A network filesystem's cache may show a new file a moment late: the rank retries."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path, token = str(run_dir / f"{SENTINEL_PREFIX}late"), "t" * 32
    threading.Timer(0.4, lambda: Path(path).write_text(token)).start()
    assert check_sentinel(path, token, wait_s=5) is None


def test_the_error_is_one_line_naming_output_dir_the_rank_and_its_node():
    err = not_shared_error("/shared/runs/x", f"/shared/runs/x/{SENTINEL_PREFIX}abc",
                           {5: ("gpu02 (10.0.0.2)", "no such file: the folder is not the driver's"),
                            7: ("gpu02 (10.0.0.2)", "no such file: the folder is not the driver's"),
                            4: ("gpu03 (10.0.0.3)", "no such file: the folder is not the driver's")})
    text = str(err)
    assert isinstance(err, RunFolderNotShared) and "\n" not in text
    assert text.startswith("output_dir=/shared/runs/x is not on storage every learner rank sees: rank 4 on node "
                           "gpu03 (10.0.0.3) cannot read the file .oreal-shared-check-abc")
    assert "ranks 4, 5, 7 fail alike (on gpu02 (10.0.0.2), gpu03 (10.0.0.3))" in text
    single = str(not_shared_error("/r", "/r/s", {0: ("n1", "why")}))
    assert "rank 0 on node n1" in single and "(why)" in single and "fail alike" not in single


class _Rank:
    """A learner rank's `check_run_folder`, reading the run folder through its node's mount."""

    def __init__(self, mount: tuple[str, str] | None = None):
        self.mount = mount
        self.check_run_folder = self  # the actor method's `.remote`

    def remote(self, path: str, token: str):
        from learner.worker import LearnerWorker

        if self.mount:
            path = path.replace(*self.mount)
        worker = LearnerWorker.__new__(LearnerWorker)
        return LearnerWorker.check_run_folder(worker, path, token)


def test_the_group_checks_every_rank_and_stops_them_all_when_one_cannot(tmp_path, monkeypatch):
    import learner.group as group_mod
    import learner.run_folder

    monkeypatch.setattr(group_mod, "gather", lambda results, call: list(results))  # no Ray: results as they are
    monkeypatch.setattr(learner.run_folder, "SENTINEL_WAIT_S", 0.0)
    shared, node_disk = tmp_path / "shared", tmp_path / "disk"
    group = group_mod.LearnerGroup.__new__(group_mod.LearnerGroup)
    stopped = []
    group.shutdown = lambda: stopped.append(True)

    group.workers = [_Rank(), _Rank()]
    group.check_run_folder(str(shared / "ok"))
    assert not stopped and list((shared / "ok").iterdir()) == []  # passed; the sentinel removed

    group.workers = [_Rank(), _Rank((str(shared), str(node_disk)))]  # rank 1's node lacks the mount
    with pytest.raises(RunFolderNotShared, match=r"^output_dir=\S+/shared/bad is not on storage every learner "
                                                 r"rank sees: rank 1 on node .+ cannot read the file "
                                                 r"\.oreal-shared-check-\w+ the driver \(on .+\) wrote there "
                                                 r"\(no such file"):
        group.check_run_folder(str(shared / "bad"))
    assert stopped == [True] and list((shared / "bad").iterdir()) == []
