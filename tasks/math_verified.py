"""Procedural arithmetic word problems with exact answers, and a final-answer checker.

A problem's identity is its family and numbers (`MathProblem.id`, e.g. `rectangle_area/length=7,width=3`); its
wording is a pure function of that id. Train and eval problems are told apart by hashing the id
(`harness.splits.fold`), so the two splits are disjoint by construction and stable across seeds and machines.

>>> p = make_problems(1, seed=0, split="eval")[0]
>>> is_correct(f"So the answer is {p.answer}.", p.answer), is_correct("The answer is 123456789.", p.answer)
(True, False)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from harness.splits import fold

NAMES = ("Ann", "Ben", "Carla", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kenji", "Lena")


@dataclass(frozen=True)
class MathProblem:
    """One word problem: `answer` is the exact final answer as a decimal string."""

    id: str
    question: str
    answer: str
    family: str


# Each family: parameter ranges, and a function params -> (question, answer, worked solution).
Params = dict[str, int]
Family = tuple[dict[str, tuple[int, int]], Callable[[Params, str], tuple[str, int, str]]]


def _rectangle_perimeter(p: Params, name: str) -> tuple[str, int, str]:
    ans = 2 * (p["length"] + p["width"])
    q = f"A rectangle is {p['length']} cm long and {p['width']} cm wide. What is its perimeter in centimetres?"
    return q, ans, f"The perimeter is 2 x ({p['length']} + {p['width']}) = {ans} cm."


def _rectangle_area(p: Params, name: str) -> tuple[str, int, str]:
    ans = p["length"] * p["width"]
    q = f"{name}'s garden is a rectangle {p['length']} m long and {p['width']} m wide."
    q += " What is its area in square metres?"
    return q, ans, f"The area is {p['length']} x {p['width']} = {ans} square metres."


def _change(p: Params, name: str) -> tuple[str, int, str]:
    cost = p["count"] * p["price"]
    bill = (cost // 10 + 1 + p["extra"]) * 10  # always more than the cost
    ans = bill - cost
    q = f"{name} buys {p['count']} notebooks at ${p['price']} each and pays with ${bill}. How many dollars of change?"
    steps = (
        f"The notebooks cost {p['count']} x {p['price']} = {cost} dollars, so the change is {bill} - {cost} = {ans}."
    )
    return q, ans, steps


def _distance(p: Params, name: str) -> tuple[str, int, str]:
    ans = p["speed"] * p["hours"]
    q = f"A train travels at {p['speed']} km per hour for {p['hours']} hours. How many kilometres does it travel?"
    return q, ans, f"Distance = speed x time = {p['speed']} x {p['hours']} = {ans} km."


def _sharing(p: Params, name: str) -> tuple[str, int, str]:
    total = p["groups"] * p["each"]
    q = f"{name} shares {total} apples equally among {p['groups']} baskets. How many apples go in each basket?"
    return q, p["each"], f"Each basket gets {total} / {p['groups']} = {p['each']} apples."


def _ages(p: Params, name: str) -> tuple[str, int, str]:
    ans = p["age"] + p["gap"] + p["years"]
    q = (
        f"{name} is {p['age']} years old and {name}'s cousin is {p['gap']} years older. "
        f"How old will the cousin be in {p['years']} years?"
    )
    return q, ans, f"The cousin is {p['age']} + {p['gap']} = {p['age'] + p['gap']} now, so {ans} in {p['years']} years."


FAMILIES: dict[str, Family] = {
    "rectangle_perimeter": ({"length": (2, 60), "width": (1, 40)}, _rectangle_perimeter),
    "rectangle_area": ({"length": (2, 40), "width": (2, 30)}, _rectangle_area),
    "change": ({"count": (2, 20), "price": (2, 30), "extra": (0, 4)}, _change),
    "distance": ({"speed": (20, 120), "hours": (2, 12)}, _distance),
    "sharing": ({"groups": (2, 20), "each": (2, 60)}, _sharing),
    "ages": ({"age": (5, 40), "gap": (1, 15), "years": (2, 20)}, _ages),
}


def _problem_id(family: str, params: Params) -> str:
    return f"{family}/" + ",".join(f"{k}={v}" for k, v in params.items())


def _parse_id(problem_id: str) -> tuple[str, Params]:
    family, _, rest = problem_id.partition("/")
    if family not in FAMILIES:
        raise ValueError(f"unknown problem family {family!r} in id {problem_id!r}")
    return family, {k: int(v) for k, v in (kv.split("=") for kv in rest.split(","))}


def _render(problem_id: str) -> tuple[str, int, str, str]:
    family, params = _parse_id(problem_id)
    name = NAMES[sum(params.values()) % len(NAMES)]  # a function of the id, so the wording never varies
    question, answer, solution = FAMILIES[family][1](params, name)
    return family, question, answer, solution


def problem_from_id(problem_id: str) -> MathProblem:
    """Rebuild a problem from its id (ids are stable, so stored results can be re-checked)."""
    family, question, answer, _ = _render(problem_id)
    return MathProblem(problem_id, question, str(answer), family)


def make_problems(n: int, seed: int = 0, split: str = "eval") -> list[MathProblem]:
    """Draw `n` distinct problems of the given split ("train" or "eval"), cycling through the families."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = random.Random(seed)
    names, problems, seen = list(FAMILIES), [], set()
    for _ in range(100 * n + 1000):
        if len(problems) == n:
            break
        family = names[len(problems) % len(names)]
        params = {k: rng.randint(lo, hi) for k, (lo, hi) in FAMILIES[family][0].items()}
        pid = _problem_id(family, params)
        if pid not in seen and fold(pid) == split:
            seen.add(pid)
            problems.append(problem_from_id(pid))
    if len(problems) < n:
        raise ValueError(f"could only draw {len(problems)} distinct {split} problems, {n} requested")
    return problems


def worked_solution(problem: MathProblem) -> str:
    """A short correct solution written from the family's template, ending in a boxed answer."""
    *_, solution = _render(problem.id)
    return f"{solution}\nThe answer is \\boxed{{{problem.answer}}}."


_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"(?:answer\s*(?:is|:|=)|####)\s*\**\s*\$?\s*(-?[\d.,/]*\d)", re.IGNORECASE)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unclosed box: fall through to the other rules


def extract_answer(text: str) -> str | None:
    r"""The final answer of a response: the last `\boxed{}`, else the last "answer is X", else the last number.

    >>> extract_answer(r"so $x = \boxed{24}$ cm"), extract_answer("The answer is 1,200 dollars.")
    ('24', '1,200')
    >>> extract_answer("2+3=5"), extract_answer("no digits")
    ('5', None)
    """
    boxed = _last_boxed(text)
    if boxed:
        return boxed
    stated = _ANSWER_IS.findall(text)
    if stated:
        return stated[-1].rstrip(".,")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` as an exact fraction, ignoring "$", thousands commas and units.

    >>> parse_number("$1,200.50"), parse_number("24 cm"), parse_number("3/4"), parse_number("none")
    (Fraction(2401, 2), Fraction(24, 1), Fraction(3, 4), None)
    """
    match = _NUMBER.search(text.replace("$", ""))
    if match is None:
        return None
    token = match.group().replace(",", "")
    try:
        return Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None


def is_correct(response: str, answer: str) -> bool:
    r"""Whether the response's final answer equals `answer` numerically ("24 cm", "24.0", "1,200" all match).

    >>> is_correct("It is 24 cm.", "24"), is_correct("\boxed{24.0}", "24"), is_correct("about 25", "24")
    (True, True, False)
    """
    expected = parse_number(answer)
    if expected is None:
        raise ValueError(f"answer {answer!r} is not a number")
    extracted = extract_answer(response)
    got = parse_number(extracted) if extracted is not None else None
    return got is not None and got == expected
