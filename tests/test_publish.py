"""`AtomicFolder`: published whole, with shared file modes, never over another run. Its lock
appears already held (a concurrent run's cleanup can never take it and delete a live run's
folder), and publication never replaces an output that appeared during the run unless the
verb was given --force."""

from __future__ import annotations

import fcntl
import os

import pytest

import skillgraft.checkpoint.publish as publish
from skillgraft.checkpoint import AtomicFolder
from skillgraft.errors import UserError


def test_cleanup_racing_the_lock_never_deletes_a_live_run(tmp_path, monkeypatch):
    """Another run's stale-partial cleanup runs at the worst moment: between this run creating
    its lock file and locking it. It must find nothing to take."""
    out = tmp_path / "out"
    real_flock, raced = fcntl.flock, []

    def racing_flock(fd, op):
        if not raced:  # the first flock is this run's own lock
            raced.append(publish.remove_stale_partials(out))
        return real_flock(fd, op)

    monkeypatch.setattr(publish.fcntl, "flock", racing_flock)
    with AtomicFolder(out) as temp:
        monkeypatch.undo()
        assert raced == [[]]  # the cleanup saw no lock it could take
        (temp / "weights.bin").write_bytes(b"x")
        lock = temp.with_name(temp.name + ".lock")
        assert lock.is_file()
        other = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        with pytest.raises(UserError, match="is writing"):
            publish.remove_stale_partials(out)
        assert (temp / "weights.bin").is_file()
    assert (out / "weights.bin").read_bytes() == b"x"
    assert not list(tmp_path.glob(".out*"))  # no lock, no staging file left


def test_an_output_that_appeared_meanwhile_is_not_replaced_without_force(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UserError, match="appeared while this run was writing"):
        with AtomicFolder(out) as temp:
            (temp / "new.bin").write_bytes(b"new")
            out.mkdir()
            (out / "theirs.bin").write_bytes(b"theirs")  # another run published first
    assert sorted(p.name for p in out.iterdir()) == ["theirs.bin"]
    assert not list(tmp_path.glob(".out*"))
    with AtomicFolder(out, force=True) as temp:
        (temp / "new.bin").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["new.bin"]
    assert not list(tmp_path.glob(".out*"))


def test_an_empty_folder_in_the_way_is_taken(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with AtomicFolder(out) as temp:
        (temp / "a").write_text("a")
    assert (out / "a").read_text() == "a"


def test_published_files_are_0644_and_folders_0755(tmp_path):
    """Some writers (safetensors through save_pretrained) create files 0600; a published folder
    is readable by every user of a shared model folder."""
    out = tmp_path / "out"
    with AtomicFolder(out) as temp:
        secret = temp / "sub" / "model.safetensors"
        secret.parent.mkdir()
        secret.write_bytes(b"x")
        os.chmod(secret, 0o600)
        os.chmod(secret.parent, 0o700)
    assert (out / "sub" / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (out / "sub").stat().st_mode & 0o777 == 0o755 and out.stat().st_mode & 0o777 == 0o755


def test_a_card_written_in_the_temporary_folder_is_titled_with_the_published_name(tmp_path):
    from skillgraft.checkpoint import write_manifest
    from skillgraft.checkpoint.publish import published_name

    assert published_name(tmp_path / ".smollm2.partial-757afc18") == "smollm2"
    assert published_name(tmp_path / ".hidden") == ".hidden"
    with AtomicFolder(tmp_path / "smollm2") as temp:
        write_manifest(temp, kind="model", inputs=[], options={})
    assert "# smollm2\n" in (tmp_path / "smollm2" / "README.md").read_text()
