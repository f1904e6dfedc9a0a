"""A compile-time rewrite of the kit's transpiled schematrons that makes them run faster, same output.

The ISO skeleton (``iso_svrl_for_xslt2.xsl``) turns every schematron pattern into an XSLT
mode that walks the whole document with ``xsl:apply-templates``: one template per rule, each
ending with the recursion ``<xsl:apply-templates select="*" mode="M7"/>``, plus a default
template that only recurses. The kit's profiles have hundreds of patterns (IHE: 231), so a
check walks a document hundreds of times, asking at every element whether a rule matches, and
the root template adds one more walk per pattern in the default mode (``<xsl:apply-templates/>``
inside ``svrl:active-pattern``) that produces nothing. That is where nearly all the time went.

The rewrite changes how the same rules reach the same elements, never a rule, an assert or a
message:

1. **The default-mode walks are dropped** when the default mode cannot produce anything: its
   only templates are the root template (which matches the document node, never one of its
   children) and an empty ``text()`` template, so the built-in rules visit every node and
   output nothing.
2. **A pattern's walk becomes one selection**: ``select="/"`` becomes the union of its rules'
   contexts, ``//(context)`` for each, and the rules no longer recurse. By the XSLT definition
   of pattern matching (a node N matches the pattern P when N is in ``root(N)//(P)``), that
   union is exactly the set of nodes some rule of the pattern matches; a union is in document
   order, which is the walk's order; and each node is still given to the highest-priority rule
   that matches it, so the SVRL comes out byte for byte the same. Attributes are filtered out
   (the walk never visits them).
3. **Contexts of the form** ``*[cda:templateId/@root = 'oid']…`` (most of the IHE and CI-SIS
   rules) are looked up in an ``xsl:key`` on ``templateId/@root`` instead of scanning the
   document once per rule; a key lookup and the general comparison both compare strings with
   the codepoint collation, so they select the same elements.

A pattern is rewritten only when everything the argument relies on holds, checked on the
stylesheet itself, else it keeps its walk (and :class:`Rewrite` says why): a single module
(no ``xsl:import``/``xsl:include``/``xsl:mode``, no ``xpath-default-namespace``,
``default-collation`` or ``xml:base``); the skeleton's exact shapes (called once, from the root
template, with ``select="/"``; the two default templates; every rule ending with the recursion
and nothing else applying templates in that mode; no ``next-match``/``apply-imports``); rule
bodies that never ask ``position()``/``last()`` (a node's position differs between a walk and a
selection); contexts whose namespace prefixes mean the same at the caller; and contexts written
in a small vocabulary that cannot raise a dynamic error (names, ``@``, ``/``, ``//``, ``.``,
``self::``/``child::``, predicates with ``=``/``!=``/``and``/``or``/``not()``/``concat()``,
``doc('literal')``, string literals and ``[integer]``), since an error inside a match
pattern means "no match" while inside a select it would stop the check.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

__all__ = ["REWRITE_VERSION", "Rewrite", "rewrite_stylesheet"]

REWRITE_VERSION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
"""Changes whenever this module does, so cache entries holding rewritten stylesheets follow it."""

_XSL_NS = "http://www.w3.org/1999/XSL/Transform"
_XSL = f"{{{_XSL_NS}}}"
_SVRL_ACTIVE_PATTERN = "{http://purl.oclc.org/dsdl/svrl}active-pattern"
_HL7 = "urn:hl7-org:v3"
KEY_NAME = "crbio-template-id"
"""The ``xsl:key`` the rewrite adds: elements by the ``@root`` of their ``templateId`` children."""

_PATTERN_MODE = re.compile(r"M\d+\Z")
_RECURSIONS = ("*", "*|comment()|processing-instruction()")
_POSITIONAL = re.compile(r"\b(?:position|last)\s*\(\s*\)")

# Tokens of the context vocabulary that cannot raise a dynamic error (see the module docstring).
_TOKEN = re.compile(
    r"""\s*(?:(?P<string>'[^']*'|"[^"]*")|(?P<number>[0-9]+(?![0-9.eE]))"""
    r"""|(?P<name>(?:[A-Za-z_][\w.-]*:)?(?:[A-Za-z_][\w.-]*|\*))(?P<call>\s*\()?"""
    r"""|(?P<symbol>::|//|!=|[=/\[\]()@*|,.]))"""
)
_FUNCTIONS = frozenset({"not", "concat", "doc"})
_OPERATORS = frozenset({"and", "or"})
_AXES = frozenset({"self", "child", "attribute"})
_TEMPLATE_ID = re.compile(
    r"""\A\*\[\s*(?P<prefix>[A-Za-z_][\w.-]*):templateId\s*/\s*@root\s*=\s*(?P<oid>'[^']*'|"[^"]*")\s*\]"""
    r"""(?P<rest>(?:/.*)?)\Z""",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What :func:`rewrite_stylesheet` changed in one stylesheet.

    Attributes:
        default_walks: Default-mode walks removed from the root template.
        patterns: Patterns (modes) whose walk became one selection.
        key_lookups: Rule contexts served by the ``templateId`` key.
        kept: The patterns left as they were, as (mode, reason).
    """

    default_walks: int
    patterns: int
    key_lookups: int
    kept: tuple[tuple[str, str], ...]


def _tokens(context: str) -> list[tuple[str, str]] | None:
    """The context's tokens as (kind, text), or None when it leaves the safe vocabulary."""
    tokens: list[tuple[str, str]] = []
    position, end = 0, len(context.rstrip())
    while position < end:
        match = _TOKEN.match(context, position)
        if match is None:
            return None
        position = match.end()
        kind = next(k for k in ("string", "number", "name", "symbol") if match.group(k) is not None)
        text = match.group(kind)
        if kind == "name" and match.group("call"):
            if text not in _FUNCTIONS:
                return None
            kind = "call"
        tokens.append((kind, text))
    return tokens


def _safe(tokens: list[tuple[str, str]]) -> str | None:
    """Why evaluating these tokens as an expression could raise a dynamic error, or None.

    Comparisons with ``=``/``!=`` of nodes and strings, ``and``/``or``, ``not()`` of nodes or
    booleans and paths of nodes never raise one. What could (arithmetic, value comparisons,
    casts, a number outside ``[n]``, a sequence of several strings as a predicate) is refused:
    a keyword or ``*`` after an operand, a number other than ``[integer]``, a comma outside
    ``concat()``, ``concat()`` of anything but attributes and strings or not compared, ``doc()``
    of anything but a string literal.
    """
    operand_ends = ("name", "string", "number")
    for index, (kind, text) in enumerate(tokens):
        previous = tokens[index - 1] if index else ("", "")
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        after_operand = (previous[0] in operand_ends and previous[1] not in _OPERATORS) or previous[1] in (
            "]",
            ")",
            ".",
        )
        if kind == "name" and after_operand and text not in _OPERATORS:
            return f"operator {text}"
        if kind == "name" and text in _OPERATORS and not after_operand:
            return f"{text} without a left operand"
        if kind == "number" and not (previous == ("symbol", "[") and following == ("symbol", "]")):
            return f"number {text} outside a positional predicate"
        if kind == "name" and following == ("symbol", "::") and text not in _AXES:
            return f"axis {text}::"
        if (
            kind == "call"
            and text == "doc"
            and not (
                following[0] == "string" and index + 2 < len(tokens) and tokens[index + 2] == ("symbol", ")")
            )
        ):
            return "doc() of something else than a string literal"
        if kind == "call" and text == "concat" and not _compared_concat(tokens, index):
            return "concat() of something else than attributes and strings, or not compared"
        if text == "," and not _inside_concat(tokens, index):
            return "a sequence"
    return None


def _closing(tokens: list[tuple[str, str]], opening: int) -> int:
    """The index of the ``)`` or ``]`` closing the bracket opened at (or by the call at) ``opening``."""
    depth = 0
    for index in range(opening, len(tokens)):
        kind, text = tokens[index]
        if kind == "call" or text in ("(", "["):
            depth += 1
        elif text in (")", "]"):
            depth -= 1
            if depth == 0:
                return index
    return len(tokens)


def _inside_concat(tokens: list[tuple[str, str]], index: int) -> bool:
    depth = 0
    for position in range(index - 1, -1, -1):
        kind, text = tokens[position]
        if text in (")", "]"):
            depth += 1
        elif kind == "call" or text in ("(", "["):
            if depth == 0:
                return (kind, text) == ("call", "concat")
            depth -= 1
    return False


def _compared_concat(tokens: list[tuple[str, str]], index: int) -> bool:
    """Whether a ``concat()`` takes attributes and strings and is the last step of a compared path."""
    close = _closing(tokens, index)
    arguments = tokens[index + 1 : close]
    expected_value = True
    position = 0
    while position < len(arguments):
        kind, text = arguments[position]
        if expected_value and kind == "string":
            position += 1
        elif (
            expected_value
            and text == "@"
            and position + 1 < len(arguments)
            and arguments[position + 1][0] == "name"
        ):
            position += 2
        elif not expected_value and text == ",":
            position += 1
        else:
            return False
        expected_value = not expected_value
    if close >= len(tokens) or expected_value:
        return False
    after = tokens[close + 1][1] if close + 1 < len(tokens) else ""
    if after in ("=", "!="):
        return True
    # Walk back over the path the call ends (steps, brackets) to the token before it.
    position, depth = index - 1, 0
    while position >= 0:
        kind, text = tokens[position]
        if text in (")", "]"):
            depth += 1
        elif kind == "call" or text in ("(", "["):
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and not (kind in ("name", "string") or text in ("/", "//", "@", ".", "::")):
            break
        position -= 1
    return position >= 0 and tokens[position][1] in ("=", "!=") and after in ("]", ")")


def _top_level(text: str, separator: str) -> list[int] | None:
    """Where ``separator`` stands outside brackets, parentheses and string literals; None if unbalanced."""
    found: list[int] = []
    depth, quote = 0, ""
    for index, character in enumerate(text):
        if quote:
            quote = "" if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character in "[(":
            depth += 1
        elif character in "])":
            depth -= 1
            if depth < 0:
                return None
        elif character == separator and depth == 0:
            found.append(index)
    return None if quote or depth else found


def _alternatives(context: str) -> list[str] | None:
    """The context split at its top-level ``|``, each part trimmed, or None if unbalanced."""
    bars = _top_level(context, "|")
    if bars is None:
        return None
    parts = [context[a + 1 : b] for a, b in zip([-1, *bars], [*bars, len(context)], strict=True)]
    # Only the ends are trimmed: whitespace inside a string literal is part of its value.
    trimmed = [part.strip() for part in parts]
    return trimmed if all(trimmed) else None


def _prefixes(tokens: list[tuple[str, str]]) -> set[str]:
    return {text.split(":", 1)[0] for kind, text in tokens if kind in ("name", "call") and ":" in text}


def _selection(alternative: str, nsmap: dict[str | None, str], *, keyed: bool) -> tuple[str, bool]:
    """The expression selecting what one alternative of a context matches, and whether it uses the key."""
    found = _TEMPLATE_ID.match(alternative) if keyed else None
    if found and nsmap.get(found.group("prefix")) == _HL7:
        return f"key('{KEY_NAME}', {found.group('oid')}){found.group('rest')}", True
    if alternative.startswith("/"):
        return alternative, False
    return f"//{alternative}", False


def _steps(path: str) -> list[tuple[str, str]] | None:
    """A rooted path as its steps with their separators, or None if it has an empty step.

    ``/a/b[c/d]//e`` gives ``[("/", "a"), ("/", "b[c/d]"), ("//", "e")]``.
    """
    slashes = _top_level(path, "/")
    if slashes is None:
        return None
    steps: list[tuple[str, str]] = []
    start, separator, position = 0, "", 0
    while position < len(slashes):
        at = slashes[position]
        if at > start:
            steps.append((separator, path[start:at].strip()))
        separator = "//" if path.startswith("//", at) else "/"
        start = at + len(separator)
        position += len(separator)
    if start < len(path):
        steps.append((separator, path[start:].strip()))
    if not steps or any(not step for _, step in steps) or steps[0][0] == "":
        return None
    return steps


@dataclass
class _Trie:
    ends: bool = False
    children: dict[tuple[str, str], _Trie] = field(default_factory=dict)


def _factored(expressions: list[str]) -> list[str]:
    """The rooted paths among ``expressions`` with their common leading steps written once.

    ``//a/b | //a/c`` selects what ``//a/(b | c)`` does: ``/`` distributes over a union of
    nodes, and both sides are sets in document order. Evaluating ``//a`` once instead of once per
    rule is what makes the ART-DECOR profile (hundreds of rules under the same few paths) fast.
    """
    trie = _Trie()
    others: list[str] = []
    for expression in expressions:
        steps = _steps(expression) if expression.startswith("/") and expression != "/" else None
        if steps is None:
            others.append(expression)
            continue
        node = trie
        for separator_and_step in steps:
            node = node.children.setdefault(separator_and_step, _Trie())
        node.ends = True

    def relative(node: _Trie) -> list[str]:
        parts = ["."] if node.ends else []
        for (separator, step), child in node.children.items():
            head = step if separator == "/" else f".//{step}"
            parts.append(head if not child.children else f"{head}/({_balanced_union(relative(child))})")
        return parts

    rooted = []
    for (separator, step), child in trie.children.items():
        head = f"{separator}{step}"
        rooted.append(head if not child.children else f"{head}/({_balanced_union(relative(child))})")
    return rooted + others


def _balanced_union(expressions: list[str]) -> str:
    """``a | b | c…`` as a balanced tree: Saxon compiles a long flat union far more slowly."""
    if not expressions:
        return "()"
    if len(expressions) == 1:
        return expressions[0]
    middle = len(expressions) // 2
    return f"({_balanced_union(expressions[:middle])}) | ({_balanced_union(expressions[middle:])})"


def _is_default(template: etree._Element) -> bool:
    """Whether a template of a pattern mode is one of the skeleton's two default templates."""
    return (template.get("match"), template.get("priority")) in (("text()", "-1"), ("@*|node()", "-2"))


def _is_recursion(element: etree._Element, mode: str) -> bool:
    return (
        element.tag == f"{_XSL}apply-templates"
        and element.get("select") in _RECURSIONS
        and element.get("mode") == mode
        and len(element) == 0
        and len(element.attrib) == 2
    )


def _blank(text: str | None) -> bool:
    return not (text or "").strip()


def _whole_stylesheet_obstacle(root: etree._Element) -> str | None:
    """Why no pattern of this stylesheet can be rewritten, or None."""
    for name in ("import", "include", "mode", "apply-imports", "next-match"):
        if root.find(f".//{_XSL}{name}") is not None:
            return f"xsl:{name}"
    for template in root.iter(f"{_XSL}template"):
        mode = template.get("mode") or ""
        if "#" in mode or len(mode.split()) > 1:
            return "a template in several modes"
    for element in root.iter(etree.Element):
        for attribute in element.attrib:
            local = str(etree.QName(attribute).localname)
            if local in ("xpath-default-namespace", "default-collation") or attribute == (
                "{http://www.w3.org/XML/1998/namespace}base"
            ):
                return local
    if any(key.get("name") == KEY_NAME for key in root.iter(f"{_XSL}key")):
        return f"a key named {KEY_NAME} already"
    return None


def _plan_mode(
    mode: str,
    templates: list[etree._Element],
    callers: list[etree._Element],
    applications: int,
    *,
    keyed: bool,
) -> tuple[list[tuple[str, bool]], str | None]:
    """The selection replacing a mode's walk as (expression, uses the key) pieces, or why it stays."""
    if len(callers) != 1:
        return [], "not called once from the root template"
    caller = callers[0]
    defaults = [t for t in templates if _is_default(t)]
    rules = [t for t in templates if t not in defaults]
    if sorted(t.get("match") or "" for t in defaults) != ["@*|node()", "text()"]:
        return [], "not the skeleton's default templates"
    for default in defaults:
        if default.get("match") == "text()":
            if len(default) or not _blank(default.text):
                return [], "a text() template that outputs"
        elif not (len(default) == 1 and _is_recursion(default[0], mode) and _blank(default.text)):
            return [], "a default template that does more than recurse"
    if applications != len(rules) + 2:
        return [], "templates applied in this mode elsewhere"
    pieces: list[tuple[str, bool]] = []
    for rule in rules:
        context = rule.get("match") or ""
        if rule.get("name") is not None or not len(rule) or not _is_recursion(rule[-1], mode):
            return [], f"rule {context!r} does not end with the skeleton's recursion"
        if _POSITIONAL.search(etree.tostring(rule, encoding="unicode")):
            return [], f"rule {context!r} asks position() or last()"
        alternatives = _alternatives(context)
        if alternatives is None:
            return [], f"context {context!r} cannot be split"
        for alternative in alternatives:
            tokens = _tokens(alternative)
            if tokens is None:
                return [], f"context {alternative!r} leaves the safe vocabulary"
            reason = _safe(tokens)
            if reason is not None:
                return [], f"context {alternative!r}: {reason}"
            if not (tokens[0][1] in ("/", "//", "*", "@") or tokens[0][0] == "name"):
                return [], f"context {alternative!r} does not start with a step"
            if len(tokens) > 1 and tokens[1] == ("symbol", "::"):
                return [], f"context {alternative!r} starts with an axis"
            for prefix in _prefixes(tokens):
                if rule.nsmap.get(prefix) is None or rule.nsmap.get(prefix) != caller.nsmap.get(prefix):
                    return [], f"prefix {prefix}: means something else at the caller"
            pieces.append(_selection(alternative, rule.nsmap, keyed=keyed))
    return pieces, None


def rewrite_stylesheet(stylesheet: etree._ElementTree) -> Rewrite:
    """Rewrite an ISO-skeleton SVRL stylesheet in place so it runs faster with the same output.

    See the module docstring for what changes and the conditions under which each pattern is
    rewritten; the patterns that do not meet them keep their walk. A stylesheet that is not the
    skeleton's (no single root template) is left untouched.

    Args:
        stylesheet: The transpiled schematron (``iso_svrl_for_xslt2.xsl`` output), parsed by lxml.

    Returns:
        What was rewritten and what was kept, with the reasons.
    """
    root = stylesheet.getroot()
    templates = [t for t in root if t.tag == f"{_XSL}template"]
    tops = [t for t in templates if t.get("match") == "/" and t.get("mode") is None]
    if len(tops) != 1:
        return Rewrite(0, 0, 0, (("*", "no single root template"),))
    top = tops[0]
    obstacle = _whole_stylesheet_obstacle(root)

    walks = 0
    default_mode = [t for t in templates if t.get("mode") is None]
    if obstacle is None and all(
        t is top or (t.get("match") == "text()" and not len(t) and _blank(t.text)) for t in default_mode
    ):
        for application in list(top.iter(f"{_XSL}apply-templates")):
            parent = application.getparent()
            if (
                not application.attrib
                and not len(application)
                and parent is not None
                and parent.tag == _SVRL_ACTIVE_PATTERN
            ):
                _remove_keeping_tail(application)
                walks += 1

    by_mode: dict[str, list[etree._Element]] = {}
    for template in templates:
        mode = template.get("mode") or ""
        if _PATTERN_MODE.match(mode):
            by_mode.setdefault(mode, []).append(template)
    if obstacle is not None:
        return Rewrite(walks, 0, 0, tuple((mode, obstacle) for mode in sorted(by_mode)))
    callers: dict[str, list[etree._Element]] = {}
    applications: dict[str, int] = {}
    for application in root.iter(f"{_XSL}apply-templates"):
        mode = application.get("mode") or ""
        applications[mode] = applications.get(mode, 0) + 1
        if application.get("select") == "/" and _is_in(application, top):
            callers.setdefault(mode, []).append(application)

    hl7 = next((prefix for prefix, uri in root.nsmap.items() if prefix and uri == _HL7), None)
    rewritten = lookups = 0
    kept: list[tuple[str, str]] = []
    for mode in sorted(by_mode, key=lambda m: int(m[1:])):
        pieces, reason = _plan_mode(
            mode, by_mode[mode], callers.get(mode, []), applications.get(mode, 0), keyed=hl7 is not None
        )
        if reason is not None:
            kept.append((mode, reason))
            continue
        for rule in by_mode[mode]:
            if not _is_default(rule):
                _remove_keeping_tail(rule[-1])
        union = _balanced_union(_factored([expression for expression, _ in pieces]))
        callers[mode][0].set("select", f"({union})[not(. instance of attribute())]")
        rewritten += 1
        lookups += sum(1 for _, keyed in pieces if keyed)
    if lookups:
        # The key is declared with the stylesheet's own prefix for HL7 v3, in scope everywhere.
        key = etree.Element(f"{_XSL}key")
        key.set("name", KEY_NAME)
        key.set("match", f"*[{hl7}:templateId]")
        key.set("use", f"{hl7}:templateId/@root")
        top.addprevious(key)
    return Rewrite(walks, rewritten, lookups, tuple(kept))


def _is_in(element: etree._Element, ancestor: etree._Element) -> bool:
    return any(parent is ancestor for parent in element.iterancestors())


def _remove_keeping_tail(element: etree._Element) -> None:
    """Remove an element, keeping the text that followed it (whitespace here, but still)."""
    parent = element.getparent()
    assert parent is not None
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)
