#!/usr/bin/env python
"""Every number in a tutorial notebook's prose is printed or asserted by that notebook.

    python .ci/check_numbers.py                        # every nbs/NN_*.ipynb (not train.ipynb); exit 1 on a finding
    python .ci/check_numbers.py nbs/03_gaussian.ipynb  # just these
    python .ci/check_numbers.py --report               # print every finding, exit 0

What is a number in prose. In every markdown cell: integers from 10 up (`1,500`, `20\\,000` and
`20000` are one number), decimals (`3.28`, `0.014`), percentages (`2 %`, `28\\%`; in a list such as
"4.0, 2.5 and 1.4 %" the sign covers the whole list), scientific forms (`1e-10`, `10^{-9}`,
`6\\cdot 10^{-7}`, `10⁻⁹`), `9.8k`, version strings (`0.1.3`) and dates (`2026-11-29`), in plain
text, inline code and LaTeX alike. Integers below 10 are not checked. Not numbers: digits that are
part of a word or an identifier (`float64`, `x_0`, `mnist28`, `v1`, `inception-2015-12-05`, hashes),
exponents and subscripts (`2^4`, `x_{10}`), link targets and URLs. Signs are ignored (`-0.65` is
`0.65`).

Where it must appear. In the source of some code cell, or in an output (`text/plain`, stream text)
of the same notebook. A prose value written with k decimals matches a number that rounds to it
at k decimals (`3.28` matches `3.278`, `3.6` does not); scientific forms compare mantissas at the
prose's exponent (`1e-10` matches `1.2e-10` and `1.0e-10`, not `3.6e-10`); a percentage also
matches a printed fraction (`4.0 %` matches `0.0398`); versions and dates match as text.

The allow-list (`.ci/numbers_allow.toml`) holds what is right without being printed, one reason
each: `[[context]]` rules for references that are not measurements (citation years, say: a regex
the text before the number must end with, and one the number must match), and `[[number]]` entries for
one notebook's constants (paper values, arithmetic in a derivation). A number that disagrees with
its output is fixed in the prose, never allow-listed. `--stale` lists entries that no longer match
anything (tests/test_numbers.py keeps the list free of them).
"""
import argparse, json, re, sys, tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
ALLOW = Path(__file__).resolve().parent / "numbers_allow.toml"


def tutorial_notebooks(nbs_dir=NBS):
    "The tutorial notebooks `NN_*.ipynb`, in order (`train.ipynb` is a papermill entry point, not one)."
    return sorted(Path(nbs_dir).glob("[0-9][0-9]_*.ipynb"))


def _text(source): return "".join(source) if isinstance(source, list) else (source or "")


@dataclass
class Number:
    "A number as written in prose: its text, value (>= 0), decimals (or mantissa decimals), kind."
    text: str
    value: Decimal = Decimal(0)
    decimals: int = 0
    exponent: int = 0          # kind 'sci': value = mantissa * 10**exponent
    kind: str = "plain"        # 'plain', 'sci', 'thousands' (9.8k), 'text' (versions, dates)
    percent: bool = False
    start: int = 0
    end: int = 0

    @property
    def key(self) -> str: return _key(self.text)


def _key(text: str) -> str:
    "How an allow-list entry names a number: as written, without spaces, separators, braces, `$` or sign."
    return re.sub(r"\\,|\{,\}|[\s,{}$]", "", str(text)).lstrip("-−")


# ---- reading numbers out of prose

_SUP = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")


def _normalise(md: str) -> str:
    "Unicode superscripts as TeX exponents: `10⁻⁹` -> `10^{-9}`."
    return re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+", lambda m: "^{" + m.group(0).translate(_SUP) + "}", md)

_MINUS = r"[-−+]?"
_TOKEN = re.compile(r"""
    (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<version>\d+\.\d+\.\d+(?:\.\d+)*)
  | (?P<mant>\d+(?:\.\d+)?)\s*(?:\\cdot|\\times|·|×|\*)\s*10\s*\^\s*(?:\{\s*(?P<mexp>""" + _MINUS + r"""\s*\d+)\s*\}|(?P<mexp2>""" + _MINUS + r"""\d+))
  | (?<![\d.])10\s*\^\s*(?:\{\s*(?P<pexp>""" + _MINUS + r"""\s*\d+)\s*\}|(?P<pexp2>""" + _MINUS + r"""\d+))
  | (?P<emant>\d+(?:\.\d+)?)[eE](?P<eexp>[-−+]?\d+)(?!\w|\.\d)
  | (?P<num>\d{1,3}(?:(?:,|\\,|\{,\}|\u202f|\u2009)\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?)
""", re.X)
_PERCENT = re.compile(r"\s*(?:\\%|%|\s?percent\b)")
_ORDINAL = re.compile(r"(?:st|nd|rd|th)(?![A-Za-z])")
_LIST_SEP = re.compile(r"^\s*(?:,|and|or|to|-|–|—|/|,\s*and)\s*$")


def _skip_before(text, i) -> bool:
    "Is the number starting at i part of a word, an identifier, an exponent or a subscript?"
    if i == 0: return False
    c = text[i - 1]
    if c.isalpha() or c in "_^\\": return True
    if c == "-":                                   # a name joined by hyphens: inception-2015-12-05, run-20261206-101500
        j = i - 1
        while j >= 0 and (text[j].isalnum() or text[j] in "-_"): j -= 1
        if any(ch.isalpha() for ch in text[j + 1:i]): return True
    if c == "{" and i >= 2 and text[i - 2] in "^_": return True
    if c == "." and i >= 2 and text[i - 2].isdigit(): return True
    return False


def _strip_markup(md: str) -> str:
    "Blank out link targets, URLs, HTML tags and comments (same length, so offsets still point into md)."
    blank = lambda m: " " * len(m.group(0))
    for pat in (r"<!--.*?-->", r"\]\([^)\s]*\)", r"https?://\S+", r"</?[A-Za-z][^<>\n]*>", r"arXiv:\s*\d+\.\d+"):
        md = re.sub(pat, blank, md, flags=re.S)
    return md


def prose_numbers(md: str) -> list[Number]:
    "The numbers a markdown cell states (see the module docstring for what counts)."
    text = _strip_markup(_normalise(md))
    out = []
    for m in _TOKEN.finditer(text):
        i, j = m.span()
        if _skip_before(text, i): continue
        g = m.groupdict()
        if g["date"] or g["version"]:
            if j < len(text) and (text[j].isalnum() or text[j] == "_"): continue
            out.append(Number(m.group(0), kind="text", start=i, end=j)); continue
        if g["mant"] or g["pexp"] or g["pexp2"] or g["emant"]:
            mant = g["mant"] or g["emant"] or "1"
            exp = int(re.sub(r"\s", "", (g["mexp"] or g["mexp2"] or g["pexp"] or g["pexp2"] or g["eexp"])).replace("−", "-"))
            n = Number(m.group(0), Decimal(mant), _decimals(mant), exp, "sci", start=i, end=j)
        else:
            raw = re.sub(r"\\,|\{,\}|,|\u202f|\u2009", "", g["num"])
            n = Number(m.group(0), Decimal(raw), _decimals(raw), start=i, end=j)
            rest = text[j:]
            if (s := re.match(r"k(?![A-Za-z])", rest)):
                n.kind, n.end = "thousands", j + 1
            elif (s := _ORDINAL.match(rest)):
                n.end = j + len(s.group(0))
            elif (s := re.match(r"[x×](?![A-Za-z])", rest)):
                n.end = j + 1
            elif rest[:1].isalpha() or rest[:1] == "_":
                continue                                      # part of a word: float64, 3e, 2d
            if n.kind == "plain" and n.decimals == 0 and n.value < 10 and not _PERCENT.match(text[n.end:]):
                n.percent = False; out.append(n); continue     # kept for list propagation, dropped below
        if (p := _PERCENT.match(text[n.end:])): n.percent, n.end = True, n.end + len(p.group(0))
        out.append(n)
    for a, b in reversed(list(zip(out, out[1:]))):             # "4.0, 2.5 and 1.4 %": the sign covers the list
        if b.percent and not a.percent and a.kind == "plain" and _LIST_SEP.match(text[a.end:b.start]): a.percent = True
    return [n for n in out if n.kind != "plain" or n.decimals or n.value >= 10 or n.percent]


def _decimals(s: str) -> int: return len(s.split(".")[1]) if "." in s else 0


# ---- numbers a notebook prints or its code holds

_CODE_NUM = re.compile(r"\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?")


def code_and_output_text(nb) -> tuple[str, str]:
    "All code cell sources, and all text outputs (text/plain, stream), of a notebook."
    code, outs = [], []
    for c in nb["cells"]:
        if c["cell_type"] != "code": continue
        code.append(_text(c["source"]))
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream": outs.append(_text(o.get("text")))
            elif "text/plain" in o.get("data", {}): outs.append(_text(o["data"]["text/plain"]))
    return "\n".join(code), "\n".join(outs)


def known_values(code: str, outputs: str) -> list[Decimal]:
    "Every number in code (not inside identifiers; `20_000`, `10**-9` read as numbers) and in outputs."
    code = re.sub(r"(?<=\d)_(?=\d)", "", code)
    code = re.sub(r"\b10\s*\*\*\s*\(?\s*(-?\d+)\s*\)?", r"1e\1", code)
    vals = []
    for text, strict in ((code, True), (re.sub(r"(?<=\d),(?=\d{3}\b)", "", outputs), False)):
        for m in _CODE_NUM.finditer(text):
            i = m.start()
            if strict and i and (text[i - 1].isalpha() or text[i - 1] == "_"): continue
            try: vals.append(abs(Decimal(m.group(0).rstrip("."))))
            except InvalidOperation: pass
    return vals


def matches(n: Number, values, haystack: str) -> bool:
    "Does the prose number `n` appear (rounded as written) among `values`, or as text in `haystack`?"
    if n.kind == "text": return re.search(r"(?<![\d.])" + re.escape(n.text) + r"(?![\d])", haystack) is not None
    if n.kind == "sci":
        scale, target = Decimal(10) ** n.exponent, n.value
    elif n.kind == "thousands":
        scale, target = Decimal(1000), n.value
    else:
        scale, target = Decimal(1), n.value
    half = Decimal(5) * Decimal(10) ** (-n.decimals - 1) * (1 + Decimal("1e-9"))
    for v in values:
        if abs(v / scale - target) <= half: return True
        if n.percent and abs(100 * v / scale - target) <= half: return True
    return False


# ---- the allow-list

def load_allow(path=ALLOW) -> dict:
    "The allow-list: {'context': [{before, number (optional), reason}], 'number': [{notebook, value, reason}]}."
    path = Path(path)
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    allow = {"context": data.get("context", []), "number": data.get("number", [])}
    for e in allow["context"]:
        if not e.get("reason"): raise ValueError(f"{path}: context rule {e.get('before')!r} needs a reason")
        e["_re"] = re.compile(e["before"] + r"\s*$")
        e["_num"] = re.compile(e.get("number", ".*"))
    for e in allow["number"]:
        if not e.get("reason") or not e.get("notebook") or not e.get("value"):
            raise ValueError(f"{path}: every [[number]] needs notebook, value and reason, got {e}")
    return allow


def _allowed(nb_name, md, n: Number, allow, used) -> bool:
    before = md[max(0, n.start - 80):n.start]
    for k, e in enumerate(allow["context"]):
        if e["_num"].fullmatch(n.key) and e["_re"].search(before): used.add(("context", k)); return True
    key = n.key
    for k, e in enumerate(allow["number"]):
        if e["notebook"] in (nb_name, "*") and _key(e["value"]) == key:
            used.add(("number", k)); return True
    return False


# ---- the check

@dataclass
class Finding:
    notebook: str
    cell: int
    number: str
    context: str

    def __str__(self):
        return f'{self.notebook}: cell {self.cell}: "{self.number}" in "{self.context}" appears in no output or code'


def _context(md, n, width=40) -> str:
    s = md[max(0, n.start - width):min(len(md), n.end + width)]
    return re.sub(r"\s+", " ", s).strip().replace('"', "'")


def check_notebook(nb, name: str, allow=None, used=None) -> list[Finding]:
    "Findings for one notebook (a dict as read from .ipynb JSON); `used` collects the allow-list entries that served."
    allow = allow if allow is not None else {"context": [], "number": []}
    used = used if used is not None else set()
    code, outputs = code_and_output_text(nb)
    values, haystack = known_values(code, outputs), code + "\n" + outputs
    findings = []
    for idx, c in enumerate(nb["cells"]):
        if c["cell_type"] != "markdown": continue
        md = _normalise(_text(c["source"]))
        for n in prose_numbers(md):
            if matches(n, values, haystack) or _allowed(name, md, n, allow, used): continue
            findings.append(Finding(name, idx, md[n.start:n.end].strip(), _context(md, n)))
    return findings


def check(paths, allow=None, used=None) -> list[Finding]:
    "Findings for notebook files `paths`."
    allow = load_allow() if allow is None else allow
    out = []
    for p in map(Path, paths):
        out += check_notebook(json.loads(p.read_text(encoding="utf-8")), p.stem, allow, used)
    return out


def stale_entries(paths=None, allow=None) -> list[str]:
    "Allow-list entries that allow nothing in `paths` (default: every tutorial notebook)."
    allow = load_allow() if allow is None else allow
    used = set()
    check(paths or tutorial_notebooks(), allow, used)
    return ([f"[[context]] before = {e['before']!r}" for k, e in enumerate(allow["context"]) if ("context", k) not in used]
            + [f"[[number]] {e['notebook']}: {e['value']}" for k, e in enumerate(allow["number"]) if ("number", k) not in used])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebooks to check (default: every nbs/NN_*.ipynb)")
    ap.add_argument("--report", action="store_true", help="print every finding and a count per notebook; exit 0")
    ap.add_argument("--allow", default=str(ALLOW), help="the allow-list (TOML); default .ci/numbers_allow.toml")
    ap.add_argument("--stale", action="store_true", help="list allow-list entries that match nothing; exit 1 if any")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or tutorial_notebooks()
    if missing := [str(p) for p in paths if not p.exists()]: sys.exit(f"no such notebook: {', '.join(missing)}")
    allow = load_allow(args.allow)
    if args.stale:
        stale = stale_entries(paths, allow)
        for s in stale: print("stale allow-list entry:", s)
        return 1 if stale else 0
    findings = check(paths, allow)
    for f in findings: print(f)
    if args.report:
        counts = {p.stem: sum(f.notebook == p.stem for f in findings) for p in paths}
        print("\nper notebook:", ", ".join(f"{k} {v}" for k, v in counts.items()))
    if findings and not args.report:
        print(f"FAIL: {len(findings)} numbers in prose that no cell prints or asserts. Quote them from the output below"
              " them (\"below: ...\"), assert them, or, for a constant that is no measurement, add it with its reason"
              f" to {Path(args.allow).name}.")
        return 1
    if not findings: print(f"ok: every number in the prose of {len(paths)} notebook(s) is printed or asserted by it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
