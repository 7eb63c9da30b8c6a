"""DirWatch against the real kernel (inotify on this Linux machine): what each kind of
change to a watched directory reports, and how the watch set follows ``update``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.sources.watch import Changes, DirWatch, watched_dirs

# inotify is Linux's; elsewhere the file source polls (and CI is Linux).
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


@pytest.fixture
def watch() -> Iterator[DirWatch]:
    w = DirWatch()
    yield w
    w.close()


def test_watched_dirs_are_the_globs_fixed_parents_and_the_followed_files_dirs() -> None:
    got = watched_dirs(
        ["/var/log/app/*.log", "/var/log/nginx/access.log*", "/srv/*/logs/*.log", "/data/**/x"],
        ["/var/log/app/a.log", "/archive/app/a.log.1"],
    )
    assert got == {"/var/log/app", "/var/log/nginx", "/srv", "/data", "/archive/app"}
    assert watched_dirs(["*.log"], ["app.log"]) == {"."}


def test_nothing_happened_reads_as_no_change(watch: DirWatch, tmp_path: Path) -> None:
    assert watch.update({str(tmp_path)}) == []
    got = watch.take()
    assert not got and got == Changes()


def test_a_write_is_data_and_a_new_file_is_layout(watch: DirWatch, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    watch.update({str(tmp_path)})
    with log.open("a") as fh:
        fh.write("two\n")
    got = watch.take()
    assert got.data and not got.layout
    (tmp_path / "other.log").write_text("x\n")
    got = watch.take()
    assert got.layout and got.data
    assert not watch.take()  # each event is reported once


def test_rename_and_delete_are_layout(watch: DirWatch, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    watch.update({str(tmp_path)})
    log.rename(tmp_path / "app.log.1")
    assert watch.take().layout
    (tmp_path / "app.log.1").unlink()
    assert watch.take().layout


@pytest.mark.parametrize("how", ["removed", "renamed"])
def test_a_directory_that_goes_is_watched_again_once_one_of_its_name_is_back(
    watch: DirWatch, tmp_path: Path, how: str
) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    assert watch.update({str(d)}) == [] and watch.added == 1
    if how == "removed":
        d.rmdir()
    else:
        # A renamed directory's watch would follow it: it is dropped instead.
        d.rename(tmp_path / "old-logs")
    assert watch.take().layout
    assert watch.dirs == set()
    if how == "renamed":
        (tmp_path / "old-logs" / "a.log").write_text("x\n")
        assert not watch.take()
    # Missing: not watched, and no problem to report (the globs say "no match").
    assert watch.update({str(d)}) == [] and watch.dirs == set() and watch.added == 0
    d.mkdir()
    assert watch.update({str(d)}) == [] and watch.dirs == {str(d)} and watch.added == 1
    (d / "b.log").write_text("x\n")
    assert watch.take().layout


def test_update_drops_directories_no_longer_wanted(watch: DirWatch, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    watch.update({str(a), str(b)})
    watch.update({str(b)})
    assert watch.dirs == {str(b)}
    (a / "x.log").write_text("x\n")
    assert not watch.take()
    (b / "x.log").write_text("x\n")
    assert watch.take()


def test_a_file_in_place_of_a_directory_is_skipped_quietly(watch: DirWatch, tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("x")
    assert watch.update({str(f)}) == [] and watch.dirs == set()


def test_close_releases_the_descriptor(tmp_path: Path) -> None:
    w = DirWatch()
    fd = w.fd
    w.update({str(tmp_path)})
    w.close()
    assert w.fd == -1 and w.dirs == set()
    with pytest.raises(OSError):
        os.fstat(fd)
