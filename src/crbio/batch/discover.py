"""Find a batch's inputs: files, directories (recursively) and glob patterns, one at a time.

The readers are chosen by file suffix in :data:`READERS`, the one place a new input format
(HL7 v2 ORU, XML…) plugs in. In a directory, files of another suffix are ignored; a file
named explicitly (or matched by a pattern) with an unknown suffix is an error entry, so the
operator learns it was not converted.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from crbio.errors import InputError
from crbio.input import load_report
from crbio.model import Report

if TYPE_CHECKING:
    from crbio.input.hl7v2 import OruDefaults

__all__ = ["FOLDER_SUFFIXES", "READERS", "Input", "count_inputs", "discover", "reader_for"]


def _json(path: Path, raw: bytes) -> Report:
    return load_report(raw)


def _cda(path: Path, raw: bytes) -> Report:
    from crbio.input.cda import read_cda

    return read_cda(raw, label=path.name)


def _oru(path: Path, raw: bytes) -> Report:
    from crbio.input.hl7v2 import OruDefaults, read_oru

    config = OruDefaults.config_file(path)
    if config is None:
        defaults = OruDefaults.for_message(path)  # says what is missing
    else:
        stat = config.stat()
        defaults = _oru_defaults(config.resolve(), stat.st_mtime_ns, stat.st_size)
    return read_oru(raw, label=path.name, defaults=defaults)


@functools.lru_cache(maxsize=16)
def _oru_defaults(config: Path, mtime_ns: int, size: int) -> OruDefaults:
    # A folder of messages shares one configuration: read it once per worker, again if it changes.
    from crbio.input.hl7v2 import OruDefaults as Defaults

    return Defaults.load(config)


#: Input readers by lower-case file suffix: the file's path and bytes in, report out (raising
#: InputError): crbio's JSON, a CR-BIO CDA R2 N3 (re-emitted as a new 2024.01 document), an
#: HL7 v2 ORU^R01 (with the ``crbio-oru.toml`` beside it or named by ``$CRBIO_ORU_CONFIG``).
READERS: dict[str, Callable[[Path, bytes], Report]] = {".json": _json, ".xml": _cda, ".hl7": _oru}

#: The suffixes a folder is searched for. CDA files are read only when named or matched by a
#: pattern: folders of XML usually hold other documents too (N1s, earlier outputs).
FOLDER_SUFFIXES = frozenset({".json", ".hl7"})


def reader_settings(path: Path) -> bytes:
    """What besides the file itself decides its report: the ORU configuration of a ``.hl7``.

    The manifest hashes it with the input, so editing ``crbio-oru.toml`` redoes the messages
    it applies to.
    """
    if path.suffix.lower() != ".hl7":
        return b""
    from crbio.input.hl7v2 import OruDefaults

    config = OruDefaults.config_file(path)
    try:
        return config.read_bytes() if config is not None else b""
    except OSError:
        return b""


_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True, slots=True)
class Input:
    """One input of a batch.

    Attributes:
        path: The file, as found (relative to the working directory when given so).
        relative: Where its outputs go under OUTDIR, suffix included (``sub/report.json``):
            the file's path relative to the directory or pattern base it was found under, or
            its bare name when it was named explicitly.
        error: Why it cannot be converted, when discovery already knows (missing file,
            unknown suffix, pattern matching nothing).
    """

    path: Path
    relative: PurePosixPath
    error: InputError | None = None

    @property
    def output_stem(self) -> PurePosixPath:
        """The outputs' path under OUTDIR without suffix: ``sub/report`` for ``sub/report.json``."""
        return self.relative.with_name(Path(self.relative.name).stem)


def reader_for(path: Path) -> Callable[[Path, bytes], Report] | None:
    """The reader of a file, chosen by its suffix, or None when crbio reads no such file."""
    return READERS.get(path.suffix.lower())


def _unsupported(path: Path) -> InputError:
    known = ", ".join(sorted(READERS))
    return InputError(
        f"unsupported input type {path.suffix or '(no suffix)'!r}: crbio reads {known}",
        code="input.unsupported",
    )


def _walk(directory: Path, base: Path, exclude: Path | None) -> Iterator[Input]:
    """Files with a suffix of :data:`FOLDER_SUFFIXES` under ``directory``, depth first, in name order.

    Hidden entries (a leading dot: temporary files, VCS folders) and ``exclude`` (the output
    directory, when it lies inside an input directory) are left out; symbolic links to
    directories are not followed, so a link cycle cannot loop. Only one directory listing
    is held at a time.
    """
    try:
        with os.scandir(directory) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        error = InputError(f"folder cannot be read ({e.strerror})", code="input.unreadable")
        yield Input(directory, PurePosixPath(directory.name), error)
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if exclude is not None and path.resolve() == exclude:
                continue
            yield from _walk(path, base, exclude)
        elif path.suffix.lower() in FOLDER_SUFFIXES:
            yield Input(path, PurePosixPath(path.relative_to(base).as_posix()))


def _pattern_base(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard: what matches are relative to."""
    parts = Path(pattern).parts
    literal = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        literal.append(part)
    return Path(*literal) if literal else Path()


def _explicit(path: Path, relative: PurePosixPath) -> Input:
    return Input(path, relative, None if reader_for(path) is not None else _unsupported(path))


def discover(arguments: Iterable[str | Path], *, exclude: Path | None = None) -> Iterator[Input]:
    """The inputs named by the command line's arguments, lazily, in argument order.

    A directory gives its files with a known suffix, recursively; a file gives itself; an
    argument that does not exist but holds ``*``, ``?`` or ``[`` is a glob pattern (``**``
    spans folders) whose matches are taken as files or directories. ``exclude`` is a
    directory never walked into (the output directory).
    """
    excluded = exclude.resolve() if exclude is not None else None
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            yield from _walk(path, path, excluded)
        elif path.exists():
            yield _explicit(path, PurePosixPath(path.name))
        elif _MAGIC.search(str(argument)):
            base = _pattern_base(str(argument))
            matched = False
            for match in glob.iglob(str(argument), recursive=True):
                matched = True
                found = Path(match)
                if excluded is not None and found.resolve().is_relative_to(excluded):
                    continue  # e.g. "**/*.json" must not read back the batch's own report
                if found.is_dir():
                    yield from _walk(found, base, excluded)
                    continue
                relative = os.path.relpath(found, base)
                if relative.startswith(".."):
                    relative = found.name
                yield _explicit(found, PurePosixPath(Path(relative).as_posix()))
            if not matched:
                yield Input(
                    path,
                    PurePosixPath(path.name),
                    InputError("no file matches this pattern", code="input.no-match"),
                )
        else:
            yield Input(path, PurePosixPath(path.name), InputError("does not exist", code="input.missing"))


def count_inputs(arguments: Iterable[str | Path], *, exclude: Path | None = None) -> int:
    """How many entries :func:`discover` gives, counted without keeping them."""
    return sum(1 for _ in discover(arguments, exclude=exclude))
