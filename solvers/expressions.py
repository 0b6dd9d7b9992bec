"""Safe evaluation of the user's function expressions (``bilo solve heat --function f=EXPR``).

An expression is a numpy formula in ``x`` such as ``where(x < 0.5, 2*x, 2 - 2*x)`` or
``grf(x, seed=1, length_scale=0.15, variance=0.5)``. Nothing here calls eval, exec or compile:
the text is parsed with :func:`ast.parse` and the tree is checked and turned into a small tree of
closures that can only do what this module allows:

* numbers (int or float literals, always converted to float64), the name ``x``, ``pi`` and ``e``;
* unary ``+ -``, binary ``+ - * / ** %``, comparisons ``< <= > >= == !=`` (chains allowed; they
  give 1.0 or 0.0, for use in ``where``);
* calls of the functions in :data:`FUNCTIONS` by name, with positional arguments only, except
  ``grf`` which also takes its keyword arguments (:data:`GRF_BOUNDS`), fixed numbers checked when
  the expression is parsed.

Anything else (attributes, subscripts, lambdas, comprehensions, strings, ``and``/``or``, ...) is
rejected with an :class:`~solvers.common.InputError` naming the construct. Size limits
(:data:`MAX_LENGTH`, :data:`MAX_NODES`, :data:`MAX_DEPTH`, :data:`MAX_GRF_CALLS`) keep parsing and
evaluation fast and bounded in memory; all arithmetic is numpy float64 with floating-point errors
ignored, so an overflow such as ``9**9**9`` gives inf, which is then rejected as not finite.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import numpy as np

from solvers.common import InputError
from solvers.grf import grf

__all__ = [
    "CONSTANTS",
    "FUNCTIONS",
    "GRF_BOUNDS",
    "MAX_DEPTH",
    "MAX_GRF_CALLS",
    "MAX_LENGTH",
    "MAX_NODES",
    "parse_function",
]

MAX_LENGTH = 1000  # characters in the expression
MAX_NODES = 200  # AST nodes (numbers, names, operations, calls, keyword arguments)
MAX_DEPTH = 32  # nesting of brackets, and of operations in the tree (a chain a + b - c is flat)
MAX_GRF_CALLS = 4  # each grf() call costs an eigendecomposition of a 1001 x 1001 covariance

CONSTANTS: dict[str, float] = {"pi": np.pi, "e": np.e}

# name -> (function, number of positional arguments it takes: (min, max))
FUNCTIONS: dict[str, tuple[Callable, tuple[int, int]]] = {
    **{name: (getattr(np, name), (1, 1)) for name in (
        "sin", "cos", "tan", "exp", "log", "sqrt", "abs", "tanh", "sinh", "cosh", "arctan")},
    "where": (np.where, (3, 3)),
    "minimum": (np.minimum, (2, 2)),
    "maximum": (np.maximum, (2, 2)),
    "clip": (np.clip, (3, 3)),
    "heaviside": (np.heaviside, (2, 2)),
    "grf": (grf, (1, 7)),  # x, then grf's parameters in the order of GRF_BOUNDS
}

# grf's parameters after x, in signature order: (lowest, highest) allowed value, both inclusive.
# The canonical grid has spacing 0.001, so shorter length scales are white noise at best (and
# length_scale -> 0 divides by zero); very long ones make the boundary conditioning singular.
GRF_BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**53),  # an integer
    "length_scale": (0.01, 10.0),
    "variance": (1e-12, 1e6),
    "mean": (-1e6, 1e6),
    "left": (-1e6, 1e6),
    "right": (-1e6, 1e6),
}

_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply,
           ast.Div: np.true_divide, ast.Pow: np.power, ast.Mod: np.remainder}
_UNARY = {ast.UAdd: np.positive, ast.USub: np.negative}
_COMPARE = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater,
            ast.GtE: np.greater_equal, ast.Eq: np.equal, ast.NotEq: np.not_equal}
_OPERATOR_TEXT = {ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
                  ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not",
                  ast.Invert: "~", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
                  ast.NotIn: "not in"}
_CONSTRUCTS = {
    ast.Attribute: "attribute access (.NAME)",
    ast.Call: "the result of a call",
    ast.Subscript: "subscripts ([...])",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Starred: "starred arguments (*)",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.BoolOp: "'and'/'or' (use where(...))",
    ast.IfExp: "conditional expressions (use where(condition, a, b))",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Slice: "slices",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}
# nodes that are not counted towards MAX_NODES: load contexts and operator tokens
_UNCOUNTED = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)

_Evaluator = Callable[[np.ndarray], np.ndarray]


class _Rejected(Exception):
    """Raised inside this module with the part of the message after ``--function NAME=EXPR:``."""


def _construct(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        kind = {str: "strings", bytes: "bytes", bool: "True/False", complex: "complex numbers",
                type(None): "None", type(...): "'...'"}.get(type(node.value))
        return kind or f"constants of type {type(node.value).__name__}"
    return _CONSTRUCTS.get(type(node), type(node).__name__)


def _operator(op: ast.AST) -> str:
    return _OPERATOR_TEXT.get(type(op), type(op).__name__)


def _check_size(text: str, tree: ast.Expression | None = None) -> None:
    """Without a tree: the length and bracket nesting of the text (so that the parser is never
    handed something huge or deep). With one: its node count and nesting depth, walked without
    recursion, so that the recursive compilation and evaluation below stay within a few times
    MAX_DEPTH frames. Left-leaning chains of binary operations are handled by loops there, so
    they count as one level here."""
    if tree is None:
        if len(text) > MAX_LENGTH:
            raise _Rejected(f"longer than {MAX_LENGTH} characters ({len(text)})")
        depth = 0
        for char in text:
            depth += (char in "([{") - (char in ")]}")
            if depth > MAX_DEPTH:
                raise _Rejected(f"brackets nested more than {MAX_DEPTH} deep")
        return
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, _UNCOUNTED):
            continue
        count += 1
        if count > MAX_NODES:
            raise _Rejected(f"more than {MAX_NODES} terms and operations")
        if depth > MAX_DEPTH:
            raise _Rejected(f"operations nested more than {MAX_DEPTH} deep")
        for child in ast.iter_child_nodes(node):
            # the left operand of a binary operation continues a chain (see _Compiler._binary)
            spine = isinstance(node, ast.BinOp) and child is node.left
            stack.append((child, depth if spine and isinstance(child, ast.BinOp) else depth + 1))


def _mentions_x(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "x" for n in ast.walk(node))


class _Compiler:
    """Turns a size-checked tree into nested closures of x, rejecting what is not allowed."""

    def __init__(self) -> None:
        self.grf_calls = 0

    def build(self, node: ast.AST) -> _Evaluator:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise _Rejected(f"{_construct(node)} not allowed")

    def _constant(self, node: ast.Constant) -> _Evaluator:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Rejected(f"{_construct(node)} not allowed; only numbers")
        try:
            number = np.float64(float(value))  # an int literal never takes part in int arithmetic
        except OverflowError:
            number = np.float64(np.inf)
        if not np.isfinite(number):
            raise _Rejected(f"number {_short(ast.unparse(node), 20)} is too large")
        return lambda x: number

    def _name(self, node: ast.Name) -> _Evaluator:
        if node.id == "x":
            return lambda x: x
        if node.id in CONSTANTS:
            number = np.float64(CONSTANTS[node.id])
            return lambda x: number
        if node.id in FUNCTIONS:
            raise _Rejected(f"{node.id} is a function; call it, e.g. {node.id}(x)")
        raise _Rejected(f"unknown name {node.id!r}; use x, pi, e and the functions "
                        f"{', '.join(FUNCTIONS)}")

    def _unary(self, node: ast.UnaryOp) -> _Evaluator:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise _Rejected(f"operator '{_operator(node.op)}' not allowed")
        operand = self.build(node.operand)
        return lambda x: op(operand(x))

    def _binary(self, node: ast.BinOp) -> _Evaluator:
        """A chain ``a + b - c * d`` is a tree leaning left, ((a + b) - (c * d)): its left spine
        is walked in a loop, not by recursion, so long sums only count once towards MAX_DEPTH."""
        chain: list[tuple[Callable, ast.expr]] = []
        left: ast.expr = node
        while isinstance(left, ast.BinOp):
            op = _BINARY.get(type(left.op))
            if op is None:
                raise _Rejected(f"operator '{_operator(left.op)}' not allowed")
            chain.append((op, left.right))
            left = left.left
        first = self.build(left)
        steps = [(op, self.build(right)) for op, right in reversed(chain)]

        def binary(x: np.ndarray) -> np.ndarray:
            value = first(x)
            for op, right in steps:
                value = op(value, right(x))
            return value

        return binary

    def _compare(self, node: ast.Compare) -> _Evaluator:
        ops = []
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise _Rejected(f"comparison '{_operator(op)}' not allowed")
            ops.append(_COMPARE[type(op)])
        terms = [self.build(term) for term in (node.left, *node.comparators)]

        def compare(x: np.ndarray) -> np.ndarray:
            values = [term(x) for term in terms]
            result = np.ones((), dtype=bool)
            for op, a, b in zip(ops, values[:-1], values[1:], strict=True):
                result = np.logical_and(result, op(a, b))
            return np.asarray(result, dtype=np.float64)

        return compare

    def _call(self, node: ast.Call) -> _Evaluator:
        func = node.func
        if not isinstance(func, ast.Name):
            raise _Rejected(f"calling {_construct(func)} not allowed; only functions by name")
        if func.id not in FUNCTIONS:
            if func.id == "x" or func.id in CONSTANTS:
                raise _Rejected(f"{func.id} is not a function")
            raise _Rejected(f"unknown function {func.id!r}; the functions are "
                            f"{', '.join(FUNCTIONS)}")
        function, (least, most) = FUNCTIONS[func.id]
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise _Rejected(f"{_construct(arg)} not allowed")
        if not least <= len(node.args) <= most:
            wanted = str(least) if least == most else f"{least} to {most}"
            raise _Rejected(f"{func.id} takes {wanted} positional argument(s), "
                            f"got {len(node.args)}")
        if func.id == "grf":
            return self._grf(node)
        if node.keywords:
            raise _Rejected(f"{func.id} takes no keyword arguments")
        args = [self.build(arg) for arg in node.args]
        return lambda x: function(*(arg(x) for arg in args))

    def _grf(self, node: ast.Call) -> _Evaluator:
        """grf(x_expression, ...): the parameters must be fixed numbers within GRF_BOUNDS; they are
        evaluated now, so that a bad one is reported when the expression is parsed."""
        self.grf_calls += 1
        if self.grf_calls > MAX_GRF_CALLS:
            raise _Rejected(f"more than {MAX_GRF_CALLS} grf() calls")
        names = list(GRF_BOUNDS)
        given = dict(zip(names, node.args[1:], strict=False))
        for keyword in node.keywords:
            if keyword.arg is None:
                raise _Rejected("'**' arguments not allowed")
            if keyword.arg not in GRF_BOUNDS:
                raise _Rejected(f"grf has no parameter {keyword.arg!r}; its parameters: "
                                f"{', '.join(names)}")
            if keyword.arg in given:
                raise _Rejected(f"grf parameter {keyword.arg} given twice")
            given[keyword.arg] = keyword.value
        params = {name: self._grf_parameter(name, value) for name, value in given.items()}
        field_x = self.build(node.args[0])
        return lambda x: grf(field_x(x), **params)

    def _grf_parameter(self, name: str, node: ast.expr) -> int | float:
        if _mentions_x(node):
            raise _Rejected(f"grf parameter {name} must be a number, not depend on x")
        with np.errstate(all="ignore"):
            value = np.asarray(self.build(node)(None))
        if value.shape != () or not np.isfinite(value):
            raise _Rejected(f"grf parameter {name} must be a finite number")
        lowest, highest = GRF_BOUNDS[name]
        if not lowest <= value <= highest:
            raise _Rejected(f"grf parameter {name}={float(value):g} is outside "
                            f"[{lowest:g}, {highest:g}]")
        if name == "seed":
            if value != math.floor(value):
                raise _Rejected(f"grf parameter seed must be an integer, got {float(value):g}")
            return int(value)
        return float(value)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def parse_function(name: str, expression: str) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a numpy expression in `x` (e.g. ``where(x < 0.5, 2*x, 2 - 2*x)``) into a function.
    ``grf(x, seed=1, length_scale=0.2, variance=0.05)`` is a seeded Gaussian random field.

    The function returns float64 values with the shape of x. A disallowed, malformed or too large
    expression raises :class:`InputError` here; values that are not finite raise it when the
    function is called. Each message is one line starting with ``--function NAME=EXPR:``."""
    if not isinstance(expression, str):
        raise InputError(f"--function {name}=...: the expression must be a string, "
                         f"not {type(expression).__name__}")
    prefix = f"--function {name}={_short(expression)!r}"
    try:
        _check_size(expression)
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError as exc:
            raise _Rejected(f"not a valid expression ({exc.msg})") from None
        except (RecursionError, MemoryError, ValueError):
            raise _Rejected("not a valid expression (too complex, or invalid characters)") \
                from None
        _check_size(expression, tree)
        evaluator = _Compiler().build(tree.body)
    except _Rejected as exc:
        raise InputError(f"{prefix}: {exc}") from None

    def evaluate(x: np.ndarray) -> np.ndarray:
        points = np.asarray(x, dtype=np.float64)
        try:
            with np.errstate(all="ignore"):
                values = evaluator(points)
            values = np.broadcast_to(np.asarray(values, dtype=np.float64), points.shape).copy()
        except (ValueError, TypeError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{prefix}: cannot be evaluated ({message})") from None
        finite = np.isfinite(values)
        if not np.all(finite):
            bad = np.flatnonzero(~finite)[0]
            at = np.broadcast_to(points, finite.shape).flat[bad]
            raise InputError(f"{prefix}: not finite ({values.flat[bad]} at x = {at:g})")
        return values

    evaluate.description = expression
    return evaluate
