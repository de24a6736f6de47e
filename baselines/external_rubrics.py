"""`external_rubrics`: rubrics written by an external LLM behind an OpenAI-compatible API, applied by the judge.

The writer is any OpenAI-compatible server (`base_url` + `model`). Offline, by default, the harness starts a real
`harness serve` process for `serve` (hf:smollm2-135m) on a free loopback port the first time it needs a rubric
that is not in the cache, and stops it on `close()` (or `with` exit, or at interpreter exit). Rubrics are written
once per conversation with `RUBRIC_PROMPT`; outputs that do not parse are retried with new seeds a bounded number
of times, then left without a rubric (its responses score NaN, counted in `report()`, never 0).

`refine=k` adds Chasing the Tail's refinement (Zhang et al. 2025, arXiv:2509.21500): sample `samples` responses
per prompt (from `policy`, default the writer itself), score them with the current rubric, show the writer the top
two and ask for criteria that separate them (`REFINE_PROMPT`), keep only new criteria on which the judge's P(yes)
for the two differs by at least `verify_margin`, drop the pair from the pool, and repeat k times. Every
generation goes through a content-hash cache, so a rerun asks the server nothing it has answered before.
"""

from __future__ import annotations

import contextlib
import json
import math
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from baselines.expert_rubrics import conversation_key
from harness.backends import Backend
from harness.cache import Cache, CachedBackend, content_key
from harness.judge import AGGREGATES, Aggregate, Judge, open_judge, render_conversation, score_rubrics
from harness.methods import FitContext, reward_method
from harness.rubric import ParseTally
from harness.types import Chat, Criterion, GenerationParams, Message, Rubric

# Bump a version on any change to its template: the version names the rubrics' source in reports and stores.
RUBRIC_TEMPLATE_VERSION = "external-rubric-v1"
RUBRIC_SYSTEM = "You write grading rubrics: short lists of checkable criteria for judging an assistant's reply."
RUBRIC_PROMPT = """Write a rubric for grading the assistant's next reply in the conversation below.

# Conversation
{conversation}

# Instructions
List 3 to 8 criteria. Each criterion is one statement about the reply that a grader can check as true or false, \
specific to this conversation: name the facts, numbers, steps or advice a good reply must contain. Give each a \
weight from 1 (nice to have) to 3 (essential). A mistake a reply must avoid gets a negative weight from -1 to -3.
Return only a JSON array, for example:
[{{"criterion": "States that adults should not take more than 4 g of paracetamol a day", "weight": 3}},
 {{"criterion": "Recommends a daily paracetamol dose above 4 g", "weight": -3}}]"""

REFINE_TEMPLATE_VERSION = "external-refine-v1"
# A CPU model writing a few hundred tokens takes minutes; a shorter client timeout would retry work in progress.
DEFAULT_TIMEOUT_S = 900.0
REFINE_PROMPT = """The rubric below scores two replies to this conversation almost alike. Write new criteria that \
tell them apart.

# Conversation
{conversation}

# Current rubric
{rubric}

# Reply A
{first}

# Reply B
{second}

# Instructions
Write 1 to 3 new criteria that are not in the rubric. Each must be a statement that one of the two replies meets \
and the other does not, phrased so that meeting it makes a reply better, with a weight from 1 to 3.
Return only a JSON array, for example: [{{"criterion": "Asks how long the symptoms have lasted", "weight": 2}}]"""


def rubric_chat(conversation: Chat) -> Chat:
    """The writer's chat for a rubric for `conversation`."""
    user = RUBRIC_PROMPT.format(conversation=render_conversation(conversation))
    return [Message(role="system", content=RUBRIC_SYSTEM), Message(role="user", content=user)]


def refine_chat(conversation: Chat, rubric: Rubric, first: str, second: str) -> Chat:
    """The writer's chat asking for criteria that separate two replies the rubric ranks alike."""
    listed = json.dumps([{"criterion": c.text, "weight": c.weight} for c in rubric.criteria], indent=1)
    user = REFINE_PROMPT.format(
        conversation=render_conversation(conversation), rubric=listed, first=first, second=second
    )
    return [Message(role="system", content=RUBRIC_SYSTEM), Message(role="user", content=user)]


def prompt_id(chat: Sequence[Any]) -> str:
    """A message's `prompt_id` when the chat carries one, else a short hash of the conversation."""
    ids = [m["prompt_id"] for m in chat if isinstance(m, dict) and m.get("prompt_id") is not None]
    return str(ids[0]) if ids else content_key("conversation", chat=conversation_key(chat))[:16]


class LocalServerBackend:
    """An OpenAI client for a `harness serve` process that starts on the first request (cache hits never start it).

    The process is entered into `stack`, so closing the stack stops it. Requests go one at a time: the server runs
    one model call at a time anyway, and queued requests would only run into the client's timeout.
    """

    def __init__(self, spec: str, stack: contextlib.ExitStack, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.spec, self.stack, self.timeout = spec, stack, timeout
        self.model_id = f"harness-serve:{spec}"  # the port changes per run; the cache key must not
        self._client: Any = None

    def client(self) -> Any:
        """The OpenAI client, starting the server if it is not running yet."""
        if self._client is None:
            from harness.backends.openai import OpenAIBackend
            from harness.serve import local_server

            url = self.stack.enter_context(local_server(self.spec))
            self._client = OpenAIBackend(self.spec, base_url=url, timeout=self.timeout, concurrency=1)
        return self._client

    @property
    def started(self) -> bool:
        """Whether the server process has been started."""
        return self._client is not None

    @property
    def base_url(self) -> str:
        """The running server's base URL."""
        return str(self.client().base_url)

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Generate through the local server."""
        return self.client().generate(chats, params)

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Score continuations through the local server."""
        return self.client().logprobs(chats, continuations)


@dataclass(frozen=True)
class WriterSettings:
    """How rubrics and criteria are sampled; greedy decoding (temperature 0) gets no retries, it would repeat."""

    max_new_tokens: int = 384
    temperature: float = 0.7
    retries: int = 2
    seed: int = 0

    def attempts(self) -> list[GenerationParams]:
        """One parameter set per attempt, each with its own seed."""
        n = 1 if self.temperature == 0 else 1 + self.retries
        return [GenerationParams(self.max_new_tokens, self.temperature, seed=self.seed + k) for k in range(n)]


@dataclass(frozen=True)
class RefineSettings:
    """Chasing the Tail refinement: rounds, responses sampled per prompt, and the verification margin."""

    rounds: int = 0
    samples: int = 4
    response_tokens: int = 256
    verify_margin: float = 0.05
    policy: str | None = None


class ExternalRubrics:
    """Scores responses by the judge's verdicts on rubrics an external model wrote for each prompt."""

    name = "external_rubrics"

    def __init__(
        self,
        writer: WriterSettings,
        refine: RefineSettings,
        server: dict[str, Any],
        judge: str | Backend = "hf:smollm2-135m",
        aggregate: Aggregate = "healthbench",
        cache: bool | str = True,
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ValueError(f"external_rubrics: unknown aggregate {aggregate!r}; expected one of {sorted(AGGREGATES)}")
        if server.get("base_url") and not server.get("model"):
            raise ValueError("external_rubrics: base_url needs model (the name the server knows the model by)")
        if refine.rounds < 0 or (refine.rounds and refine.samples < 2):
            raise ValueError("external_rubrics: refine must be >= 0 and refinement needs samples >= 2")
        self.writer, self.refine, self.server = writer, refine, server
        self.judge_spec, self.aggregate, self.cache = judge, aggregate, cache
        self.tally, self.refine_tally = ParseTally(), ParseTally()
        self.counts: Counter[str] = Counter()
        self._rubrics: dict[tuple[tuple[str, str], ...], Rubric | None] = {}
        self._stack = contextlib.ExitStack()
        self._finalizer = weakref.finalize(self, self._stack.close)  # stops a started server if close() is skipped
        self._generator: Any = None
        self._policy: Any = None
        self._judge: Judge | None = None

    # --- resources ------------------------------------------------------------------------------------------
    def _cached(self, backend: Backend) -> Backend:
        if self.cache is False:
            return backend
        return CachedBackend(backend, Cache() if self.cache is True else Cache(self.cache))  # type: ignore[return-value]

    def generator(self) -> Backend:
        """The rubric writer: the given server, or a local one that starts on the first cache miss."""
        if self._generator is None:
            from harness.backends.openai import OpenAIBackend

            timeout = self.server.get("timeout", DEFAULT_TIMEOUT_S)
            if self.server.get("base_url"):
                client: Any = OpenAIBackend(self.server["model"], base_url=self.server["base_url"], timeout=timeout)
            else:
                client = LocalServerBackend(self.server["serve"], self._stack, timeout)
            self._generator = self._cached(client)
        return self._generator

    def policy(self) -> Backend:
        """Where refinement samples responses: `policy` when given, else the writer."""
        if self._policy is None:
            from harness.backends import make_backend

            spec = self.refine.policy
            self._policy = self._cached(make_backend(spec)) if spec else self.generator()
        return self._policy

    def judge(self) -> Judge:
        """The judge that applies the rubrics (loaded on first use)."""
        if self._judge is None:
            self._judge = open_judge(self.judge_spec, cache=self.cache, progress=False)
        return self._judge

    def close(self) -> None:
        """Stop the local rubric server, if this method started one."""
        self._stack.close()
        self._generator = None

    def __enter__(self) -> ExternalRubrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the method -----------------------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> None:
        """Nothing to train: rubrics are written on first sight of each prompt."""

    def rubrics(self, prompts: Sequence[Chat]) -> list[Rubric | None]:
        """The rubric of each prompt (written, and refined, once per conversation); None where writing failed."""
        keys = [conversation_key(p) for p in prompts]
        new = {k: p for k, p in zip(keys, prompts, strict=True) if k not in self._rubrics}
        if new:
            chats = list(new.values())
            source = f"{RUBRIC_TEMPLATE_VERSION}:{self.generator().model_id}"
            written = self._ask([rubric_chat(c) for c in chats], self.tally, source, [prompt_id(c) for c in chats])
            self.counts.update(prompts=len(chats), no_rubric=sum(r is None for r in written))
            if self.refine.rounds:
                written = self._refine(chats, written)
            self._rubrics.update(zip(new, written, strict=True))
        return [self._rubrics[k] for k in keys]

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Judge-aggregated rubric score per response; NaN where the prompt has no usable rubric."""
        rubrics = self.rubrics(prompts)
        scores = score_rubrics(self.judge(), prompts, responses, rubrics, self.aggregate)
        missing = sum(r is None for r in rubrics)
        self.counts.update(
            responses=len(scores), unscored_no_rubric=missing, unscored_by_judge=sum(map(math.isnan, scores)) - missing
        )
        return scores

    def report(self) -> dict[str, Any]:
        """Parse failures, prompts left without a rubric, NaN scores and refinement outcomes so far."""
        return {
            "templates": [RUBRIC_TEMPLATE_VERSION, REFINE_TEMPLATE_VERSION],
            "rubric_parse": self.tally.as_dict(),
            "refine_parse": self.refine_tally.as_dict(),
            **{key: self.counts[key] for key in sorted(self.counts)},
        }

    # --- writing and refinement -----------------------------------------------------------------------------
    def _ask(self, chats: list[Chat], tally: ParseTally, source: str, ids: list[str]) -> list[Rubric | None]:
        """Generate and parse; outputs that fail are asked again with the next seed, a bounded number of times."""
        out: list[Rubric | None] = [None] * len(chats)
        pending = list(range(len(chats)))
        for params in self.writer.attempts():
            if not pending:
                break
            texts = self.generator().generate([chats[i] for i in pending], params)
            parsed = [tally.parse(t, prompt_id=ids[i], source=source) for i, t in zip(pending, texts, strict=True)]
            for i, rubric in zip(pending, parsed, strict=True):
                out[i] = rubric
            pending = [i for i, rubric in zip(pending, parsed, strict=True) if rubric is None]
        return out

    def _refine(self, chats: list[Chat], rubrics: list[Rubric | None]) -> list[Rubric | None]:
        """Chasing the Tail: `rounds` times, add verified criteria that separate each prompt's top two responses."""
        rubrics = list(rubrics)
        pools = self._sample(chats)
        for round_no in range(1, self.refine.rounds + 1):
            pairs = self._top_two(chats, rubrics, pools)
            if not pairs:
                break
            order = sorted(pairs)
            asks = [refine_chat(chats[i], rubrics[i], *pairs[i]) for i in order]  # type: ignore[arg-type]
            source = f"{REFINE_TEMPLATE_VERSION}:{self.generator().model_id}"
            proposals = self._ask(asks, self.refine_tally, source, [rubrics[i].prompt_id for i in order])  # type: ignore[union-attr]
            for i, proposal in zip(order, proposals, strict=True):
                pools[i] = [r for r in pools[i] if r not in pairs[i]]
                if proposal is not None:
                    rubrics[i] = self._extend(chats[i], rubrics[i], pairs[i], proposal, round_no)  # type: ignore[arg-type]
            self.counts["refine_rounds"] += 1
        return rubrics

    def _sample(self, chats: list[Chat]) -> list[list[str]]:
        """`samples` distinct responses per prompt from the policy (duplicates dropped, order kept)."""
        pools: list[list[str]] = [[] for _ in chats]
        for s in range(self.refine.samples):
            params = GenerationParams(self.refine.response_tokens, temperature=1.0, seed=self.writer.seed + s)
            for pool, response in zip(pools, self.policy().generate(chats, params), strict=True):
                if response not in pool:
                    pool.append(response)
        return pools

    def _top_two(
        self, chats: list[Chat], rubrics: list[Rubric | None], pools: list[list[str]]
    ) -> dict[int, tuple[str, str]]:
        """The two best-scored responses per prompt that has a rubric and at least two scored responses left."""
        active = [i for i, rubric in enumerate(rubrics) if rubric is not None and len(pools[i]) >= 2]
        flat = [(i, r) for i in active for r in pools[i]]
        scores = score_rubrics(
            self.judge(),
            [chats[i] for i, _ in flat],
            [r for _, r in flat],
            [rubrics[i] for i, _ in flat],
            self.aggregate,
        )
        ranked: dict[int, list[tuple[float, int, str]]] = {}
        for k, ((i, response), value) in enumerate(zip(flat, scores, strict=True)):
            if not math.isnan(value):
                ranked.setdefault(i, []).append((-value, k, response))  # ties keep sampling order
        return {
            i: (rows[0][2], rows[1][2]) for i, rows in ((i, sorted(r)) for i, r in ranked.items()) if len(rows) >= 2
        }

    def _extend(self, chat: Chat, rubric: Rubric, pair: tuple[str, str], proposal: Rubric, round_no: int) -> Rubric:
        """Add the proposed criteria that are new and on which the judge tells the two responses apart."""
        known = {c.text.casefold() for c in rubric.criteria}
        fresh = [c for c in proposal.criteria if c.text.casefold() not in known]
        self.counts.update(refine_proposed=len(proposal.criteria), refine_duplicate=len(proposal.criteria) - len(fresh))
        if not fresh:
            return rubric
        candidates = Rubric(tuple(fresh))
        first, second = self.judge().verdicts([(chat, pair[0], candidates), (chat, pair[1], candidates)])
        # Either direction counts: the pair was ranked by the rubric being refined, which may be what is wrong.
        kept = [
            Criterion(c.text, c.weight, (*c.tags, f"refine:{round_no}"))
            for c, a, b in zip(fresh, first, second, strict=True)
            if a.p_yes is not None and b.p_yes is not None and abs(a.p_yes - b.p_yes) >= self.refine.verify_margin
        ]
        self.counts.update(refine_added=len(kept), refine_indistinct=len(fresh) - len(kept))
        return Rubric((*rubric.criteria, *kept), rubric.source, rubric.prompt_id)


@reward_method("external_rubrics", kind="rubric")
def external_rubrics(
    base_url: str | None = None,
    model: str | None = None,
    serve: str = "hf:smollm2-135m",
    judge: str = "hf:smollm2-135m",
    aggregate: Aggregate = "healthbench",
    refine: int = 0,
    samples: int = 4,
    verify_margin: float = 0.05,
    policy: str | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 384,
    retries: int = 2,
    seed: int = 0,
    timeout: float = DEFAULT_TIMEOUT_S,
    cache: bool | str = True,
) -> ExternalRubrics:
    """Rubrics written by an external LLM (OpenAI-compatible; offline: a local server), optional refinement."""
    return ExternalRubrics(
        WriterSettings(max_new_tokens=max_new_tokens, temperature=temperature, retries=retries, seed=seed),
        RefineSettings(rounds=refine, samples=samples, verify_margin=verify_margin, policy=policy),
        {"base_url": base_url, "model": model, "serve": serve, "timeout": timeout},
        judge=judge,
        aggregate=aggregate,
        cache=cache,
    )
