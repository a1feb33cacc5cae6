"""The verifiers on their own: the math table (math-verify's documented behaviour and ours), answers that make sympy
blow up answered "timeout" at their deadline while other work goes on, and a dead worker replaced."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.core.verifiers import maths
from service.core.verifiers.pool import Outcome, WorkerPool

# (completion, reference, extraction rule, expected: True / False / "no_answer")
MATH_CASES = [
    ("\\boxed{2}", "2", "boxed", True),
    ("\\boxed{3}", "2", "boxed", False),
    ("The answer is \\boxed{\\frac{1}{2}}.", "0.5", "boxed", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", "boxed", True),
    ("\\boxed{\\frac{2}{4}}", "\\frac12", "boxed", True),
    ("\\boxed{0.33}", "\\frac{1}{3}", "boxed", False),
    ("\\boxed{\\sqrt{4}}", "2", "boxed", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", "boxed", True),
    ("\\boxed{\\pi}", "3.14159", "boxed", False),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", "boxed", True),
    ("\\boxed{(x+1)^2}", "x^2+1", "boxed", False),
    ("\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}", "boxed", True),
    ("\\boxed{\\{1,2\\}}", "\\{1,2,3\\}", "boxed", False),
    ("\\boxed{[1,2)}", "[1,2)", "boxed", True),
    ("\\boxed{(1,2)}", "[1,2]", "boxed", False),
    ("\\boxed{50\\%}", "50\\%", "boxed", True),
    ("\\boxed{1000}", "1,000", "boxed", True),
    ("\\boxed{-7}", "-7", "boxed", True),
    ("\\boxed{7}", "-7", "boxed", False),
    ("\\boxed{1} and later \\boxed{4}", "4", "boxed", True),
    ("\\boxed{1} and later \\boxed{4}", "1", "boxed", False),
    ("\\boxed{\\dfrac{3}{4}}", "0.75", "boxed", True),
    ("\\boxed{\\text{(B)}}", "B", "boxed", True),
    ("\\boxed{10^{3}}", "1000", "boxed", True),
    ("\\boxed{2^{10}}", "1024", "boxed", True),
    ("\\boxed{\\infty}", "\\infty", "boxed", True),
    ("\\boxed{x=5}", "5", "boxed", True),
    ("no box here, the answer is 4", "4", "boxed", "no_answer"),
    ("\\boxed{}", "4", "boxed", "no_answer"),
    ("<think>hmm</think><answer>42</answer>", "42", "answer_tag", True),
    ("<answer>41</answer>", "42", "answer_tag", False),
    ("<answer>\\frac{1}{4}</answer>", "0.25", "answer_tag", True),
    ("no tags", "1", "answer_tag", "no_answer"),
    ("Reasoning...\nAnswer: 12", "12", "answer_line", True),
    ("Answer: 12\nFinal answer: 13", "13", "answer_line", True),
    ("Answer: \\frac{3}{2}", "1.5", "answer_line", True),
    ("answer is 12", "12", "answer_line", "no_answer"),
    ("So the result is $\\frac{1}{2}$", "0.5", "auto", True),
    ("We get $x = 3$ so \\boxed{3}", "3", "auto", True),
    ("nothing", "3", "auto", "no_answer"),
    ("\\boxed{3.0}", "3", "boxed", True),
    ("\\boxed{\\frac{6}{2}}", "3", "boxed", True),
    ("\\boxed{1.5}", "\\frac{3}{2}", "boxed", True),
    ("\\boxed{e^{i\\pi}}", "-1", "boxed", False),
]
HANGS = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{(10^{10})!}", "\\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}"]


@pytest.mark.parametrize(("completion", "reference", "rule", "expected"), MATH_CASES)
def test_math_answers(completion: str, reference: str, rule: maths.Extraction, expected: object) -> None:
    maths.quiet()
    if expected == "no_answer":
        with pytest.raises(maths.NoAnswer):
            maths.check(completion, reference, rule)
    else:
        assert maths.check(completion, reference, rule) is expected


def test_a_hanging_answer_times_out_at_its_deadline_while_other_work_goes_on() -> None:
    async def main() -> None:
        pool = WorkerPool(2)
        await pool.start()
        try:
            deadline = 1.5
            for hang in HANGS:
                task = {"kind": "math", "completion": hang, "reference": "1", "extract": "boxed"}
                started = time.monotonic()
                slow = asyncio.ensure_future(pool.run(task, deadline, started + 60))
                # Meanwhile the other worker answers ordinary work at once.
                quick = []
                for i in range(5):
                    t = time.monotonic()
                    answer = await pool.run(
                        {"kind": "math", "completion": f"\\boxed{{{i}}}", "reference": str(i)}, deadline, t + 60
                    )
                    assert answer == {"ok": True, "value": True}
                    quick.append(time.monotonic() - t)
                outcome = await slow
                took = time.monotonic() - started
                print(f"{hang}: {outcome} after {took:.2f} s; others answered in <= {max(quick):.3f} s")
                assert outcome == Outcome(None, "timeout") and deadline <= took <= deadline + 0.5
                assert max(quick) < 0.5
                await asyncio.sleep(1.0)  # the killed worker's replacement starts
            assert pool.size == 2 and len(pool._workers) == 2  # every killed worker was replaced
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_dead_worker_is_replaced() -> None:
    async def main() -> None:
        pool = WorkerPool(1)
        await pool.start()
        try:
            [worker] = list(pool._workers)
            worker.kill()
            one = {"kind": "math", "completion": "\\boxed{1}", "reference": "1"}
            died = await pool.run(one, 5, time.monotonic() + 5)
            assert isinstance(died, Outcome) and died.failure is not None and "worker died" in died.failure
            again = await pool.run(one, 5, time.monotonic() + 5)
            assert again == {"ok": True, "value": True}
        finally:
            await pool.close()

    asyncio.run(main())


def test_a_sample_waiting_behind_a_hang_keeps_its_own_answer() -> None:
    """A sample's answer does not depend on its neighbours: its own time limit counts from when a worker takes it, so
    waiting behind a hanging answer costs time, not the reward. Only the request's deadline ends the wait, and that
    failure says so ("over_budget", which a client may retry) instead of blaming the answer."""

    async def main() -> None:
        pool = WorkerPool(1)
        await pool.start()
        try:
            hang = {"kind": "math", "completion": HANGS[0], "reference": "1", "extract": "boxed"}
            ordinary = {"kind": "math", "completion": "\\boxed{4}", "reference": "4"}
            started = time.monotonic()
            slow = asyncio.ensure_future(pool.run(hang, 1.0, started + 60))
            await asyncio.sleep(0.05)
            behind = await pool.run(ordinary, 1.0, started + 60)
            waited = time.monotonic() - started
            assert await slow == Outcome(None, "timeout")
            assert behind == {"ok": True, "value": True} and 1.0 <= waited <= 3.0, waited
            slow = asyncio.ensure_future(pool.run(hang, 1.0, time.monotonic() + 60))
            await asyncio.sleep(0.05)
            t = time.monotonic()
            out_of_budget = await pool.run(ordinary, 1.0, t + 0.3)
            assert out_of_budget == Outcome(None, "over_budget") and time.monotonic() - t <= 0.5
            assert await slow == Outcome(None, "timeout")
        finally:
            await pool.close()

    asyncio.run(main())
