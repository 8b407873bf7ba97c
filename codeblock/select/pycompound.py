"""Compound statements of a Python code block as control flow (a mixin of pyflow.FlowBuilder).

if/elif/else; for and while with their `else` clauses (the body may run zero times, the body feeds
the loop head again, `else` runs when the loop ends without `break`; `while True:` leaves only by
`break`); with; try/except/else/finally (an exception may leave the try body after any of its
statements, so each handler sees every state of the body; the finally clause is built twice: once
after the normal paths, once for return/break/continue/raise passing through it, which then go on
to where they were going); match/case (value patterns are
read while testing, captures bind only when the case matches, a guard may fail); comprehensions
(a scope of their own holding nested loops: `if` clauses skip to the next item).
"""

from __future__ import annotations

from codeblock.select.pyscope import LEAVES


class CompoundStatements:
    """The control-flow shapes; FlowBuilder supplies the blocks, events and expressions."""

    def if_(self, n) -> None:
        self.expr(n.child_by_field_name("condition"))
        test, ends = self.cur, []
        self.cur = self.new_block()
        self.edge(test, self.cur)
        self.body(n.child_by_field_name("consequence"))
        ends.append(self.cur)
        for alt in n.children_by_field_name("alternative"):
            self.cur = self.new_block()
            self.edge(test, self.cur)
            if alt.type == "elif_clause":
                self.expr(alt.child_by_field_name("condition"))
                test = self.cur
                self.cur = self.new_block()
                self.edge(test, self.cur)
                self.body(alt.child_by_field_name("consequence"))
            else:
                self.body(alt.child_by_field_name("body"))
                test = -1  # an else clause: no path skips every branch
            ends.append(self.cur)
        ends.append(test)
        self.join(ends)

    def loop(self, head: int, body_node, alt, exits: bool) -> None:
        """Body from the current block, back to `head`; `else` clause on the exhausted path."""
        after = self.new_block()
        self.ctx.append(("loop", head, after))
        self.body(body_node)
        self.ctx.pop()
        self.edge(self.cur, head)
        if exits:
            self.cur = self.new_block()
            self.edge(head, self.cur)
            if alt is not None:
                self.body(alt.child_by_field_name("body"))
            self.edge(self.cur, after)
        self.cur = after

    def for_(self, n) -> None:
        self.expr(n.child_by_field_name("right"))
        head = self.follow()
        self.follow()
        self.target(n.child_by_field_name("left"))
        self.loop(head, n.child_by_field_name("body"), n.child_by_field_name("alternative"), True)

    def while_(self, n) -> None:
        head = self.follow()
        cond = n.child_by_field_name("condition")
        self.expr(cond)
        self.follow()
        self.loop(head, n.child_by_field_name("body"), n.child_by_field_name("alternative"),
                  cond is None or cond.type != "true")

    def with_(self, n) -> None:
        for clause in n.named_children:
            if clause.type != "with_clause":
                continue
            for item in clause.named_children:
                value = item.child_by_field_name("value") if item.type == "with_item" else item
                if value is not None and value.type == "as_pattern":
                    kids = value.named_children
                    self.expr(kids[0] if kids else None)
                    alias = value.child_by_field_name("alias")
                    if alias is not None:
                        self.target(alias)
                else:
                    self.expr(value)
        self.body(n.child_by_field_name("body"))

    def try_(self, n) -> None:  # noqa: C901
        kids = n.named_children
        handlers = [c for c in kids if c.type in ("except_clause", "except_group_clause")]
        orelse = next((c for c in kids if c.type == "else_clause"), None)
        final = next((c for c in kids if c.type == "finally_clause"), None)
        fin = None
        if final is not None:
            fin = ["finally", self.new_block(), set()]
            self.ctx.append(fin)
            self.n_exc += 1
        dispatch = self.new_block() if handlers else -1
        if handlers:
            self.ctx.append(("try", dispatch))
            self.n_exc += 1
        self.route("raise")  # the first statement may raise before anything is bound
        self.follow()
        self.body(n.child_by_field_name("body"))
        if handlers:
            self.ctx.pop()
            self.n_exc -= 1
        if orelse is not None:
            self.body(orelse.child_by_field_name("body"))
        ends = [self.cur]
        if handlers:
            self.cur = dispatch
            for h in handlers:
                value = h.child_by_field_name("value")
                block = next((c for c in h.named_children if c.type == "block"), None)
                if value is None:  # bare `except:` catches everything
                    self.follow()
                    self.body(block)
                    ends.append(self.cur)
                    self.cur = -1
                    break
                alias = None
                if value.type == "as_pattern":
                    alias = value.child_by_field_name("alias")
                    value = value.named_children[0] if value.named_children else None
                self.expr(value)
                test = self.cur
                self.follow()
                if alias is not None:
                    self.target(alias)
                self.body(block)
                ends.append(self.cur)
                self.cur = self.new_block()
                self.edge(test, self.cur)
            if self.cur >= 0:  # no handler matched: the exception goes on
                self.route("raise")
        if fin is None:
            self.join(ends)
            return
        self.ctx.pop()
        self.n_exc -= 1
        block = next((c for c in final.named_children if c.type == "block"), None)
        if self.fin_copies < 3:  # the clause twice: after the normal paths, and for the exits through it
            self.fin_copies += 1
            self.join(ends)
            if self.cur >= 0:
                self.body(block)
            normal = self.cur
            self.cur = fin[1]
            self.body(block)
            self.fin_copies -= 1
        else:  # deeply nested finally clauses: one copy that every path goes through (a coarser graph)
            for e in ends:
                self.edge(e, fin[1])
            self.cur = fin[1]
            self.body(block)
            normal = self.cur if any(e >= 0 for e in ends) else -1
        end = self.cur
        for kind in sorted(fin[2]):  # exits that ran the finally clause go on to their targets
            self.cur = end
            self.route(kind)
        self.cur = normal

    def match_(self, n) -> None:
        for s in n.children_by_field_name("subject"):
            self.expr(s)
        body = n.child_by_field_name("body")
        cases = [c for c in (body.named_children if body is not None else []) if c.type == "case_clause"]
        test, ends = self.cur, []
        for case in cases:
            self.cur = self.new_block()
            self.edge(test, self.cur)
            caps: list = []
            pats = [c for c in case.named_children if c.type == "case_pattern"]
            for p in pats:
                self.pattern(p, caps)  # value patterns are read while testing
            fail = self.cur
            self.follow()
            for c in caps:
                self.define(c)
            guard = case.child_by_field_name("guard")
            if guard is not None:
                self.body_exprs(guard)
                gfail = self.cur
                self.follow()
            self.body(case.child_by_field_name("consequence"))
            ends.append(self.cur)
            test = self.new_block()
            irrefutable = guard is None and len(pats) == 1 and (
                pats[0].named_child_count == 0 or (
                    pats[0].named_child_count == 1 and pats[0].named_children[0].type == "dotted_name"
                    and pats[0].named_children[0].named_child_count == 1))
            if not irrefutable:
                self.edge(fail, test)
            if guard is not None:
                self.edge(gfail, test)
        ends.append(test)
        self.join(ends)

    def pattern(self, node, caps: list) -> None:
        """Uses of the value parts of a case pattern; its capture names go to `caps`."""
        stack = [node]
        while stack:
            n = stack.pop()
            t = n.type
            if t == "dotted_name":
                ids = [c for c in n.named_children if c.type == "identifier"]
                if len(ids) == 1 and ids[0].text != b"_":
                    caps.append(ids[0])
                elif len(ids) > 1:
                    self.use(ids[0])  # Color.RED: a value pattern
            elif t == "identifier":
                if n.text != b"_":
                    caps.append(n)
            elif t == "class_pattern":
                kids = n.named_children
                if kids and kids[0].type == "dotted_name":
                    ids = [c for c in kids[0].named_children if c.type == "identifier"]
                    if ids:
                        self.use(ids[0])
                    kids = kids[1:]
                stack.extend(reversed(kids))
            elif t == "keyword_pattern":
                stack.extend(reversed(n.named_children[1:]))  # the first identifier is the keyword
            elif t not in LEAVES and t != "string":
                stack.extend(reversed(n.named_children))

    # ---- scopes -------------------------------------------------------------------------------

    def comprehension(self, n) -> None:
        kids = [c for c in n.named_children if c.type != "comment"]
        clauses = [c for c in kids if c.type in ("for_in_clause", "if_clause")]
        element = [c for c in kids if c.type not in ("for_in_clause", "if_clause")]
        if not clauses or clauses[0].type != "for_in_clause":
            self.body_exprs(n)
            return
        for r in clauses[0].children_by_field_name("right"):  # evaluated in the enclosing scope
            self.expr(r)
        saved = self.open_scope("comprehension", n)
        heads: list[int] = []
        for c in clauses:
            if c.type == "for_in_clause":
                if heads:
                    for r in c.children_by_field_name("right"):
                        self.expr(r)
                head = self.follow()
                if heads:
                    self.edge(head, heads[-1])  # inner loop exhausted: next outer item
                heads.append(head)
                self.follow()
                self.target(c.child_by_field_name("left"))
            else:
                self.body_exprs(c)
                self.edge(self.cur, heads[-1])  # filtered out: next item
                self.follow()
        for e in element:
            self.expr(e)
        self.edge(self.cur, heads[-1])
        self.close_scope(saved)
