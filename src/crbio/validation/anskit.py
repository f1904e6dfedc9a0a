"""The official ANS conformity kit (TestContenuCDA schematrons), run from Python with Saxon.

The kit is the ANS's own test tool for CDA documents (github.com/ansforge/TestContenuCDA-3-0):
one schematron per volet (``schematrons/CI-SIS_BIO-CR-BIO_2024.01.sch``) and transverse
profiles (``schematrons/profils/…``). Its schematrons need XSLT 2.0, so they run on
SaxonC-HE (``pip install 'crbio[ans]'``), turned into XSLT by the kit's own ISO skeleton
(``schematrons/moteur``: include, abstract expansion, SVRL for XSLT 2), the same three steps
as the kit's ``compilverif.bat``.

Turning a schematron into XSLT and compiling it is slow (the ART-DECOR "structuration
minimale" profile alone takes more than ten seconds), so:

- the transpiled XSLT is cached on disk, in ``~/.cache/crbio/ans-kit/<key>/`` (``<key>``
  hashes the kit's schematrons and value sets, the Saxon version and crbio's cache format);
  ``$XDG_CACHE_HOME``, ``$CRBIO_CACHE_DIR`` or the ``cache_dir`` argument move it;
- the compiled stylesheets are kept for the life of the process and shared by every
  :class:`AnsKit` of that process.

The transpiled XSLT walks the whole document once per schematron pattern (hundreds of
patterns in the profiles), which made a check cost about half a second. Each one is therefore
rewritten once, at cache time, by :mod:`crbio.validation.anskit_rewrite` into a stylesheet
that reaches the same rules' contexts by one selection per pattern (and an index on
``templateId/@root``) and writes the same SVRL, byte for byte; the rewritten copy
(``<name>.crbio-fast.xsl``) is what runs, and ``optimised=False`` runs the kit's own
transpiled XSLT instead (the tests prove both give the same SVRL on the official examples,
crbio's samples and broken documents).

A cache entry is a scratch copy of the kit's ``schematrons/`` and ``jeuxDeValeurs/`` in which
two defects of the kit are mended, as the workplace's ``ans-check`` does: includes whose file
name differs only by case (the kit was authored on Windows), and ART-DECOR value-set files
(``voc-<oid>-DYNAMIC.xml``) the kit lacks, rebuilt from the kit's own SVS value sets. The
copy also keeps patient data out of the messages: where an assert quotes a document's
``@value`` or ``@extension`` (a birth date, an INS), it prints a placeholder. The
XSLT lives beside its schematron, because the kit reads its value sets by paths relative to
it. Everything is written to a temporary name then renamed, so processes sharing a cache
never see half-written files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from lxml import etree

from crbio._xml import parse_xml, xml_text
from crbio.errors import ConfigurationError, InputError
from crbio.validation.anskit_rewrite import REWRITE_VERSION, Rewrite, rewrite_stylesheet
from crbio.validation.report import Finding, ValidationReport

__all__ = ["DEFAULT_VOLET", "PROFILES", "AnsKit", "default_cache_root"]

DEFAULT_VOLET = "CI-SIS_BIO-CR-BIO_2024.01"
"""The volet schematron applied to a CR-BIO CDA R2 N3."""

PROFILES = (
    "profils/IHE.sch",
    "profils/CI-SIS_ModelesDeContenusCDA.sch",
    "profils/CI-SIS_Modeles_ANS.sch",
    "profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch",
)
"""The transverse profiles applied to every document, paths relative to ``schematrons/``."""

_CODE = "config.ans-kit"
_INSTALL = "pip install 'crbio[ans]'"
# Bump when the layout or the mending of a cache entry changes: old entries are then ignored.
_CACHE_FORMAT = "3"
_PIPELINE = ("iso_dsdl_include.xsl", "iso_abstract_expand.xsl", "iso_svrl_for_xslt2.xsl")
_XSL_SUFFIX = ".crbio.xsl"
# The same stylesheet after crbio.validation.anskit_rewrite: same SVRL, far fewer document walks.
_FAST_SUFFIX = ".crbio-fast.xsl"
_MANIFEST = "crbio-ans-kit.json"
# What the kit is made of, for the cache key and the scratch copy: sources, not the moteur's
# Java tools nor the examples.
_SOURCES = {"schematrons": (".sch", ".xsl", ".xml"), "jeuxDeValeurs": (".xml",)}
_VOLET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_SCH = "http://purl.oclc.org/dsdl/schematron"
_SVRL = "{http://purl.oclc.org/dsdl/svrl}"
_SVS = "{urn:ihe:iti:svs:2008}"
_FINDINGS = (f"{_SVRL}failed-assert", f"{_SVRL}successful-report")
# Roles that do not make a document non-conformant (ART-DECOR's "dtr1-…" advice); the
# ANS's own asserts and reports carry no role or "error".
_NON_BLOCKING_ROLES = frozenset({"warning", "info", "information"})

# Literal documents the kit reads at run time: doc('include/voc-…-DYNAMIC.xml') and the
# value-set paths of <let name="path_jdv…" value="'../jeuxDeValeurs/JDV_….xml'"/>.
_DOC_CALL = re.compile(r"""\bdoc(?:ument)?\(\s*'([^'$]+)'""")
_LITERAL_XML = re.compile(r"""\A\s*'([^']+\.xml)'\s*\Z""")
_VOC = re.compile(r"voc-([0-9]+(?:\.[0-9]+)*)-DYNAMIC\.xml\Z")
_SVS_ID = re.compile(rb"""<(?:\w+:)?ValueSet\b[^>]*?\sid\s*=\s*["']([0-9.]+)["']""")

# One step of an SVRL location: "/name[2]", "/*:name[namespace-uri()='…'][2]", "/@name".
_STEP = re.compile(
    r"/(?:(?P<attr>@)(?:(?:\w[\w.-]*:)?(?P<aname>[\w.-]+)|\*\[local-name\(\)='(?P<alocal>[^']+)'[^\]]*\])"
    r"|(?:\*:|[\w.-]+:)?(?P<name>[\w.-]+)(?:\[namespace-uri\(\)='[^']*'\])?(?:\[(?P<index>\d+)\])?)"
)


def default_cache_root() -> Path:
    """Where transpiled schematrons are cached when no ``cache_dir`` is given.

    ``$CRBIO_CACHE_DIR/ans-kit`` when that variable is set, else
    ``$XDG_CACHE_HOME/crbio/ans-kit``, else ``~/.cache/crbio/ans-kit``.
    """
    if crbio_cache := os.environ.get("CRBIO_CACHE_DIR"):
        return Path(crbio_cache).expanduser() / "ans-kit"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "crbio" / "ans-kit"


# --- Saxon, one processor and one compiled stylesheet per schematron for the whole process ---

_saxon_state: dict[str, Any] = {}
_executables: dict[Path, Any] = {}


def _saxon() -> tuple[Any, Any, type[Exception], str]:
    """The process's Saxon processor, its XSLT compiler, Saxon's error class and its version.

    SaxonC wants a single processor per process, and compiled stylesheets belong to it.
    """
    if not _saxon_state:
        try:
            import saxonche
        except ImportError:
            raise ConfigurationError(
                f"the ANS kit needs SaxonC-HE (XSLT 2.0), which is not installed: {_INSTALL}", code=_CODE
            ) from None
        processor = saxonche.PySaxonProcessor(license=False)
        try:
            package = metadata.version("saxonche")
        except metadata.PackageNotFoundError:  # an unusual installation: the processor's word only
            package = "?"
        _saxon_state.update(
            processor=processor,
            xslt=processor.new_xslt30_processor(),
            error=saxonche.PySaxonApiError,
            version=f"saxonche {package} ({processor.version})",
        )
    state = _saxon_state
    return state["processor"], state["xslt"], state["error"], state["version"]


def _saxon_message(error: Exception) -> str:
    """The first line of a Saxon error, quoted strings withheld (they may be document content)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r'"[^"]*"', '"…"', text)[:300]


# --- The kit on disk -------------------------------------------------------------------------


def _kit_files(kit_dir: Path) -> list[tuple[str, Path]]:
    """The kit's source files as (path relative to the kit, absolute path), in a stable order."""
    files = []
    for folder, suffixes in _SOURCES.items():
        for path in (kit_dir / folder).rglob("*"):
            if path.suffix.lower() in suffixes and path.is_file():
                files.append((path.relative_to(kit_dir).as_posix(), path))
    files.sort()
    return files


def _digest(files: Sequence[tuple[str, Path]]) -> str:
    """SHA-256 over the names and contents of the kit's sources."""
    digest = hashlib.sha256()
    for relative, path in files:
        content = path.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def _write_atomically(path: Path, content: bytes) -> None:
    """Write a file under a temporary name then rename it, so readers see all of it or nothing."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_xml(path: Path) -> etree._ElementTree:
    """Parse one of the kit's files (trusted, yet read with the safe parser all the same)."""
    try:
        return parse_xml(path.read_bytes(), label=path.name)
    except InputError as error:
        raise ConfigurationError(f"the ANS kit file {path} is unreadable: {error}", code=_CODE) from None


@dataclass(frozen=True, slots=True)
class _Schematron:
    """One schematron of the kit as run by an :class:`AnsKit`."""

    name: str
    source: Path
    xsl: Path
    fast: Path


def _resolve_include(href: str, target: Path, including: Path, entry: Path) -> Path:
    """An included file, mending a href whose case differs from the file name (kit defect)."""
    if target.is_file():
        return target
    if target.parent.is_dir():
        for candidate in target.parent.iterdir():
            if candidate.name.lower() == target.name.lower() and candidate.is_file():
                # A copy, not a symlink: symlinks need privileges on Windows.
                _write_atomically(target, candidate.read_bytes())
                return target
    raise ConfigurationError(
        f"the ANS kit is incomplete: {including.relative_to(entry).as_posix()} includes {href}, "
        "which is missing",
        code=_CODE,
    )


def _closure(top: Path, entry: Path) -> dict[Path, etree._ElementTree]:
    """The schematron file and every file it includes, recursively, parsed and mended as needed."""
    trees: dict[Path, etree._ElementTree] = {}
    pending = [top]
    while pending:
        sch = pending.pop()
        if sch in trees:
            continue
        trees[sch] = tree = _read_xml(sch)
        for include in tree.iter(f"{{{_SCH}}}include"):
            href = include.get("href")
            if href:
                pending.append(_resolve_include(href, sch.parent / href, sch, entry).resolve())
    return trees


def _runtime_documents(trees: Iterable[etree._ElementTree]) -> set[str]:
    """The relative paths of the documents the schematrons read while they run.

    Those are the literal arguments of ``doc()``/``document()`` and the literal paths of the
    ``let`` variables the rules use (the kit declares some it never uses, for files it lacks).
    """
    wanted: set[str] = set()
    variables: dict[str, str] = {}
    expressions: list[str] = []
    for tree in trees:
        for element in tree.iter(etree.Element):
            for name, value in element.attrib.items():
                wanted.update(_DOC_CALL.findall(value))
                literal = _LITERAL_XML.match(value) if name == "value" else None
                if literal and etree.QName(element).localname == "let" and element.get("name"):
                    variables[element.get("name", "")] = literal.group(1)
                else:
                    expressions.append(value)
    used = "\n".join(expressions)
    wanted.update(
        path for variable, path in variables.items() if re.search(rf"\${re.escape(variable)}(?![\w.-])", used)
    )
    return wanted


def _value_set_index(entry: Path) -> dict[str, Path]:
    """The kit's SVS value sets (``jeuxDeValeurs/*.xml``) by OID."""
    index: dict[str, Path] = {}
    for path in sorted((entry / "jeuxDeValeurs").glob("*.xml")):
        with path.open("rb") as stream:
            match = _SVS_ID.search(stream.read(8192))
        if match:
            index.setdefault(match.group(1).decode("ascii"), path)
    return index


def _art_decor_value_set(oid: str, svs: Path) -> bytes:
    """An ART-DECOR ``voc-<oid>-DYNAMIC.xml`` file with the concepts of an SVS value set.

    Only what the kit's rules read is written: ``valueSet/conceptList/concept`` with
    ``@code`` and ``@codeSystem`` (and ``@displayName`` for readers).
    """
    value_sets = etree.Element("valueSets")
    value_set = etree.SubElement(value_sets, "valueSet", id=oid)
    concepts = etree.SubElement(value_set, "conceptList")
    for concept in _read_xml(svs).iter(f"{_SVS}Concept"):
        attributes = {key: concept.get(key, "") for key in ("code", "codeSystem", "displayName")}
        etree.SubElement(concepts, "concept", attributes)
    return bytes(etree.tostring(value_sets, xml_declaration=True, encoding="UTF-8"))


# Messages that quote an @value or @extension quote document content that can be patient
# data (INS matricule, birth date, telephone): the scratch copy prints a placeholder instead.
_QUOTED_VALUE = re.compile(r'<((?:[A-Za-z][\w.-]*:)?)value-of\s+select="(?:@value|@extension|\$value)"\s*/>')
WITHHELD = "[valeur non affichée]"


def _cache_error(where: Path, error: OSError) -> ConfigurationError:
    return ConfigurationError(
        f"cannot write the ANS kit cache in {where} ({error.strerror}); "
        "set CRBIO_CACHE_DIR or pass cache_dir",
        code=_CODE,
    )


def _withhold_values(schematron: str) -> str:
    """The schematron with its messages' quotes of document values replaced by a placeholder."""
    return _QUOTED_VALUE.sub(WITHHELD, schematron)


def _mend_runtime_documents(top: Path, trees: Iterable[etree._ElementTree], entry: Path) -> None:
    """Make sure every document the schematron reads exists, rebuilding missing voc files."""
    index: dict[str, Path] | None = None
    for relative in sorted(_runtime_documents(trees)):
        target = top.parent / relative
        if target.is_file():
            continue
        voc = _VOC.search(relative)
        if voc is not None:
            index = _value_set_index(entry) if index is None else index
            svs = index.get(voc.group(1))
            if svs is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(target, _art_decor_value_set(voc.group(1), svs))
                continue
        raise ConfigurationError(
            f"the ANS kit is incomplete: {top.relative_to(entry).as_posix()} reads {relative}, "
            "which is missing",
            code=_CODE,
        )


class AnsKit:
    """The ANS conformity kit: a volet schematron and the transverse profiles, ready to run.

    Building one transpiles and rewrites what the disk cache lacks and compiles what the
    process has not compiled yet: about 30 s of CPU from a cold cache, 15 to 20 s from a warm
    one (compiling the 10 MB ART-DECOR "structuration minimale" stylesheet is most of it, and
    SaxonC-HE cannot save a compiled stylesheet), nothing for further kits of the same process.
    A check then costs about 50 ms of CPU for a typical CR-BIO (100 ms for a long one). An
    AnsKit is not thread-safe, and Saxon holds the GIL while it runs: use one per process and a
    process pool to use more cores.

    Args:
        kit_dir: A copy of the kit, the folder holding ``schematrons/`` and ``jeuxDeValeurs/``.
        volet: The volet schematron (file name without ``.sch`` in ``schematrons/``), or None
            for the transverse profiles only (a CDA R2 N1).
        profiles: The transverse profiles, paths relative to ``schematrons/``.
        cache_dir: Where transpiled schematrons are kept; see :func:`default_cache_root`.
        optimised: Run the rewritten stylesheets (the default), or the kit's transpiled XSLT as
            it is (as ``ans-check`` does: the reference the rewrite is tested against).

    Attributes:
        kit_dir: The kit's folder.
        volet: The volet applied, or None.
        digest: SHA-256 of the kit's schematron and value-set sources.
        cache_entry: The folder holding the mended kit and its transpiled schematrons.
        transpiled: The schematrons this instance had to transpile (empty on a warm disk cache).
        compiled: The schematrons this instance had to compile (empty when the process had).
        optimised: Whether the rewritten stylesheets run.
        rewrites: What the rewrite changed, by schematron, for those this instance rewrote.

    Raises:
        ConfigurationError: SaxonC is not installed, ``kit_dir`` is not the kit, the kit is
            incomplete, or the cache folder cannot be written (code ``config.ans-kit``).
    """

    def __init__(
        self,
        kit_dir: Path,
        *,
        volet: str | None = DEFAULT_VOLET,
        profiles: Sequence[str] = PROFILES,
        cache_dir: Path | None = None,
        optimised: bool = True,
    ) -> None:
        _, _, _, saxon_version = _saxon()
        self.kit_dir = Path(kit_dir).resolve()
        self.volet = volet
        self.profiles = tuple(profiles)
        self.optimised = optimised
        self.rewrites: dict[str, Rewrite] = {}
        self._transverse: AnsKit | None = None
        wanted = self._check_kit(volet, profiles)
        files = _kit_files(self.kit_dir)
        self.digest = _digest(files)
        # The rewrite's version is in the key: a changed rewrite never meets an older rewritten file.
        key = hashlib.sha256(
            f"{self.digest}\0{saxon_version}\0{_CACHE_FORMAT}\0{REWRITE_VERSION}".encode()
        ).hexdigest()[:24]
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
        self._cache_root = root
        self.cache_entry = root / key
        self._saxon_version = saxon_version
        self._ensure_entry(files)
        transpiled: list[str] = []
        compiled: list[str] = []
        self._schematrons: list[tuple[_Schematron, Any]] = []
        for relative in wanted:
            source = self.cache_entry / "schematrons" / relative
            schematron = _Schematron(
                Path(relative).stem,
                source,
                source.with_name(source.stem + _XSL_SUFFIX),
                source.with_name(source.stem + _FAST_SUFFIX),
            )
            try:
                if not schematron.xsl.is_file():
                    self._transpile(schematron)
                    transpiled.append(schematron.name)
                if optimised and not schematron.fast.is_file():
                    self.rewrites[schematron.name] = _rewrite(schematron)
            except OSError as error:
                raise _cache_error(self.cache_entry, error) from None
            stylesheet = schematron.fast if optimised else schematron.xsl
            executable = _executables.get(stylesheet)
            if executable is None:
                executable = _executables[stylesheet] = self._compile(schematron.name, stylesheet)
                compiled.append(schematron.name)
            self._schematrons.append((schematron, executable))
        self.transpiled: tuple[str, ...] = tuple(transpiled)
        self.compiled: tuple[str, ...] = tuple(compiled)

    # -- construction ------------------------------------------------------------------------

    def _check_kit(self, volet: str | None, profiles: Sequence[str]) -> list[str]:
        """The schematrons to run (relative to ``schematrons/``), once the kit is known sound."""
        moteur = self.kit_dir / "schematrons" / "moteur"
        missing = [step for step in _PIPELINE if not (moteur / step).is_file()]
        if not (self.kit_dir / "jeuxDeValeurs").is_dir() or missing:
            raise ConfigurationError(
                f"{self.kit_dir} is not the ANS conformity kit (TestContenuCDA): expected schematrons/moteur/"
                f"{', '.join(missing or _PIPELINE)} and jeuxDeValeurs/",
                code=_CODE,
            )
        wanted = []
        if volet is not None:
            if not _VOLET_NAME.fullmatch(volet):
                raise ConfigurationError(f"invalid volet name {volet!r}", code=_CODE)
            wanted.append(f"{volet}.sch")
        wanted += profiles
        for relative in wanted:
            path = (self.kit_dir / "schematrons" / relative).resolve()
            if not path.is_relative_to(self.kit_dir / "schematrons") or not path.is_file():
                raise ConfigurationError(
                    f"the ANS kit in {self.kit_dir} has no schematron {relative}", code=_CODE
                )
        return wanted

    def _ensure_entry(self, files: Sequence[tuple[str, Path]]) -> None:
        """Create the cache entry (a scratch copy of the kit's sources) unless it exists."""
        if (self.cache_entry / _MANIFEST).is_file():
            return
        try:
            self.cache_entry.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{self.cache_entry.name}.", dir=self.cache_entry.parent))
        except OSError as error:
            raise _cache_error(self.cache_entry.parent, error) from None
        try:
            for relative, path in files:
                target = scratch / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".sch":
                    target.write_text(_withhold_values(path.read_text("utf-8")), encoding="utf-8")
                else:
                    shutil.copyfile(path, target)
            manifest = {
                "kit_dir": str(self.kit_dir),
                "sha256": self.digest,
                "saxon": self._saxon_version,
                "format": _CACHE_FORMAT,
            }
            (scratch / _MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            try:
                scratch.rename(self.cache_entry)
            except OSError:
                # Another process published the same entry first: theirs is as good as ours.
                if not (self.cache_entry / _MANIFEST).is_file():
                    raise
        except OSError as error:
            raise _cache_error(self.cache_entry.parent, error) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _transpile(self, schematron: _Schematron) -> None:
        """Mend what the schematron needs, then turn it into XSLT with the kit's ISO skeleton."""
        trees = _closure(schematron.source.resolve(), self.cache_entry.resolve())
        _mend_runtime_documents(schematron.source, trees.values(), self.cache_entry)
        processor, xslt, saxon_error, _ = _saxon()
        moteur = self.cache_entry / "schematrons" / "moteur"
        try:
            # The include step resolves hrefs against the source's URI, so it reads the file;
            # the next steps need no base URI and take the previous result as text.
            node = processor.parse_xml(xml_file_name=str(schematron.source))
            result = ""
            for step in _PIPELINE:
                stylesheet = _executables.get(moteur / step)
                if stylesheet is None:
                    stylesheet = _executables[moteur / step] = xslt.compile_stylesheet(
                        stylesheet_file=str(moteur / step)
                    )
                result = stylesheet.transform_to_string(xdm_node=node)
                if step != _PIPELINE[-1]:
                    node = processor.parse_xml(xml_text=result, encoding="UTF-8")
        except saxon_error as error:
            raise ConfigurationError(
                f"the ANS schematron {schematron.name} cannot be transpiled: {_saxon_message(error)}",
                code=_CODE,
            ) from None
        if not result or "<svrl:schematron-output" not in result:
            raise ConfigurationError(
                f"transpiling the ANS schematron {schematron.name} gave no XSLT", code=_CODE
            )
        _write_atomically(schematron.xsl, result.encode("utf-8"))

    def _compile(self, name: str, stylesheet: Path) -> Any:
        _, xslt, saxon_error, _ = _saxon()
        try:
            return xslt.compile_stylesheet(stylesheet_file=str(stylesheet))
        except saxon_error as error:
            raise ConfigurationError(
                f"the ANS schematron {name} cannot be compiled: {_saxon_message(error)}",
                code=_CODE,
            ) from None

    # -- description -------------------------------------------------------------------------

    @property
    def checks(self) -> tuple[str, ...]:
        """The checks a report of this kit lists: ``ans:<schematron name>``, volet first."""
        return tuple(f"ans:{schematron.name}" for schematron, _ in self._schematrons)

    @property
    def version(self) -> str:
        """What was run, for reports: the kit's source hash, its schematrons and Saxon's version."""
        names = ", ".join(schematron.name for schematron, _ in self._schematrons)
        return f"ANS TestContenuCDA sha256:{self.digest[:16]} [{names}] on {self._saxon_version}"

    def __str__(self) -> str:
        return self.version

    def transverse(self) -> AnsKit:
        """This kit without its volet schematron: the transverse profiles, for a CDA R2 N1.

        The profiles' compiled stylesheets are shared, so this costs nothing once the kit is built.
        """
        if self.volet is None:
            return self
        if self._transverse is None:
            self._transverse = AnsKit(
                self.kit_dir,
                volet=None,
                profiles=self.profiles,
                cache_dir=self._cache_root,
                optimised=self.optimised,
            )
        return self._transverse

    def __repr__(self) -> str:
        return f"AnsKit({str(self.kit_dir)!r}, volet={self.volet!r}, sha256={self.digest[:16]!r})"

    # -- checking ----------------------------------------------------------------------------

    def check(self, document: bytes, *, label: str) -> ValidationReport:
        """Run every schematron of the kit on a document and report each failed check.

        The document is parsed once, by Saxon, from its text (a UTF-8 BOM is removed, a
        DOCTYPE other than a bare one is refused). A failed assert or a successful report
        becomes a finding with source ``ans:<schematron name>``, the ANS message with its
        whitespace normalised, the SVRL location, its line in the document, and the rule's id
        or test; ART-DECOR warnings and information (``role="warning"``/``"info"``) are kept
        with severity ``warning``: they do not make the document fail. A schematron that
        breaks on the document gives a finding with rule ``kit-error``, so the document never
        passes unchecked.

        Args:
            document: The CDA document's bytes.
            label: An opaque name for the document in the report (file name, document id).

        Raises:
            InputError: The document is not well-formed or refused (code ``input.xml``).
        """
        processor, _, saxon_error, _ = _saxon()
        text = xml_text(document, label=label)
        try:
            node = processor.parse_xml(xml_text=text, encoding="UTF-8")
        except saxon_error as error:
            raise InputError(
                f"{label}: not well-formed XML: {_saxon_message(error)}", code="input.xml"
            ) from None
        findings: list[Finding] = []
        for schematron, executable in self._schematrons:
            source = f"ans:{schematron.name}"
            try:
                svrl = executable.transform_to_string(xdm_node=node)
            except saxon_error as error:
                message = f"the schematron failed on this document: {_saxon_message(error)}"
                findings.append(Finding(source, message, rule="kit-error"))
                continue
            findings += _svrl_findings(svrl, source)
        if findings:
            findings = _with_lines(findings, document, label)
        return ValidationReport(label, self.checks, tuple(findings))


def _rewrite(schematron: _Schematron) -> Rewrite:
    """Write the rewritten (faster, same output) copy of a transpiled schematron beside it."""
    tree = _read_xml(schematron.xsl)
    rewrite = rewrite_stylesheet(tree)
    _write_atomically(schematron.fast, etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    return rewrite


def _svrl_findings(svrl: str, source: str) -> Iterator[Finding]:
    """The failures an SVRL report lists.

    The kit's skeleton leaves ``@id`` and ``@test`` off its failed asserts, so the rule is
    named by the active pattern (and the fired rule's id, ART-DECOR's rules have one) when
    the assert has neither. SVRL is flat: patterns, fired rules and asserts are siblings.
    """
    pattern = rule = None
    for item in parse_xml(svrl.encode("utf-8"), label=source).getroot():
        if item.tag == f"{_SVRL}active-pattern":
            pattern, rule = item.get("id"), None
        elif item.tag == f"{_SVRL}fired-rule":
            rule = item.get("id")
        elif item.tag in _FINDINGS:
            text = item.find(f"{_SVRL}text")
            message = " ".join("".join((text if text is not None else item).itertext()).split())
            where = "/".join(part for part in (pattern, rule) if part)
            name = item.get("id") or item.get("test") or where or None
            advice = (item.get("role") or "").strip().lower() in _NON_BLOCKING_ROLES
            yield Finding(
                source,
                message,
                location=item.get("location"),
                rule=name,
                severity="warning" if advice else "error",
            )


def _with_lines(findings: list[Finding], document: bytes, label: str) -> list[Finding]:
    """The findings with the line of their location in the document, where it can be found."""
    try:
        root = parse_xml(document, label=label).getroot()
    except InputError:
        return findings
    lines: dict[str, int | None] = {}
    result = []
    for finding in findings:
        line = None
        if finding.location:
            if finding.location not in lines:
                lines[finding.location] = _line_of(root, finding.location)
            line = lines[finding.location]
        if line:
            finding = dataclasses.replace(finding, line=line)
        result.append(finding)
    return result


def _line_of(root: etree._Element, location: str) -> int | None:
    """The line of the element an SVRL location designates (an attribute's element), or None."""
    position = 0
    node: etree._Element | None = None
    for match in _STEP.finditer(location):
        if match.start() != position:
            return None
        position = match.end()
        if match.group("attr"):
            continue  # the attribute is on the element reached so far
        name, index = match.group("name"), int(match.group("index") or 1)
        if node is None:
            candidates = [root] if etree.QName(root).localname == name else []
        else:
            candidates = [
                child for child in node if isinstance(child.tag, str) and etree.QName(child).localname == name
            ]
        if len(candidates) < index:
            return None
        node = candidates[index - 1]
    if position != len(location) or node is None:
        return None
    line: int | None = node.sourceline
    return line
