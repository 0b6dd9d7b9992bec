"""`solvers.expressions.parse_function`: the user's `--function NAME=EXPR` is evaluated by a small
AST interpreter, never by eval. The documented expressions keep their values; code execution,
huge numbers and oversized or deeply nested input are rejected with one-line InputErrors."""

import ast
import inspect
import time
from pathlib import Path

import numpy as np
import pytest

from solvers import expressions
from solvers.exchange import InputError
from solvers.expressions import (
    GRF_BOUNDS,
    MAX_DEPTH,
    MAX_GRF_CALLS,
    MAX_LENGTH,
    MAX_NODES,
    parse_function,
)
from solvers.grf import grf

X = np.linspace(0.0, 1.0, 101)

EXPLOIT = ("(lambda: [c for c in ().__class__.__base__.__subclasses__() "
           "if c.__name__ == '_wrap_close'][0].__init__.__globals__['system']"
           "('id > pwned.txt'))() * 0 + sin(pi*x)")


def rejected(expression: str, x: np.ndarray = X, *, at_parse: bool = False) -> str:
    """Parse and evaluate `expression` (only parse it with `at_parse`); it must raise InputError
    with a one-line message that starts with the option it came from. Returns the message."""
    with pytest.raises(InputError) as info:
        function = parse_function("f", expression)
        if not at_parse:
            function(x)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--function f=")
    return message


@pytest.mark.parametrize(("expression", "expected"), [
    ("sin(pi*x)", np.sin(np.pi * X)),
    ("where(x < 0.5, 2*x, 2 - 2*x)", np.where(X < 0.5, 2 * X, 2 - 2 * X)),
    ("1 + 0.5*sin(pi*x)", 1 + 0.5 * np.sin(np.pi * X)),
    ("pi**2*sin(pi*x)", np.pi**2 * np.sin(np.pi * X)),
    ("where(x < 0.5, 1 + 0.5*x, 1.5 - 0.5*x)", np.where(X < 0.5, 1 + 0.5 * X, 1.5 - 0.5 * X)),
])
def test_readme_expressions_give_the_numpy_values(expression, expected):
    """The expressions in the README and docs evaluate to what numpy gives for the same formula,
    as float64 with the shape of x, and the callable carries the expression as its description
    (run_reference records it for callables)."""
    f = parse_function("f", expression)
    values = f(X)
    assert values.dtype == np.float64 and values.shape == X.shape
    np.testing.assert_allclose(values, expected, rtol=1e-15, atol=1e-15)
    assert f.description == expression


def test_grf_expression_equals_calling_grf():
    """grf with keyword parameters (the Burgers initial condition) is exactly grf itself; grf's
    parameters may also be given positionally, in its signature's order."""
    expected = grf(X, seed=1, length_scale=0.15, variance=0.5)
    np.testing.assert_array_equal(
        parse_function("f", "grf(x, seed=1, length_scale=0.15, variance=0.5)")(X), expected)
    np.testing.assert_array_equal(parse_function("f", "grf(x, 1, 0.15, 0.5)")(X), expected)


def test_grf_parameters_match_its_signature():
    """GRF_BOUNDS lists grf's parameters after x in signature order (positional arguments are
    mapped by it), so a change to grf's signature cannot silently go unchecked."""
    assert list(inspect.signature(grf).parameters)[1:] == list(GRF_BOUNDS)


def test_other_allowed_constructs():
    """Constants broadcast to x's shape; chained comparisons are elementwise and give 1.0/0.0, so
    they can be combined arithmetically; unary minus, %, e, and every whitelisted function work;
    x of any shape works."""
    np.testing.assert_array_equal(parse_function("f", "2")(X), np.full_like(X, 2.0))
    np.testing.assert_array_equal(parse_function("f", "where(0.2 < x <= 0.5, 1, 0)")(X),
                                  np.where((X > 0.2) & (X <= 0.5), 1.0, 0.0))
    np.testing.assert_array_equal(parse_function("f", "(x < 0.5) - (x > 0.2)")(X),
                                  (X < 0.5).astype(float) - (X > 0.2))
    np.testing.assert_allclose(parse_function("f", "-x**2 + x % 0.3 + e")(X),
                               -X**2 + X % 0.3 + np.e)
    everything = ("sin(x) + cos(x) + tan(x) + exp(x) + log(1 + x) + sqrt(x) + abs(x - 0.5)"
                  " + tanh(x) + sinh(x) + cosh(x) + arctan(x) + minimum(x, 0.3)"
                  " + maximum(x, 0.3) + clip(x, 0.2, 0.7) + heaviside(x - 0.5, 0.5)")
    expected = (np.sin(X) + np.cos(X) + np.tan(X) + np.exp(X) + np.log(1 + X) + np.sqrt(X)
                + np.abs(X - 0.5) + np.tanh(X) + np.sinh(X) + np.cosh(X) + np.arctan(X)
                + np.minimum(X, 0.3) + np.maximum(X, 0.3) + np.clip(X, 0.2, 0.7)
                + np.heaviside(X - 0.5, 0.5))
    np.testing.assert_allclose(parse_function("f", everything)(X), expected, rtol=1e-14)
    grid = np.linspace(0.0, 1.0, 6).reshape(2, 3)
    np.testing.assert_allclose(parse_function("f", "sin(pi*x)")(grid), np.sin(np.pi * grid))


def test_exploit_is_rejected_and_runs_nothing(tmp_path, monkeypatch):
    """The sandbox escape from the bug report (a lambda reaching os.system through
    ().__class__.__base__.__subclasses__()) is rejected before anything runs: one-line error,
    and no pwned.txt in the working directory."""
    monkeypatch.chdir(tmp_path)
    message = rejected(EXPLOIT)
    assert "lambda" in message
    assert not (tmp_path / "pwned.txt").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("expression", "named"), [
    ("().__class__", "attribute"),
    ("x.__class__", "attribute"),
    ("__import__('os')", "unknown function '__import__'"),
    ("open('f')", "unknown function 'open'"),
    ("[x][0]", "subscript"),
    ("lambda: 1", "lambda"),
    ("'a'", "string"),
    ("b'a'", "bytes"),
    ("1j", "complex"),
    ("None", "None"),
    ("True", "True/False"),
    ("y", "unknown name 'y'"),
    ("sin", "sin is a function"),
    ("pi(x)", "pi is not a function"),
    ("sin(x)(x)", "result of a call"),
    ("x.sin()", "attribute"),
    ("[c for c in x]", "comprehension"),
    ("sum(c for c in x)", "unknown function 'sum'"),
    ("sin(*[x])", "starred"),
    ("sin(x, out=x)", "no keyword arguments"),
    ("where(x < 0.5, 1)", "where takes 3 positional"),
    ("f'{x}'", "f-string"),
    ("(y := x)", ":="),
    ("x and 1", "'and'/'or'"),
    ("not x", "'not'"),
    ("~x", "'~'"),
    ("x // 2", "'//'"),
    ("x @ x", "'@'"),
    ("x & x", "'&'"),
    ("x is x", "'is'"),
    ("x in x", "'in'"),
    ("x if x > 0 else 1", "conditional"),
    ("(x, x)", "tuple"),
    ("{x: 1}", "dict"),
    ("sin(x", "not a valid expression"),
    ("1\x00", "not a valid expression"),
    ("1e999", "too large"),
    ("1" * 400, "too large"),
])
def test_disallowed_constructs_are_named(expression, named):
    """Everything outside the small grammar is rejected when the expression is parsed, with a
    message naming the construct (or the unknown name)."""
    message = rejected(expression, at_parse=True)
    assert named in message


def test_huge_power_is_rejected_quickly():
    """9**9**9 is computed in float64 (inf at once, not a Python big integer that takes forever)
    and then rejected as not finite, all within a second."""
    start = time.perf_counter()
    message = rejected("9**9**9")
    assert time.perf_counter() - start < 1.0
    assert "not finite" in message and "inf" in message


def test_values_that_are_not_finite_are_rejected():
    """A well-formed expression that gives nan or inf somewhere on the grid is rejected when the
    function is evaluated, naming a point where it happens."""
    assert "not finite" in rejected("log(x)")
    assert "at x = 0" in rejected("sqrt(x - 0.5)")
    assert "not finite" in rejected("1/(x - 0.5)", np.array([0.0, 0.5, 1.0]))


@pytest.mark.parametrize(("expression", "limit"), [
    ("(" * 100000, "longer than"),
    ("-" * 100000 + "x", "longer than"),
    ("+".join(["x"] * 2500), "longer than"),  # a 4999-character expression
    ("(" * 400 + "x" + ")" * 400, "nested"),  # short enough, but brackets too deep
    ("-" * 900 + "x", "nested"),  # no brackets: caught in the parsed tree
    ("x" + "**x" * 40, "nested"),  # ** groups to the right: a deep tree without brackets
    ("sin(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1), "nested"),
])
def test_size_limits(expression, limit):
    """Oversized or deeply nested input gives a clean InputError (not MemoryError,
    RecursionError or a hang): the length and bracket depth are checked before parsing, the
    nesting of the parsed tree before it is interpreted."""
    start = time.perf_counter()
    assert limit in rejected(expression)
    assert time.perf_counter() - start < 1.0


def balanced_sum(leaves: int) -> str:
    """x + x + ... as a balanced tree: many nodes, little depth."""
    if leaves == 1:
        return "x"
    half = leaves // 2
    return f"({balanced_sum(half)} + {balanced_sum(leaves - half)})"


def test_node_limit_and_the_limits_leave_room():
    """A shallow expression with more than MAX_NODES terms is rejected even though it is short
    and shallow; expressions just inside the limits still work, and a long flat sum (a tree
    leaning left, deeper than MAX_DEPTH) is not mistaken for deep nesting."""
    wide = balanced_sum(MAX_NODES // 2 + 1)
    assert len(wide) <= MAX_LENGTH
    assert "terms and operations" in rejected(wide)
    np.testing.assert_allclose(parse_function("f", balanced_sum(MAX_NODES // 2))(X),
                               MAX_NODES // 2 * X)
    nested = "sin(" * (MAX_DEPTH - 1) + "x" + ")" * (MAX_DEPTH - 1)
    expected = X
    for _ in range(MAX_DEPTH - 1):
        expected = np.sin(expected)
    np.testing.assert_allclose(parse_function("f", nested)(X), expected)
    flat = "x" + " + 0" * ((MAX_NODES - 1) // 2)  # MAX_NODES - 1 nodes, a left spine of 99
    np.testing.assert_array_equal(parse_function("f", flat)(X), X)
    zero = "0." + "0" * 40
    long = "x" + f" + {zero}" * ((MAX_LENGTH - 1) // (len(zero) + 3))
    assert MAX_LENGTH - len(zero) - 3 < len(long) <= MAX_LENGTH
    np.testing.assert_array_equal(parse_function("f", long)(X), X)


@pytest.mark.parametrize(("expression", "problem"), [
    ("grf(x, seed=1, length_scale=1e-9)", "length_scale=1e-09 is outside"),
    ("grf(x, length_scale=1e9)", "outside"),
    ("grf(x, variance=0)", "outside"),
    ("grf(x, variance=1e300)", "outside"),
    ("grf(x, seed=-1)", "outside"),
    ("grf(x, seed=1.5)", "integer"),
    ("grf(x, seed=1e300)", "outside"),
    ("grf(x, seed=9**9**9)", "finite"),
    ("grf(x, seed=x)", "not depend on x"),
    ("grf(x, mean=1e300)", "outside"),
    ("grf(x, foo=1)", "no parameter 'foo'"),
    ("grf(x, 1, seed=2)", "given twice"),
    ("grf(x, **{'seed': 1})", "'**'"),
    ("grf()", "grf takes 1 to 7"),
    ("grf(x, seed=__import__('os'))", "unknown function '__import__'"),
    (" + ".join(["grf(x)"] * (MAX_GRF_CALLS + 1)), f"more than {MAX_GRF_CALLS} grf"),
])
def test_grf_parameters_are_bounded(expression, problem):
    """grf's parameters must be fixed numbers within GRF_BOUNDS (seed a non-negative integer),
    and at most MAX_GRF_CALLS fields per expression, so one expression cannot make the sampler
    divide by zero, fail, or run for long; all this is checked at parse time."""
    message = rejected(expression, at_parse=True)
    assert problem in message


def test_long_expressions_are_shortened_in_messages():
    """The message quotes at most ~80 characters of the expression, so a long input still gives
    a readable one-line error."""
    message = rejected("+".join(["x"] * 2500))
    assert len(message) < 200


def test_no_eval_exec_or_compile_in_the_module():
    """The interpreter must never hand user text to Python's own evaluator: the module's source
    names none of eval, exec, compile or __import__."""
    tree = ast.parse(Path(inspect.getsourcefile(expressions)).read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not names & {"eval", "exec", "compile", "__import__"}
