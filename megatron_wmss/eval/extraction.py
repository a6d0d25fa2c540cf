"""Pure-string answer extraction (no math-verify here): the `<answer>` region, the last `\\boxed{}`,
plain numbers and multiple-choice letters."""

from __future__ import annotations

import re

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_BOX_CMDS = ("\\boxed", "\\fbox")


class Malformed(ValueError):
    """The response has a `\\boxed{` whose braces never close."""


def answer_region(response: str) -> str:
    """The text inside the last `<answer>...</answer>` (to the end if unclosed); the whole response
    when it has no `<answer>` tag."""
    start = response.rfind(_ANSWER_OPEN)
    if start < 0:
        return response
    body = response[start + len(_ANSWER_OPEN):]
    end = body.find(_ANSWER_CLOSE)
    return body if end < 0 else body[:end]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (also `\\boxed 5`), braces matched.

    Returns None when there is no box; raises Malformed when the last box never closes."""
    pos = max(text.rfind(cmd) for cmd in _BOX_CMDS)
    if pos < 0:
        return None
    cmd = next(c for c in _BOX_CMDS if text.startswith(c, pos))
    rest = text[pos + len(cmd):]
    if rest.startswith(" ") or (rest and rest[0] not in "{"):
        if rest and rest[0].isalpha():  # e.g. "\boxedfoo" is not a box; look before it
            return last_boxed(text[:pos])
        m = re.match(r"\s*([^\s$]+)", rest)  # "\boxed 5"
        return m.group(1) if m else None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i].strip()
    raise Malformed("unbalanced braces in \\boxed{")


_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textrm)\s*\{([^{}]*)\}")
_UNIT_WORDS = re.compile(r"[A-Za-z][A-Za-z .]*$")  # trailing unit words: "18 dollars", "5 cm"
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def to_number(answer: str) -> float | None:
    """A plain number from a short answer ('\\$1,600.00', '18 \\text{ dollars}', '25\\%', '-3.5'),
    or None when it is not a single plain number (fractions, expressions, tuples...)."""
    s = _TEXT_CMD.sub(lambda m: " " + m.group(1) + " ", answer)
    for token in ("\\$", "$", "\\%", "%", "\\!", "\\,", "\\;", "^\\circ", "^{\\circ}", "\\left", "\\right", "{", "}"):
        s = s.replace(token, " ")
    s = s.strip()
    if "=" in s:  # "x = 5"
        s = s.rsplit("=", 1)[1].strip()
    s = _UNIT_WORDS.sub("", s).strip() if re.match(r"^[+-]?[\d.,]+\s+[A-Za-z]", s) else s
    s = s.replace(" ", "")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        return None
    return float(s)


def numbers_equal(pred: float, gold: float, rel_tol: float = 1e-4) -> bool:
    """Integral gold answers must match exactly (to 1e-6); others within `rel_tol` relative error
    (MAWPS/SVAMP store rounded decimals such as 0.1666666667)."""
    if float(gold).is_integer():
        return abs(pred - gold) < 1e-6
    return abs(pred - gold) <= rel_tol * max(abs(gold), 1e-12)


_LETTER = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?[.:]?$")
_ANSWER_IS = re.compile(r"answer\s*(?:is|:)\s*:?\s*\(?\s*([A-E])\b\s*\)?", re.I)


def choice_letter(answer: str) -> str | None:
    """'C', '(c)', '\\text{(C)}', 'C)' ... -> 'C'; None when the answer is not a bare letter."""
    s = _TEXT_CMD.sub(lambda m: m.group(1), answer).replace("$", "").strip()
    m = _LETTER.match(s)
    if m:
        return m.group(1).upper()
    m = re.match(r"^\(?([A-E])\)\s*\S", s)  # "(C) 36" or "C) 36": letter followed by the option text
    return m.group(1) if m else None


def choice_in_text(text: str) -> str | None:
    """Lenient fallback for unboxed choice answers: the last 'answer is (X)'."""
    found = _ANSWER_IS.findall(text)
    return found[-1].upper() if found else None


def last_number(text: str) -> float | None:
    """Lenient fallback for unboxed numeric answers: the last number in the text."""
    found = re.findall(r"[+-]?\d[\d,]*\.?\d*", text)
    for tok in reversed(found):
        num = to_number(tok.rstrip(".,"))
        if num is not None:
            return num
    return None
