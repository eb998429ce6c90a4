"""Syntax check of the hand-written Swift sources (run through scripts/check-swift).

No Swift compiler runs on Debian, so this parses every *.swift under the root (default ios/)
with the tree-sitter Swift grammar and reports each ERROR or MISSING node of the tree as
`file:line:col: syntax error near '...'`. The grammar is not the compiler: the valid Swift it
misreads is listed in KNOWN_GAPS, one precise pattern per construct; an error matching an
entry is counted as a known grammar gap, not a failure. The self-test (run before every check)
proves that a valid file passes, broken ones fail, and each entry still matches its construct.

Usage: check_swift.py [ROOT] | check_swift.py --self-test  (ROOT defaults to the repo's ios/)
"""

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tree_sitter
import tree_sitter_swift

PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))

# Generated code is checked elsewhere (bindings/generate in CI); build output is not ours.
SKIP_DIRS = {"Generated", "build", ".build", "DerivedData"}


@dataclass(frozen=True)
class Gap:
    """Valid Swift that the grammar misreads. An error node is this gap when it is of `kind`
    ("ERROR", or "MISSING x" for a missing token x), its text fullmatches `text`, the source
    before it matches `before` and the source from its start on matches `at` (both searched
    within 200 characters). `example` must show the gap and nothing else; `near_miss` is
    broken Swift that looks like it and must still fail."""

    name: str
    kind: str
    text: str
    before: str
    at: str
    reason: str
    example: str
    near_miss: str


# What may precede a `(` that opens a value (not a call's arguments).
NOT_CALLEE = r"(?:\A|[^\w)\]}>?!])"
KNOWN_GAPS = [
    Gap(
        "attribute alone in an #if block",
        "ERROR",
        r"@\w+(?:\([^()]*\))?",
        r"(?:\A|\n)[ \t]*\Z",
        r"\A@\w+(?:\([^()\n]*\))?[ \t]*\n[ \t]*#(?:endif|else|elseif)\b",
        "an attribute may end an #if block; it applies to the declaration after #endif "
        "(uniffi: `#if swift(>=5.8) @_documentation(visibility: private) #endif`)",
        "#if swift(>=5.8)\n@_documentation(visibility: private)\n#endif\npublic struct S {}\n",
        "@MainActor\n",
    ),
    Gap(
        "empty tuple `()` as a closure's body",
        "ERROR",
        r"\(\s*\)",
        r"\{\s*\Z",
        r"\A\(\s*\)\s*\}",
        "`{ () }` is a closure returning the Void value (uniffi: `let writeReturn = { () }`)",
        "func f() { let g = { () }\n    g() }\n",
        "func f() { let g = { () ) } }\n",
    ),
    Gap(
        "empty tuple `()` as a value",
        "MISSING !",
        r"",
        NOT_CALLEE + r"\(\s*\Z",
        r"\A\s*\)",
        "`()` is the Void value: `resume(returning: ())`, `.success(())`, `return ()`",
        "func f(c: CheckedContinuation<Void, Never>) { c.resume(returning: ()) }\n",
        "func f() { g(()) ) }\n",
    ),
    Gap(
        "whitespace before `;`",
        "ERROR",
        r";?",
        r"\s\Z",
        r"\A;",
        "a semicolon may follow whitespace: `let a = b ; g()`",
        "func f() { let a = 1 ; g(a) }\n",
        "func f() { let a = ; }\n",
    ),
]


def problems(source: bytes):
    """Yields (line, col, kind, text, gap or None) for each ERROR and MISSING node."""
    text = source.decode("utf-8", errors="replace")
    lines = source.split(b"\n")

    def visit(node):
        if node.is_error or node.is_missing:
            yield node
            if node.is_error:
                return  # what is inside an ERROR node is part of that error
        for child in node.children:
            yield from visit(child)

    for node in visit(PARSER.parse(source).root_node):
        row, col = node.start_point
        col = len(lines[row][:col].decode("utf-8", errors="replace")) + 1
        kind = f"MISSING {node.type}" if node.is_missing else "ERROR"
        start = len(source[: node.start_byte].decode("utf-8", errors="replace"))
        end = len(source[: node.end_byte].decode("utf-8", errors="replace"))
        span = text[start:end].strip()
        before, at = text[max(0, start - 200) : start], text[start : start + 200]
        gap = next(
            (
                g
                for g in KNOWN_GAPS
                if g.kind == kind
                and re.fullmatch(g.text, span)
                and re.search(g.before, before)
                and re.search(g.at, at)
            ),
            None,
        )
        # An empty node (a missing token) is shown by what follows it on its line, or else
        # by what precedes it.
        near = span or at.split("\n")[0].strip() or before.split("\n")[-1].strip()[-40:]
        near = near.split("\n")[0]
        yield row + 1, col, kind, near[:40], gap


def swift_files(root: Path):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if d not in SKIP_DIRS
            and not d.startswith(".")
            and not (d == "generated" and here.name == "bindings")
        )
        found += [here / f for f in sorted(filenames) if f.endswith(".swift")]
    return found


def check(root: Path, quiet=False):
    """Returns (files, errors, gaps); prints each error and gap unless quiet."""
    files = swift_files(root) if root.is_dir() else []
    errors = gaps = 0
    for path in files:
        shown = os.path.relpath(path)
        shown = path if shown.startswith("..") else shown
        for line, col, kind, near, gap in problems(path.read_bytes()):
            what = f"syntax error near '{near}'"
            if kind != "ERROR":
                what += f" (missing '{kind.split(' ', 1)[1]}')"
            if gap:
                gaps += 1
                if not quiet:
                    print(f"{shown}:{line}:{col}: known grammar gap ({gap.name}): {near!r}")
            else:
                errors += 1
                if not quiet:
                    print(f"{shown}:{line}:{col}: {what}")
    return len(files), errors, gaps


GOOD = """import SwiftUI
import NetworkExtension

@main
struct DemoApp: App {
    @Environment(\\.scenePhase) private var scenePhase
    var body: some Scene { WindowGroup { Text("\\(peers["a"] ?? "")") } }
}

final class Provider: NEPacketTunnelProvider {
    override func stopTunnel(with reason: NEProviderStopReason, completionHandler: @escaping () -> Void) {
        completionHandler()
    }
}
"""
BROKEN = {
    "unclosed.swift": "struct S {\n    func f() {\n        g()\n    }\n",
    "dangling.swift": "func f() {\n    let x = \n}\n",
}


def self_test():
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if check(root, quiet=True)[0] != 0:
            failures.append("an empty directory had Swift files")
        (root / "Good.swift").write_text(GOOD)
        (root / "Generated").mkdir()
        (root / "Generated" / "Skipped.swift").write_text(BROKEN["dangling.swift"])
        if check(root, quiet=True) != (1, 0, 0):
            failures.append("the valid file did not pass alone (or Generated/ was read)")
        for name, source in BROKEN.items():
            (root / name).write_text(source)
            if check(root, quiet=True)[1] == 0:
                failures.append(f"{name} passed")
            (root / name).unlink()
    for gap in KNOWN_GAPS:
        found = list(problems(gap.example.encode()))
        if not found or any(g is not gap for *_, g in found):
            failures.append(f"known gap '{gap.name}' no longer matches its example: {found}")
        if all(g for *_, g in problems(gap.near_miss.encode())):
            failures.append(f"known gap '{gap.name}' hides the error in {gap.near_miss!r}")
    for failure in failures:
        print(f"swift syntax self-test: FAILED: {failure}")
    if not failures:
        print(f"swift syntax self-test: ok ({len(BROKEN)} broken files fail, "
              f"{len(KNOWN_GAPS)} known gaps match)")
    return not failures


def main(argv):
    if not self_test():
        return 1
    if argv[1:] == ["--self-test"]:
        return 0
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "ios"
    files, errors, gaps = check(root)
    print(f"swift syntax: {files} files, {errors} errors, {gaps} known grammar gaps")
    if files == 0:
        print(f"swift syntax: no Swift files under {root} (wrong path?)")
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
