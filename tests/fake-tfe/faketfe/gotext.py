"""What the real tools print the way Go prints it: RFC3339Nano times, json.MarshalIndent, a small YAML
writer, and the subset of Go's text/template that `--template` takes."""

import json
import re
import time


def rfc3339nano(t):
    """Go time.RFC3339Nano in UTC: fractional seconds with trailing zeros trimmed."""
    ns = int(round(t * 1e9))
    secs, frac = divmod(ns, 10**9)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    f = ("%09d" % frac).rstrip("0")
    return base + ("." + f if f else "") + "Z"


def go_json(obj, indent):
    """json.MarshalIndent look-alike: given indent, ', '/': ' separators, HTML characters escaped."""
    s = json.dumps(obj, indent=indent, ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        s = s.replace(a, b)
    return s


def to_yaml(obj, ind=0):
    pad = " " * ind
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k in obj:
            v = obj[k]
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, k, to_yaml(v, ind + 2)))
            else:
                out.append("%s%s: %s\n" % (pad, k, yaml_scalar(v)))
    elif isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for v in obj:
            sub = to_yaml(v, ind + 2) if isinstance(v, (dict, list)) else pad + "  " + yaml_scalar(v) + "\n"
            out.append(pad + "- " + sub.lstrip(" "))
    else:
        out.append(pad + yaml_scalar(obj) + "\n")
    return "".join(out)


def yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    s = str(v)
    if s == "" or re.search(r"[:#\n\"'{}\[\],&*!|>%@`]|^\s|\s$", s) or s in ("true", "false", "null", "yes", "no") \
            or re.match(r"^[-+0-9.]", s):
        return json.dumps(s)
    return s


class TemplateError(Exception):
    pass


class GoStruct(dict):
    """A Go struct: unknown fields are an error (maps print <no value> instead)."""

    def __init__(self, typename, *a, **kw):
        super().__init__(*a, **kw)
        self.typename = typename


class GoMap(dict):
    """A Go map; `zero` builds the zero value returned for missing keys (None = <no value>)."""

    def __init__(self, *a, zero=None, **kw):
        super().__init__(*a, **kw)
        self.zero = zero


_TOK = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<raw>`[^`]*`)|(?P<lp>\()|(?P<rp>\))|(?P<pipe>\|)
                      |(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)|(?P<num>-?[0-9]+(?:\.[0-9]+)?)
                      |(?P<ident>[A-Za-z_][A-Za-z0-9_]*))''', re.X)


def _tokenize(src):
    toks, pos = [], 0
    src = src.strip()
    while pos < len(src):
        m = _TOK.match(src, pos)
        if not m or m.end() == pos:
            raise TemplateError("unexpected %r in command" % src[pos:].strip()[:10])
        kind = m.lastgroup
        val = m.group(kind)
        toks.append((kind, val))
        pos = m.end()
        while pos < len(src) and src[pos].isspace():
            pos += 1
    return toks


def _truth(v):
    return not (v is None or v is False or v == 0 and not isinstance(v, bool) and isinstance(v, (int, float))
                or (isinstance(v, (str, list, dict)) and len(v) == 0))


def _fmt(v):
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, GoStruct):
        return "{" + " ".join(_fmt(x) for x in v.values()) + "}"
    if isinstance(v, dict):
        return "map[" + " ".join("%s:%s" % (k, _fmt(v[k])) for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _eq(a, *bs):
    if not bs:
        raise TemplateError("wrong number of args for eq: want at least 2 got 1")
    return any(a == b for b in bs)


FUNCS = {
    "eq": _eq,
    "ne": lambda a, b: a != b,
    "not": lambda a: not _truth(a),
    "len": lambda a: len(a),
    "print": lambda *a: "".join(_fmt(x) for x in a),
    "println": lambda *a: " ".join(_fmt(x) for x in a) + "\n",
    "index": lambda a, *ks: _index(a, ks),
}


def _index(a, ks):
    for k in ks:
        a = a[k] if isinstance(a, list) else a.get(k)
    return a


def _field(v, path, src):
    for name in [p for p in path.split(".") if p]:
        if isinstance(v, GoStruct):
            if name not in v:
                raise TemplateError('executing "output" at <%s>: can\'t evaluate field %s in type %s'
                                    % (src, name, v.typename))
            v = v[name]
        elif isinstance(v, dict):
            if name in v:
                v = v[name]
            else:
                v = v.zero() if isinstance(v, GoMap) and v.zero else None
        elif v is None:
            raise TemplateError('executing "output" at <%s>: nil pointer evaluating interface {}.%s' % (src, name))
        else:
            raise TemplateError('executing "output" at <%s>: can\'t evaluate field %s in type %s'
                                % (src, name, type(v).__name__))
    return v


def _eval_pipeline(toks, i, dot, stop):
    """Evaluate `cmd | cmd ...` starting at toks[i]; returns (value, next index)."""
    val, have = None, False
    while True:
        args, j = [], i
        while j < len(toks) and toks[j][0] not in ("pipe",) + stop:
            kind, tv = toks[j]
            if kind == "lp":
                v, j = _eval_pipeline(toks, j + 1, dot, ("rp",))
                if j >= len(toks) or toks[j][0] != "rp":
                    raise TemplateError("unclosed left paren")
                args.append(("v", v))
                j += 1
                continue
            args.append((kind, tv))
            j += 1
        if not args:
            raise TemplateError("missing value for command")
        head_kind, head = args[0]
        vals = [_operand(k, v, dot) for k, v in args[1:]]
        if head_kind == "ident" and head not in ("true", "false", "nil"):
            if head in ("if", "else", "end", "range", "with", "define", "template", "block"):
                raise TemplateError("fake-tfe supports expressions only, not {{%s}}" % head)
            if head not in FUNCS and head not in ("and", "or"):
                raise TemplateError('function "%s" not defined' % head)
            if have:
                vals.append(val)
            if head == "and":
                val = next((x for x in vals if not _truth(x)), vals[-1] if vals else None)
            elif head == "or":
                val = next((x for x in vals if _truth(x)), vals[-1] if vals else None)
            else:
                val = FUNCS[head](*vals)
        else:
            if len(args) > 1 or have:
                raise TemplateError("can't give argument to non-function %s" % head)
            val = _operand(head_kind, head, dot)
        have = True
        i = j
        if i < len(toks) and toks[i][0] == "pipe":
            i += 1
            continue
        return val, i


def _operand(kind, tv, dot):
    if kind == "v":
        return tv
    if kind == "field":
        return dot if tv == "." else _field(dot, tv, tv)
    if kind == "str":
        return json.loads(tv)
    if kind == "raw":
        return tv[1:-1]
    if kind == "num":
        return float(tv) if "." in tv else int(tv)
    if kind == "ident":
        if tv in ("true", "false"):
            return tv == "true"
        if tv == "nil":
            return None
        if tv in FUNCS:
            return FUNCS[tv]()
        raise TemplateError('function "%s" not defined' % tv)
    raise TemplateError("unexpected %s" % tv)


def render_template(tpl, dot):
    out, pos = [], 0
    while True:
        a = tpl.find("{{", pos)
        if a < 0:
            out.append(tpl[pos:])
            break
        text = tpl[pos:a]
        inner_start = a + 2
        if tpl.startswith("- ", inner_start) or tpl.startswith("-\t", inner_start) or tpl.startswith("-\n", inner_start):
            text = text.rstrip()
            inner_start += 1
        out.append(text)
        b = tpl.find("}}", inner_start)
        if b < 0:
            raise TemplateError("template: output:1: unclosed action")
        inner = tpl[inner_start:b]
        pos = b + 2
        if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-"):
            inner = inner[:-1]
            rest = tpl[pos:]
            pos += len(rest) - len(rest.lstrip())
        s = inner.strip()
        if s.startswith("/*") and s.endswith("*/"):
            continue
        toks = _tokenize(inner)
        if not toks:
            raise TemplateError("template: output:1: missing value for command")
        try:
            v, i = _eval_pipeline(toks, 0, dot, ())
        except TemplateError as e:
            raise TemplateError("template: output:1:%d: %s" % (a + 3, e))
        if i != len(toks):
            raise TemplateError("template: output:1: unexpected %s in operand" % toks[i][1])
        out.append(_fmt(v))
    return "".join(out)
