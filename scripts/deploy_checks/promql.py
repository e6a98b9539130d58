"""Finds the metric selectors (name and matched label names) in a PromQL expression."""

import re

# Words that are PromQL syntax, never metric names.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end", "atan2"}
# Aggregations: `sum by (app) (…)` puts the grouping between the name and its bracket.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
# Words whose parenthesised list holds label names, not an expression.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[a-zA-Z]*")
MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*")

# Grafana's variables, replaced by values PromQL accepts so the expression can be read.
GRAFANA_VARIABLES = [
    (re.compile(r"\$__rate_interval|\$__interval|\$__range|\$\{__rate_interval\}"), "5m"),
    (re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?"), ".+"),
]


class PromqlError(ValueError):
    pass


def expand_grafana(expr: str) -> str:
    for pattern, value in GRAFANA_VARIABLES:
        expr = pattern.sub(value, expr)
    return expr


def _skip_string(expr: str, i: int) -> int:
    """The index just past the string literal that starts at i."""
    quote = expr[i]
    i += 1
    while i < len(expr):
        if expr[i] == "\\" and quote != "`":
            i += 2
            continue
        if expr[i] == quote:
            return i + 1
        i += 1
    raise PromqlError(f"unterminated string in {expr!r}")


def _matchers(expr: str, i: int) -> tuple[list[tuple[str, str, str]], int]:
    """Reads `{a="x", b=~"y"}` starting at i (the brace): the matchers and the index past it."""
    assert expr[i] == "{"
    i += 1
    found = []
    while True:
        while i < len(expr) and expr[i] in " \t\n,":
            i += 1
        if i >= len(expr):
            raise PromqlError(f"unterminated label matchers in {expr!r}")
        if expr[i] == "}":
            return found, i + 1
        m = MATCHER.match(expr, i)
        if not m or m.end() >= len(expr) or expr[m.end()] not in "\"'`":
            raise PromqlError(f"cannot read the label matcher at {expr[i:i + 30]!r}")
        end = _skip_string(expr, m.end())
        found.append((m.group(1), m.group(2), expr[m.end() + 1:end - 1]))
        i = end


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Every metric selector in expr: (metric name, label names its matchers use)."""
    out = []
    i = 0
    depth_brackets = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "[":
            depth_brackets += 1
            i += 1
        elif c == "]":
            depth_brackets -= 1
            i += 1
        elif depth_brackets:
            i += 1  # a range or subquery duration
        elif c.isdigit() or (c == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i = NUMBER.match(expr, i).end()  # a number, or a duration after offset
        elif c == "{":
            found, i = _matchers(expr, i)
            names = [v for (label, op, v) in found if label == "__name__" and op == "="]
            if not names:
                raise PromqlError(f"a selector without a metric name in {expr!r}")
            out.append((names[0], {label for (label, _, _) in found if label != "__name__"}))
        elif IDENT.match(expr, i):
            m = IDENT.match(expr, i)
            word, i = m.group(0), m.end()
            j = i
            while j < len(expr) and expr[j] in " \t\n":
                j += 1
            nxt = expr[j] if j < len(expr) else ""
            if word in LABEL_LISTS:
                if nxt == "(":
                    close = expr.find(")", j)
                    if close < 0:
                        raise PromqlError(f"unclosed label list in {expr!r}")
                    i = close + 1
            elif word.lower() in KEYWORDS or word in AGGREGATIONS:
                pass
            elif nxt == "(":
                pass  # a function or an aggregation
            elif nxt == "{":
                found, i = _matchers(expr, j)
                out.append((word, {label for (label, _, _) in found}))
            else:
                out.append((word, set()))
        else:
            i += 1
    return out


def label_values_metric(query: str) -> str | None:
    """The metric of a Grafana `label_values(metric, label)` variable query, if it is one."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
    return m.group(1) if m else None
