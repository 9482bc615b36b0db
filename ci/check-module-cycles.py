#!/usr/bin/env python3
"""Fails when the modules inside one crate depend on each other in a cycle.

Usage: ci/check-module-cycles.py [CRATE_DIR ...]   (default: every crate of the workspace)

Each crate's module graph is read from its sources (stdlib only, no cargo):

* Modules are the files reached from the crate root (`src/lib.rs`, and every `src/bin/*.rs`
  as a crate of its own) through `mod name;` declarations, plus inline `mod name { ... }`
  blocks. `#[cfg(test)]` modules (`mod tests { ... }`, `mod tests;`) are left out: tests may
  reach anywhere.
* An edge A -> B is a path in A's code that names an item of module B: `crate::...`,
  `super::...`, `self::...`, or a path starting with the name of one of A's own child modules,
  in `use` declarations (groups expanded) and in expressions and types alike. Comments and
  string literals are skipped.
* A path that names an item through a re-export (`crate::grape::GrapeConfig`, where
  `grape/mod.rs` has `pub use config::GrapeConfig`) leads to the module that the re-export
  points at (`grape::config`), not to the re-exporting module.
* Declaring and re-exporting are not uses: `mod child;` and a `pub use` of something inside the
  module's own subtree give no edge. So a parent that only declares and re-exports its children
  is not in a cycle with them; a parent whose own code calls into a child, while the child uses
  an item defined in the parent, is.
* A path into a module's own subtree from inside it (`self::x`) is no edge out of it.

A cycle is reported with one path of it and, for each step, the file and line that makes it.
"""

import os
import re
import sys

CRATES = ["core", "adapters/tokio", "adapters/embassy", "adapters/sim", "host"]

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """The text with comments, string and char literals blanked out (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 40]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            m = re.match(r'b?r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' or (c == "b" and text.startswith('b"', i) and (i == 0 or not re.match(r"\w", text[i - 1]))):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), or a lifetime/label ('a) which stays.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(" " * m.end())
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(text, open_brace):
    """The index just past the brace that closes the one at `open_brace`."""
    depth = 0
    for j in range(open_brace, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def blank(text, start, end):
    return text[:start] + re.sub(r"[^\n]", " ", text[start:end]) + text[end:]


ATTRS = r"((?:#\[[^\]]*\]\s*)*)"
MOD_RE = re.compile(r"(?<!\w)" + ATTRS + r"(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")


def is_test_cfg(attrs):
    return any(re.search(r"\btest\b", a) for a in re.findall(r"#\[cfg\(([^\]]*)\)\]", attrs))


class Module:
    def __init__(self, path, file, line_of, text):
        self.path = path  # tuple of names; () is the crate root
        self.file = file
        self.line_of = line_of  # offset in text -> line in file
        self.text = text  # stripped code of this module only (children blanked out)
        self.children = {}  # name -> path
        self.reexports = {}  # name -> absolute path tuple of what it re-exports
        self.uses = []  # (absolute path tuple, line, is_pub_use)


def line_counter(text, base_line):
    starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line_of(offset):
        lo, hi = 0, len(starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if starts[mid] <= offset:
                lo = mid
            else:
                hi = mid
        return base_line + lo

    return line_of


def child_file(parent_file, parent_is_dir_owner, name):
    base = os.path.dirname(parent_file)
    if not parent_is_dir_owner:
        base = os.path.join(base, os.path.splitext(os.path.basename(parent_file))[0])
    for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
        if os.path.exists(candidate):
            return candidate
    return None


def load_crate(root_file):
    """Every non-test module of the crate rooted at `root_file`, by module path."""
    modules = {}

    def add(path, file, dir_owner, text, line_of):
        # Inline child modules and test modules are cut out of this module's text first.
        pending = []
        pos = 0
        while True:
            m = MOD_RE.search(text, pos)
            if not m:
                break
            attrs, name, kind = m.group(1), m.group(2), m.group(3)
            if kind == "{":
                end = block_end(text, m.end() - 1)
                if not is_test_cfg(attrs):
                    inner = text[m.end():end - 1]
                    pending.append((name, "inline", inner, m.end()))
                text = blank(text, m.start(), end)
                pos = end
            else:
                if not is_test_cfg(attrs):
                    pending.append((name, "file", None, m.start()))
                text = blank(text, m.start(), m.end())
                pos = m.end()
        module = Module(path, file, line_of, text)
        modules[path] = module
        for name, kind, inner, offset in pending:
            child = path + (name,)
            module.children[name] = child
            if kind == "inline":
                inner_line = line_of(offset)
                # An inline module's children live in a directory named after it.
                add(child, file, False, inner, line_counter(inner, inner_line))
            else:
                f = child_file(file, dir_owner, name)
                if f is None:
                    continue
                with open(f, encoding="utf-8") as fh:
                    code = strip(fh.read())
                add(child, f, os.path.basename(f) == "mod.rs", code, line_counter(code, 1))

    with open(root_file, encoding="utf-8") as fh:
        code = strip(fh.read())
    add((), root_file, True, code, line_counter(code, 1))
    return modules


def expand_use_tree(tree):
    """`a::{b, c::{d@e, self}}` -> [['a','b'], ['a','c','d@e'], ['a','c']]: `@e` is an alias
    (`d as e`, marked by the caller), `self` names the module itself, `*` its items."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, t):
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(t):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(t[start:i])
                start = i + 1
        parts.append(t[start:])
        for part in filter(None, parts):
            brace = part.find("{")
            if brace >= 0:
                head = [s for s in part[:brace].split("::") if s]
                walk(prefix + head, part[brace + 1:part.rfind("}")])
                continue
            segs = [s for s in part.split("::") if s]
            if segs and segs[-1] == "self":
                segs = segs[:-1]
            if segs and segs[-1] == "*":
                segs = segs[:-1]
            out.append(prefix + segs)

    walk([], tree)
    return out


USE_RE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]*);")
AS_RE = re.compile(r"\s+as\s+(" + IDENT + r")")


def resolve_prefix(module, segs):
    """An absolute path for `segs` as written in `module`, or None when it leaves the crate."""
    if not segs:
        return None
    head = segs[0]
    if head == "crate":
        return tuple(segs[1:])
    if head == "self":
        return module.path + tuple(segs[1:])
    if head == "super":
        base = list(module.path)
        i = 0
        while i < len(segs) and segs[i] == "super":
            if not base:
                return None
            base.pop()
            i += 1
        return tuple(base) + tuple(segs[i:])
    if head in module.children:
        return module.path + tuple(segs)
    return None


def collect(modules):
    for module in modules.values():
        text = module.text
        # `use` declarations: expanded, recorded, then blanked so the path scan below does not
        # count them twice.
        for m in USE_RE.finditer(text):
            is_pub = m.group(1) is not None
            raw = AS_RE.sub(lambda a: "@" + a.group(1), m.group(2))
            for segs in expand_use_tree(raw):
                alias = None
                if segs and "@" in segs[-1]:
                    last, alias = segs[-1].split("@", 1)
                    segs = segs[:-1] + [last]
                target = resolve_prefix(module, segs)
                if target is None:
                    continue
                module.uses.append((target, module.line_of(m.start()), is_pub))
                if is_pub and target:
                    module.reexports[alias or target[-1]] = target
        text = USE_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        starts = ["crate", "super", "self"] + list(module.children)
        path_re = re.compile(
            r"(?<![\w:])((?:" + "|".join(map(re.escape, starts)) + r")(?:\s*::\s*" + IDENT + r")+)"
        )
        for m in path_re.finditer(text):
            segs = [s.strip() for s in m.group(1).split("::")]
            target = resolve_prefix(module, segs)
            if target is not None:
                module.uses.append((target, module.line_of(m.start()), False))


def owner(modules, target, seen=None):
    """The module that defines the item at absolute path `target` (following re-exports)."""
    seen = seen or set()
    if target in seen:
        return None
    seen.add(target)
    if target in modules:
        return target
    # The longest prefix that is a module; the next segment is an item of it, or a re-export.
    for cut in range(len(target) - 1, -1, -1):
        prefix = target[:cut]
        if prefix in modules:
            name = target[cut]
            through = modules[prefix].reexports.get(name)
            if through is not None and through != target:
                found = owner(modules, through + target[cut + 1:], seen)
                if found is not None:
                    return found
            return prefix
    return None


def inside(path, ancestor):
    return path[:len(ancestor)] == ancestor


def graph(modules):
    edges = {}  # (a, b) -> (file, line)
    for module in modules.values():
        for target, line, is_pub in module.uses:
            b = owner(modules, target)
            if b is None or b == module.path:
                continue
            if is_pub and inside(b, module.path):
                continue  # declaring/re-exporting a child is not using it
            edges.setdefault((module.path, b), (module.file, line))
    return edges


def cycles(nodes, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(succ.get(v, [])):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def one_cycle(comp, edges):
    """A shortest cycle through the first module of the component."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for a, b in sorted(edges):
            if a != v or b not in members:
                continue
            if b == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if b not in prev:
                prev[b] = v
                queue.append(b)
    return comp + [start]


def name(path):
    return "crate" if not path else "::".join(path)


def check(repo, crate_dir):
    src = os.path.join(repo, crate_dir, "src")
    roots = [os.path.join(src, "lib.rs")] if os.path.exists(os.path.join(src, "lib.rs")) else []
    bins = os.path.join(src, "bin")
    if os.path.isdir(bins):
        roots += sorted(os.path.join(bins, f) for f in os.listdir(bins) if f.endswith(".rs"))
    if os.path.exists(os.path.join(src, "main.rs")):
        roots.append(os.path.join(src, "main.rs"))
    failed = False
    for root in roots:
        modules = load_crate(root)
        collect(modules)
        edges = graph(modules)
        for comp in cycles(modules.keys(), edges):
            path = one_cycle(comp, edges)
            print(f"error: module cycle in {os.path.relpath(root, repo)}: "
                  + " -> ".join(name(p) for p in path))
            for a, b in zip(path, path[1:]):
                file, line = edges[(a, b)]
                print(f"    {name(a)} uses {name(b)} at {os.path.relpath(file, repo)}:{line}")
            if len(comp) > len(path) - 1:
                print("    (also in this tangle: "
                      + ", ".join(name(p) for p in comp if p not in path) + ")")
            failed = True
        print(f"{os.path.relpath(root, repo)}: {len(modules)} modules, {len(edges)} edges")
    return not failed


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    crates = sys.argv[1:] or CRATES
    ok = all([check(repo, c) for c in crates])
    if not ok:
        print("module cycles found: move the shared items into a module both sides use")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
