"""Reaching definitions over the scope graphs of pyflow.py, and the (definition, use) pairs they give.

Per scope, the classic forward analysis on bit sets (one bit per definition, plus one ENTRY bit per
name for "the value the name had when the scope started"): OUT(b) = GEN(b) | (IN(b) & ~KILL(b)),
IN(b) = union of OUT(p) over the predecessors p, iterated to the fixed point. A MUST definition kills
the other definitions of its name; a MAY one kills nothing.

Which variable a name means is decided by scope (Python's rules), never by source order:
    a name bound anywhere in a function / lambda / comprehension / class body is local to it,
    unless declared `global` (-> the module) or `nonlocal` (-> the nearest enclosing function that
    binds it, wherever in that function the binding is); any other name is looked up in the
    enclosing scopes, skipping class bodies; the module owns whatever nothing else does.

Across scopes (the rule for closures and calls):
  * A use that the ENTRY bit reaches reads the value from outside: the definitions of that
    variable in the enclosing scope that reach the point where the nested scope is created. For a
    function or lambda (its body runs when it is called, at any later time) also every definition
    of the variable made anywhere after that point (a call may come after any of them).
    Class bodies and comprehensions run where they stand: only the definitions reaching that point.
  * A write to an outer variable from a nested scope (`global`, `nonlocal`, a walrus inside a
    comprehension) counts in the owning scope at the point where the nested scope is created:
    from a function it is a definition that is never killed (the function may be called after any
    later assignment); from a comprehension or class body a MAY definition.
  * A read of a local name before any binding of it (ENTRY reaches a function's own local) gives
    no pair; a class body that reads a name before binding it reads the enclosing scopes.
"""

from __future__ import annotations

from codeblock.select.pyscope import CHILD, DEF, MUST, USE, Scope


class Reaching:
    """Solves every scope of a built module and collects (def_id, use_id) pairs."""

    def __init__(self, module: Scope):
        self.module = module
        self._owner: dict = {}
        self._ext: dict = {}
        self.pairs: list[tuple[int, int]] = []

    def run(self) -> list[tuple[int, int]]:
        self._own(self.module)
        self._exports(self.module)
        self._solve_all(self.module)
        return self.pairs

    # ---- scope resolution ---------------------------------------------------------------------
    def _own(self, s: Scope) -> None:
        s.owned = s.bound - s.globals_ - s.nonlocals
        for c in s.children:
            self._own(c)

    def owner(self, s: Scope, name: str) -> Scope:
        key = (s, name)
        o = self._owner.get(key)
        if o is None:
            o = self._owner[key] = self._find_owner(s, name)
        return o

    def _find_owner(self, s: Scope, name: str) -> Scope:
        while s.parent is not None:
            if name in s.globals_:
                return self.module
            if name in s.nonlocals:
                p = s.parent
                while p.parent is not None and not (
                        p.kind in ("function", "lambda") and (name in p.owned or name in p.nonlocals)):
                    p = p.parent
                s = p
                continue
            if name in s.owned:
                return s
            s = s.parent
            while s.kind == "class":
                s = s.parent
        return s

    def _exports(self, s: Scope) -> None:
        """Writes made in `s` (or below it) to variables owned above it: (owner, name, def_id, later)."""
        for c in s.children:
            self._exports(c)
        out, owned, top = [], s.owned, s.parent is None
        for block in s.blocks:
            for e in block:
                if e[0] == DEF:
                    if top or e[1] in owned:
                        continue
                    o = self.owner(s, e[1])
                    if o is not s:
                        out.append((o, e[1], e[2], s.deferred))
                elif e[0] == CHILD:
                    out.extend((o, name, d, later or s.deferred) for o, name, d, later in e[1].exports if o is not s)
        s.exports = out

    # ---- per-scope solution -------------------------------------------------------------------
    def _solve_all(self, s: Scope) -> None:
        if s.children or len(s.blocks) > 1:
            self._solve(s)
            for c in s.children:
                self._solve_all(c)
        else:
            self._solve_line(s)

    def _solve_line(self, s: Scope) -> None:
        """A scope of one block with no nested scope (most of them): one pass, no bit sets."""
        cur: dict[str, list[int]] = {}  # name -> its reaching definitions (-1: the value from outside)
        pairs = self.pairs
        for e in s.blocks[0]:
            if e[0] == USE:
                for d in cur.get(e[1], (-1,)):
                    if d >= 0:
                        pairs.append((d, e[2]))
                    else:
                        pairs.extend((x, e[2]) for x in self.external(s, e[1]))
            elif e[3] == MUST:
                cur[e[1]] = [e[2]]
            else:
                cur[e[1]] = [*cur.get(e[1], (-1,)), e[2]]

    def _solve(self, s: Scope) -> None:  # noqa: C901 - compile / fixpoint / replay share their state
        bit_def: list[int] = []  # bit -> def id, -1 for a name's ENTRY bit
        mask: dict[str, int] = {}  # name -> all its bits
        kmask: dict[str, int] = {}  # name -> the bits a MUST definition kills (never-killed ones left out)
        entry = 0
        compiled, gen, killed = [], [], []
        owner = self.owner
        for block in s.blocks:
            ops, g, kn = [], 0, set()
            for e in block:
                kind = e[0]
                if kind == CHILD:
                    gens = 0
                    for o, name, d, later in e[1].exports:
                        if owner(s, name) is not o:
                            continue
                        if name not in mask:
                            bit = 1 << len(bit_def)
                            bit_def.append(-1)
                            mask[name] = kmask[name] = bit
                            entry |= bit
                        bit = 1 << len(bit_def)
                        bit_def.append(d)
                        mask[name] |= bit
                        if not later:
                            kmask[name] |= bit
                        gens |= bit
                    g |= gens
                    ops.append((CHILD, e[1], gens))
                    continue
                name = e[1]
                if name not in mask:
                    bit = 1 << len(bit_def)
                    bit_def.append(-1)
                    mask[name] = kmask[name] = bit
                    entry |= bit
                if kind == USE:
                    ops.append(e)
                    continue
                bit = 1 << len(bit_def)
                bit_def.append(e[2])
                mask[name] |= bit
                kmask[name] |= bit
                if e[3] == MUST:  # bits given later in the scan cannot be in g yet: the partial kmask will do
                    g = (g & ~kmask[name]) | bit
                    kn.add(name)
                else:
                    g |= bit
                ops.append((DEF, name, bit, e[3]))
            compiled.append(ops)
            gen.append(g)
            killed.append(kn)
        nb = len(compiled)
        IN = [0] * nb
        IN[0] = entry
        if nb > 1:
            kill = [sum(kmask[x] for x in kn) if kn else 0 for kn in killed]  # name masks are disjoint
            succ = s.succ
            preds: list[list[int]] = [[] for _ in range(nb)]
            for a, ss in enumerate(succ):
                for b in ss:
                    preds[b].append(a)
            OUT = [0] * nb
            order = _reverse_postorder(succ, nb)
            changed = True
            while changed:
                changed = False
                for b in order:
                    i = entry if b == 0 else 0
                    for p in preds[b]:
                        i |= OUT[p]
                    IN[b] = i
                    o = gen[b] | (i & ~kill[b])
                    if o != OUT[b]:
                        OUT[b] = o
                        changed = True
        s.solved = (bit_def, mask, compiled, gen, None)
        pairs = self.pairs
        for b, ops in enumerate(compiled):
            st = IN[b]
            for idx, op in enumerate(ops):
                kind = op[0]
                if kind == USE:
                    bits = st & mask[op[1]]
                    while bits:
                        low = bits & -bits
                        bits ^= low
                        d = bit_def[low.bit_length() - 1]
                        if d >= 0:
                            pairs.append((d, op[2]))
                        else:
                            pairs.extend((x, op[2]) for x in self.external(s, op[1]))
                elif kind == DEF:
                    st = (st & ~kmask[op[1]]) | op[2] if op[3] == MUST else st | op[2]
                else:
                    child = op[1]
                    child.pstate, child.pblock, child.pindex = st, b, idx
                    st |= op[2]

    def _future(self, p: Scope, holder: Scope) -> int:
        """Bits of `p` defined at or after the point where `holder` is created, on any later path."""
        bit_def, mask, compiled, gen, fut = p.solved
        if fut is None:  # FUT(b) = everything b defines | FUT of its successors (backward, to the fixed point)
            nb = len(compiled)
            every = [0] * nb
            for b, ops in enumerate(compiled):
                for op in ops:
                    if op[0] != USE:
                        every[b] |= op[2]
            fut = list(every)
            changed = True
            while changed:
                changed = False
                for b in range(nb - 1, -1, -1):
                    f = every[b]
                    for c in p.succ[b]:
                        f |= fut[c]
                    if f != fut[b]:
                        fut[b] = f
                        changed = True
            p.solved = (bit_def, mask, compiled, gen, fut)
        out = 0
        for op in compiled[holder.pblock][holder.pindex:]:
            if op[0] != USE:
                out |= op[2]
        for c in p.succ[holder.pblock]:
            out |= fut[c]
        return out

    def external(self, s: Scope, name: str) -> list[int]:
        """Definitions of `name` that reach the entry of `s` from the enclosing scopes."""
        key = (s, name)
        got = self._ext.get(key)
        if got is not None:
            return got
        out: list[int] = []
        self._ext[key] = out
        o = self.owner(s, name)
        if o is s:
            if s.kind != "class":
                return out  # a local read before any binding, or a builtin / unknown module name
            p = s.parent
            while p.kind == "class":
                p = p.parent
            o = self.owner(p, name)
        holder, p, later = s, s.parent, s.deferred
        while p is not None:
            m = p.solved[1].get(name) if p.kind != "class" and self.owner(p, name) is o else None
            if m is not None:
                bits = holder.pstate & m
                if later:
                    bits |= self._future(p, holder) & m
                bit_def, hit_entry = p.solved[0], False
                while bits:
                    low = bits & -bits
                    bits ^= low
                    d = bit_def[low.bit_length() - 1]
                    if d >= 0:
                        out.append(d)
                    else:
                        hit_entry = True
                if not hit_entry:
                    break
            if p is o:
                break
            later = later or p.deferred
            holder, p = p, p.parent
        return out


def _reverse_postorder(succ: list[list[int]], nb: int) -> list[int]:
    """Blocks in reverse postorder from the entry (then any unreachable ones): few fixpoint passes."""
    seen = [False] * nb
    post: list[int] = []
    seen[0] = True
    stack = [(0, iter(succ[0]))]
    while stack:
        b, it = stack[-1]
        for c in it:
            if not seen[c]:
                seen[c] = True
                stack.append((c, iter(succ[c])))
                break
        else:
            stack.pop()
            post.append(b)
    post.reverse()
    post.extend(b for b in range(nb) if not seen[b])
    return post
