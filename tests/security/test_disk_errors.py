"""A full disk and a read-only folder: one clear line naming the path, no partial output, a sound outbox.

Each crbio command runs in a subprocess (``python -m crbio``) against a real file-system limit:

- **full disk**: a small ``tmpfs`` mounted for the test and filled up (``ENOSPC``), when the
  test may mount (root with CAP_SYS_ADMIN, as on this machine); otherwise the subprocess
  runs under ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so writes past the limit fail with
  ``EFBIG`` the way they fail with ``ENOSPC`` on a full disk.
- **read-only**: the same ``tmpfs`` remounted read-only (``EROFS``, which binds root too);
  otherwise the folder is made 0555 and, for root, the subprocess loses CAP_DAC_OVERRIDE
  (dropped from its bounding set before exec), so the kernel refuses the write (``EACCES``).

The commands: ``crbio build``, ``crbio batch``, ``crbio send --queue-only`` (the outbox growing
on a full disk) and ``crbio worker`` (recording an attempt in the journal on a full disk).
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _can_mount(probe: Path) -> bool:
    """Whether this process may mount a tmpfs (tried once per session)."""
    probe.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
    )
    if done.returncode != 0:
        return False
    subprocess.run(["umount", str(probe)], check=True)
    return True


@pytest.fixture(scope="session")
def mountable(tmp_path_factory: pytest.TempPathFactory) -> bool:
    if os.environ.get("CRBIO_TEST_NO_MOUNT"):  # to run the fallbacks where mounting works
        return False
    return os.geteuid() == 0 and _can_mount(tmp_path_factory.mktemp("probe") / "mnt")


@dataclass
class Limited:
    """A folder where writing fails for real, and how to run crbio against it."""

    folder: Path
    mechanism: str  # "tmpfs-full", "tmpfs-ro", "rlimit-fsize", "no-dac-override", "chmod"
    fsize: int | None = None
    drop_dac: bool = False
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def squeeze(self) -> None:
        """Make the limit bite from now on (fill the disk, or remount read-only)."""
        if self.mechanism == "tmpfs-full":
            with (self.folder / ".filler").open("wb") as filler:
                chunk = b"\0" * 65536
                try:
                    while True:
                        filler.write(chunk)
                        filler.flush()
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                # What a block does not hold, a smaller write may still: fill to the last byte.
                for size in (4096, 512, 64, 1):
                    try:
                        while True:
                            os.write(filler.fileno(), b"\0" * size)
                    except OSError:
                        pass
        elif self.mechanism == "tmpfs-ro":
            subprocess.run(["mount", "-o", "remount,ro", str(self.folder)], check=True)
        elif self.mechanism in ("no-dac-override", "chmod"):
            for path in [self.folder, *self.folder.rglob("*")]:
                if path.is_dir():
                    path.chmod(0o555)
                    self.cleanup.append(lambda p=path: p.chmod(0o755))

    def release(self) -> None:
        """Lift the limit, to check what was left behind."""
        if self.mechanism == "tmpfs-full":
            (self.folder / ".filler").unlink()
        elif self.mechanism == "tmpfs-ro":
            subprocess.run(["mount", "-o", "remount,rw", str(self.folder)], check=True)
        for undo in reversed(self.cleanup):
            undo()
        self.cleanup.clear()

    def run(self, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
        fsize, drop_dac = self.fsize, self.drop_dac

        def limit() -> None:
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            if drop_dac:
                libc = ctypes.CDLL(None, use_errno=True)
                for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
                    if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run(
            [sys.executable, "-m", "crbio", *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=limit,
            env=env,
        )


@pytest.fixture
def full_disk(tmp_path: Path, mountable: bool) -> Iterator[Limited]:
    folder = tmp_path / "disk"
    folder.mkdir()
    if mountable:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(folder)], check=True)
        limited = Limited(folder, "tmpfs-full")
    else:
        limited = Limited(folder, "rlimit-fsize")
    yield limited
    limited.release() if limited.mechanism != "tmpfs-full" else None
    if mountable:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only(tmp_path: Path, mountable: bool) -> Iterator[Limited]:
    folder = tmp_path / "ro"
    folder.mkdir()
    if mountable:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(folder)], check=True)
        limited = Limited(folder, "tmpfs-ro")
    elif os.geteuid() == 0:
        limited = Limited(folder, "no-dac-override", drop_dac=True)
    else:
        limited = Limited(folder, "chmod")
    yield limited
    if limited.mechanism == "tmpfs-ro":
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)
        subprocess.run(["umount", str(folder)], check=True)
    else:
        limited.release()


def _one_clear_line(done: subprocess.CompletedProcess[str], path: Path) -> str:
    """The command failed with one line on stderr naming ``path`` (or a folder in it), no traceback."""
    assert done.returncode not in (0, 70), (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("crbio: ")]
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0], lines[0]
    print(lines[0])  # shown with pytest -s
    return lines[0]


def _documents_and_temporaries(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.rglob("*")
        if p.name.endswith((".n3.xml", ".n1.xml", ".pdf", ".tmp")) and p.name != ".filler"
    )


REASONS = ("No space left on device", "File too large", "Read-only file system", "Permission denied")


# -- crbio build ------------------------------------------------------------------------------------


def test_build_on_a_full_disk(full_disk: Limited, tmp_path: Path) -> None:
    out = full_disk.folder / "out"
    full_disk.fsize = 20_000  # used only without tmpfs: the N3 alone is larger
    full_disk.squeeze()
    done = full_disk.run("build", SAMPLES / "01-biochimie.json", "-o", out, cwd=tmp_path)
    line = _one_clear_line(done, out)
    assert any(reason in line for reason in REASONS), line
    full_disk.release()
    assert _documents_and_temporaries(full_disk.folder) == []


def test_build_into_a_read_only_folder(read_only: Limited, tmp_path: Path) -> None:
    out = read_only.folder / "out"
    out.mkdir()
    read_only.squeeze()
    done = read_only.run("build", SAMPLES / "01-biochimie.json", "-o", out, cwd=tmp_path)
    line = _one_clear_line(done, out)
    assert any(reason in line for reason in REASONS), line
    read_only.release()
    assert list(out.iterdir()) == []


# -- crbio batch ------------------------------------------------------------------------------------


def _inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("01-biochimie.json", "02-hemogramme.json"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    return folder


def test_batch_on_a_full_disk(full_disk: Limited, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    out = full_disk.folder / "out"
    full_disk.fsize = 40_000
    full_disk.squeeze()
    done = full_disk.run("batch", inputs, "-o", out, "--jobs", "1", cwd=tmp_path)
    _one_clear_line(done, out)
    full_disk.release()
    assert _documents_and_temporaries(full_disk.folder) == []


def test_batch_into_a_read_only_folder(read_only: Limited, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    out = read_only.folder / "out"
    out.mkdir()
    read_only.squeeze()
    done = read_only.run("batch", inputs, "-o", out, "--jobs", "1", cwd=tmp_path)
    _one_clear_line(done, out)
    read_only.release()
    assert list(out.iterdir()) == []


# -- crbio send and crbio worker: the outbox on a full disk ---------------------------------------


def _config(tmp_path: Path, outbox: Path) -> Path:
    config = tmp_path / "crbio.toml"
    config.write_text(
        f"""[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.1"

[outbox]
path = "{outbox}"

[retry]
max_attempts = 1

[destinations.hl7v2]
host = "127.0.0.1"
port = 9
receiving_application = "PFI"
receiving_facility = "HOPITAL"
timeout = 1
""",
        encoding="utf-8",
    )
    return config


def _outbox_state(outbox: Path) -> tuple[str, list[tuple[str, str]]]:
    """SQLite's integrity check and (document, state) of every delivery, read with sqlite3 itself."""
    db = sqlite3.connect(outbox)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT document_id, state FROM deliveries ORDER BY document_id").fetchall()
    finally:
        db.close()
    return check, [(str(a), str(b)) for a, b in rows]


def test_send_with_the_outbox_on_a_full_disk(full_disk: Limited, tmp_path: Path) -> None:
    outbox = full_disk.folder / "outbox.sqlite"
    config = _config(tmp_path, outbox)
    first = full_disk.run(
        "send", "--config", config, "--queue-only", SAMPLES / "01-biochimie.json", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    check, before = _outbox_state(outbox)
    assert check == "ok" and before
    full_disk.fsize = outbox.stat().st_size  # without tmpfs: the outbox cannot grow any more
    full_disk.squeeze()
    done = full_disk.run(
        "send", "--config", config, "--queue-only", SAMPLES / "02-hemogramme.json", cwd=tmp_path
    )
    _one_clear_line(done, outbox)
    full_disk.release()
    # The outbox opens, is sound, and holds what it held: nothing half-queued.
    check, after = _outbox_state(outbox)
    assert check == "ok"
    assert after == before
    again = full_disk.run("journal", "--config", config, "--format", "json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_worker_recording_an_attempt_on_a_full_disk(full_disk: Limited, tmp_path: Path) -> None:
    outbox = full_disk.folder / "outbox.sqlite"
    config = _config(tmp_path, outbox)
    queued = full_disk.run(
        "send", "--config", config, "--queue-only", SAMPLES / "01-biochimie.json", cwd=tmp_path
    )
    assert queued.returncode == 0, queued.stderr
    _, before = _outbox_state(outbox)
    full_disk.fsize = 4096  # without tmpfs: the write-ahead log cannot take one page
    full_disk.squeeze()
    done = full_disk.run("worker", "--config", config, "--drain", cwd=tmp_path)
    _one_clear_line(done, outbox)
    full_disk.release()
    check, after = _outbox_state(outbox)
    assert check == "ok"
    # The attempt was not recorded half-way: each delivery is as it was, or wholly moved on.
    assert [d for d, _ in after] == [d for d, _ in before]
    assert all(state in ("queued", "dead", "retrying") for _, state in after), after


def test_an_outbox_transaction_failing_on_a_full_disk_leaves_nothing(
    full_disk: Limited, tmp_path: Path
) -> None:
    """The outbox already open when the disk fills: OutboxError naming it, the transaction rolled back."""
    import crbio
    from crbio.dispatch import dispatch
    from crbio.dispatch.config import DispatchConfig
    from crbio.dispatch.outbox import Outbox
    from crbio.errors import OutboxError
    from crbio.input import load_report

    outbox = full_disk.folder / "outbox.sqlite"
    config = DispatchConfig.load(_config(tmp_path, outbox))
    first, second = (
        crbio.build(load_report(SAMPLES / n)) for n in ("01-biochimie.json", "02-hemogramme.json")
    )
    box = Outbox(outbox)
    try:
        dispatch(first, config, outbox=box)
        _, before = _outbox_state(outbox)
        if full_disk.mechanism == "tmpfs-full":
            full_disk.squeeze()
            limit = None
        else:  # this process, briefly: writes past the file's current end fail with EFBIG
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (outbox.stat().st_size, limit[1]))
        try:
            with pytest.raises(OutboxError) as caught:
                dispatch(second, config, outbox=box)
        finally:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, limit)
                signal.signal(signal.SIGXFSZ, previous)
        assert str(outbox) in str(caught.value) and "cannot" in str(caught.value)
        print(f"crbio: {caught.value}")  # shown with pytest -s
    finally:
        box.close()
    full_disk.release()
    check, after = _outbox_state(outbox)
    assert check == "ok" and after == before
