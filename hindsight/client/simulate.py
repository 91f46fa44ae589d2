"""``hindsight simulate``: a call floor in a box, for demos and soak runs.

Each line runs calls back to back: start, talk for a random while, now and
then the agent presses the record key part-way through, end. It drives the
daemon only through the public control protocol, like a PBX bridge would.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from dataclasses import dataclass

from hindsight.client.options import endpoint_of
from hindsight.client.transport import send
from hindsight.errors import ClientError
from hindsight.protocol import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    End,
    Mark,
    Start,
    Status,
)


@dataclass(frozen=True)
class Plan:
    line: str
    agent: str
    seconds: float
    mark_at: float | None  # seconds into the call when the agent presses the key


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=40, help="calls in all (default 40)")
    parser.add_argument("--lines", type=int, default=4, help="lines to use (default 4)")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument(
        "--mark-ratio", type=float, default=0.15, help="share of calls the agent marks"
    )
    parser.add_argument("--seed", type=int, help="make the floor repeatable")


def plan_calls(lines: list[str], args: argparse.Namespace) -> list[list[Plan]]:
    """Deal ``args.calls`` calls round-robin over ``lines``; one queue per line."""
    rng = random.Random(args.seed)
    queues: list[list[Plan]] = [[] for _ in lines]
    for n in range(args.calls):
        i = n % len(lines)
        seconds = rng.uniform(args.min_seconds, args.max_seconds)
        mark_at = seconds * rng.uniform(0.2, 0.9) if rng.random() < args.mark_ratio else None
        queues[i].append(Plan(lines[i], f"agent-{i + 1:02d}", seconds, mark_at))
    return queues


class Floor:
    def __init__(self, endpoint: str, timeout: float, total: int) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.total = total
        self.done = 0
        self.failures = 0
        self._lock = threading.Lock()

    def run_line(self, plans: list[Plan]) -> None:
        for plan in plans:
            try:
                call_id = self._one_call(plan)
                self._report(f"{plan.line}  {call_id}  {plan.seconds:4.1f} s", plan.mark_at)
            except ClientError as exc:
                with self._lock:
                    self.failures += 1
                self._report(f"{plan.line}  failed: {exc}", None)

    def _one_call(self, plan: Plan) -> str:
        call_id = send(self.endpoint, Start(line=plan.line, agent=plan.agent), self.timeout).call_id
        try:
            if plan.mark_at is not None:
                time.sleep(plan.mark_at)
                send(self.endpoint, Mark(line=plan.line, note="simulated escalation"), self.timeout)
                time.sleep(plan.seconds - plan.mark_at)
            else:
                time.sleep(plan.seconds)
        finally:
            send(self.endpoint, End(line=plan.line), self.timeout)
        return call_id

    def _report(self, text: str, mark_at: float | None) -> None:
        with self._lock:
            self.done += 1
            marked = f"  record key at {mark_at:.1f} s" if mark_at is not None else ""
            print(f"[{self.done:>3}/{self.total}] {text}{marked}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.calls < 1 or args.lines < 1 or not 0 < args.min_seconds <= args.max_seconds:
        raise ClientError(
            "--calls and --lines must be >= 1, 0 < --min-seconds <= --max-seconds", EXIT_USAGE
        )
    endpoint = endpoint_of(args)
    lines = send(endpoint, Status(), args.timeout).lines
    idle = [line.line for line in lines if line.call_id is None]
    if len(idle) < args.lines:
        raise ClientError(
            f"the daemon has {len(idle)} idle lines, --lines asks for {args.lines}", EXIT_REFUSED
        )
    floor = Floor(endpoint, args.timeout, args.calls)
    threads = [
        threading.Thread(target=floor.run_line, args=(plans,), daemon=True)
        for plans in plan_calls(idle[: args.lines], args)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"simulated {floor.done - floor.failures} calls, {floor.failures} failed")
    return EXIT_REFUSED if floor.failures else EXIT_OK
