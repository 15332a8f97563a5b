"""`synthetic`: an offline, deterministic long-horizon lookup task where the answer needs facts seen turns earlier.

    rows = make_synthetic_rows(num_rows=256, objectives=3, hops=2, seed=0, split="train")
    env = make_env("synthetic")
    obs = await env.step(ToolCall("lookup", {"key": "Alar Venn"}), rows[0])

    mempo-data synthetic --out data/synthetic --objectives 3 --hops 2      # train/test parquet (data/cli.py)
    mempo-data synthetic --out data/k7 --objectives 7 --hops 1 --names pool --prompt tiny   # tiny-world style

Each row is its own small invented world of people, cities and guilds (names made of random syllables, so no model
knows them), with one document per entity. A document states every fact about its entity (relations to other
entities plus filler) and nothing else. An objective is a chain of `hops` lookups:

    "Name the mentor of the founder of the city where Alar Venn was born."     (hops = 3)
     lookup Alar Venn -> born in Keshmar; lookup Keshmar -> founded by Dorin Tal; lookup Dorin Tal -> mentor ...

The tool `lookup` (`{"key": "<entity name>"}`) returns the entity's document (`ok=False`, error `not_found`, for a
name with no document). Answers are entity names, scored exactly (`rewards.score_answer`, any article and case).

Minimum number of turns. A fact "r(e) = e'" is written only in e's own document, and the chains of different
objectives share no entity, so an optimal agent needs exactly `objectives * hops` lookups, one per turn, plus one
answer turn: `min_turns(k, h) = k * h + 1` (stored per row as `extra_info["min_turns"]`; keep it <= max_turns,
16 by default). Why memory shows here: solving the objectives one after another, the answer of objective 1 is
found at turn h and must be carried in memory for the (k - 1) * h turns that solve the others, because under the
`memory` context policy only the last memory and the last observation are shown.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from mempo_verl.envs.base import (
    Environment,
    Observation,
    answer_format_example,
    sample_extra_info,
    sample_questions,
    turn_format_prompt,
)
from mempo_verl.envs.registry import config_from_kwargs, register_env
from mempo_verl.protocol import ToolCall, render_block, render_tool_call, render_turn
from mempo_verl.rewards import (
    AnswerNormalization,
    AnswerScore,
    RewardMode,
    golds_from_ground_truth,
    score_answer,
    validate_normalization,
    validate_reward_mode,
)

LOOKUP_TOOL = "lookup"
DATA_SOURCE = "mempo_synthetic"

EntityKind = Literal["person", "city", "guild"]
ENTITY_KINDS: tuple[EntityKind, ...] = get_args(EntityKind)

SyntheticErrorKind = Literal["unknown_tool", "bad_arguments", "not_found"]
"""`Observation.error` values: a tool other than `lookup`; a missing or non-string key; no document by that name."""


@dataclass(frozen=True)
class Relation:
    """A functional relation between entities: every subject has exactly one object."""

    subject: EntityKind
    object: EntityKind
    phrase: str
    """Noun phrase of the object, over the subject's phrase `{x}`: "the mentor of {x}"."""
    sentence: str
    """The fact in the subject's document, over `{s}` (subject) and `{o}` (object): "The mentor of {s} is {o}."."""


RELATIONS: dict[str, Relation] = {
    "born_in": Relation("person", "city", "the city where {x} was born", "{s} was born in {o}."),
    "mentor": Relation("person", "person", "the mentor of {x}", "The mentor of {s} is {o}."),
    "guild": Relation("person", "guild", "the guild that {x} belongs to", "{s} belongs to {o}."),
    "founder": Relation("city", "person", "the founder of {x}", "{s} was founded by {o}."),
    "partner": Relation("city", "city", "the main trading partner of {x}", "The main trading partner of {s} is {o}."),
    "leader": Relation("guild", "person", "the leader of {x}", "{s} is led by {o}."),
    "seat": Relation("guild", "city", "the city where {x} has its seat", "{s} has its seat in {o}."),
}
"""Relation name -> relation. Every entity of a kind has every relation whose subject is that kind."""

_FILLERS: dict[EntityKind, tuple[str, ...]] = {
    "person": ("{s} worked as a {trade} and lived to the age of {age}.", "{s} is remembered for {deed}."),
    "city": ("{s} has about {population} inhabitants.", "{s} is known for its {goods}."),
    "guild": ("{s} deals in {goods}.", "{s} was established in the year {year}."),
}
_TRADES = ("glassblower", "cartographer", "weaver", "brewer", "shipwright", "astronomer", "scribe", "potter")
_DEEDS = ("a long sea voyage", "a book of songs", "a bridge of stone", "a famous trial", "a new calendar")
_GOODS = ("salt", "amber", "wool", "copper", "dyes", "timber", "spices", "honey", "paper", "silver")
_ONSETS = ("b", "br", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "th", "v", "z", "c", "j")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "n", "r", "l", "s", "th", "m", "k", "nd", "rn")
_CITY_SUFFIXES = ("mar", "holt", "wick", "ford", "vale", "stead", "mouth", "gard")
_KEY_STRIP = string.whitespace + string.punctuation + "“”‘’"


def min_turns(objectives: int, hops: int) -> int:
    """Turns an optimal agent needs: one lookup per hop of each objective, then one answer turn (k * h + 1)."""
    return objectives * hops + 1


def normalize_key(key: str) -> str:
    """Lookup keys match case-insensitively, with spaces collapsed, outer quotes/punctuation and a leading "the"
    dropped: normalize_key(' "the Tavren  Guild". ') == 'tavren guild'."""
    words = key.strip(_KEY_STRIP).casefold().split()
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    return " ".join(words)


@dataclass
class _Entity:
    name: str
    kind: EntityKind
    facts: dict[str, str] = field(default_factory=dict)
    """Relation name -> the object's name."""

    @property
    def mention(self) -> str:
        """How text refers to the entity: guilds take an article ("the Tavren Guild")."""
        return f"the {self.name}" if self.kind == "guild" else self.name


@dataclass(frozen=True)
class Objective:
    """One question of an episode: its chain of entities and relations, and the answer (the chain's last name)."""

    question: str
    chain: tuple[str, ...]
    """Entity names e_0 … e_h; e_0 is named in the question, e_h is the answer."""
    relations: tuple[str, ...]
    """Relation names r_1 … r_h, with r_j(e_{j-1}) = e_j."""

    @property
    def answer(self) -> str:
        return self.chain[-1]


NameStyle = Literal["syllables", "pool"]
"""How entity names are made: ``syllables`` (default: fresh random syllables, "Dorka Venthi", "Keshmar", "Tavren
Guild") or ``pool`` (one word of ``NAME_POOL`` each: "Dorka", "Venthi", "Tavren Guild")."""


def _name_pool(size: int) -> tuple[str, ...]:
    """``size`` distinct two-syllable words from a fixed seed: the same pool in every process and release."""
    rng = random.Random("mempo-synthetic/name-pool")
    pool: dict[str, None] = {}
    while len(pool) < size:
        first = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        word = (first + rng.choice(_ONSETS) + rng.choice(_VOWELS)).capitalize()
        if word.casefold() not in ("guild", "the") and word.casefold() not in pool:
            pool[word] = None
    return tuple(pool)


NAME_POOL: tuple[str, ...] = _name_pool(128)
"""The words of ``NameStyle`` ``pool``. Why a pool: a tokenizer can hold each as one token (the tiny world does), so
copying a name from the context is copying one token; fresh syllables are several tokens each, and the tiny world's
4-layer model had not learned to copy them after 390 SFT steps (its held-out lookups were made-up names, measured).
128 words: a world needs ~20 (k = 4: 8 on the chains, 9 distractors)."""


class _World:
    """A seeded world under construction: unique names, entities by name."""

    def __init__(self, rng: random.Random, names: NameStyle = "syllables") -> None:
        self.rng = rng
        self.names = names
        self.entities: dict[str, _Entity] = {}
        self._keys: set[str] = set()

    def _syllable(self, coda: bool) -> str:
        return self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + (self.rng.choice(_CODAS) if coda else "")

    def _word(self) -> str:
        """Two syllables, the second open: "Dorka", "Venthi"."""
        return (self._syllable(coda=True) + self._syllable(coda=False)).capitalize()

    def _person_name(self) -> str:
        if self.names == "pool":
            return self.rng.choice(NAME_POOL)
        return f"{self._word()} {self._word()}"

    def _city_name(self) -> str:
        if self.names == "pool":
            return self.rng.choice(NAME_POOL)
        return self._syllable(coda=True).capitalize() + self.rng.choice(_CITY_SUFFIXES)

    def _guild_name(self) -> str:
        word = self.rng.choice(NAME_POOL) if self.names == "pool" else self._word()
        return f"{word} Guild"

    def new(self, kind: EntityKind) -> _Entity:
        """A new entity of `kind` whose name (as a lookup key) is unique in the world."""
        namer = {"person": self._person_name, "city": self._city_name, "guild": self._guild_name}[kind]
        name = namer()
        while normalize_key(name) in self._keys:
            name = namer()
        self._keys.add(normalize_key(name))
        self.entities[name] = _Entity(name, kind)
        return self.entities[name]

    def chain(self, hops: int) -> Objective:
        """A fresh chain: new entities e_0 … e_h linked by random relations (disjoint from every other chain)."""
        path = [self.new(self.rng.choice(ENTITY_KINDS))]
        relations = []
        for _ in range(hops):
            name = self.rng.choice([r for r, rel in RELATIONS.items() if rel.subject == path[-1].kind])
            nxt = self.new(RELATIONS[name].object)
            path[-1].facts[name] = nxt.name
            path.append(nxt)
            relations.append(name)
        phrase = path[0].mention
        for name in relations:
            phrase = RELATIONS[name].phrase.format(x=phrase)
        return Objective(f"Name {phrase}.", tuple(e.name for e in path), tuple(relations))

    def fill(self) -> None:
        """Give every entity every relation of its kind; the chains' links are already set and are kept."""
        by_kind = {kind: [e for e in self.entities.values() if e.kind == kind] for kind in ENTITY_KINDS}
        for entity in self.entities.values():
            for name, rel in RELATIONS.items():
                if rel.subject == entity.kind and name not in entity.facts:
                    candidates = [e for e in by_kind[rel.object] if e is not entity]
                    entity.facts[name] = self.rng.choice(candidates).name

    def document(self, entity: _Entity) -> str:
        """The entity's facts (each relation, two fillers) in a shuffled order after a one-line introduction."""
        rng = self.rng
        values = {
            "trade": rng.choice(_TRADES),
            "age": rng.randint(30, 95),
            "deed": rng.choice(_DEEDS),
            "population": f"{rng.randint(2, 900) * 100:,}",
            "goods": rng.choice(_GOODS),
            "year": rng.randint(900, 1800),
        }
        sentences = [
            RELATIONS[name].sentence.format(s=entity.mention, o=self.entities[obj].mention)
            for name, obj in entity.facts.items()
        ]
        sentences += [filler.format(s=entity.mention, **values) for filler in _FILLERS[entity.kind]]
        rng.shuffle(sentences)
        intro = f"{entity.mention} is a {entity.kind}."
        return " ".join(s[0].upper() + s[1:] for s in [intro, *sentences])


def generate_episode(
    rng: random.Random, objectives: int, hops: int, names: NameStyle = "syllables"
) -> tuple[list[Objective], list[dict[str, str]]]:
    """One world: `objectives` disjoint chains of `hops` links, distractor entities, one document per entity.

    Returns the objectives and the documents `[{"key": name, "text": text}]`, sorted by name (the order tells
    nothing about the chains).
    """
    if objectives < 1 or hops < 1:
        raise ValueError(f"objectives and hops must be >= 1, got objectives={objectives}, hops={hops}")
    world = _World(rng, names)
    # 1. the chains first, on fresh entities, so that no two objectives share a lookup (min_turns is exact)
    chains = [world.chain(hops) for _ in range(objectives)]
    # 2. distractors of every kind, so that random links do not all point back into the chains
    for kind in ENTITY_KINDS:
        for _ in range(max(3, objectives * hops // 2)):
            world.new(kind)
    # 3. every other relation slot gets a random entity
    world.fill()
    documents = [{"key": e.name, "text": world.document(e)} for e in world.entities.values()]
    return chains, sorted(documents, key=lambda d: d["key"])


def synthetic_task_prompt(num_objectives: int) -> str:
    """The task prompt of a `synthetic` episode with `num_objectives` questions."""
    task = (
        "Answer the question(s) about an invented world by looking up its documents, one entity per call. Each "
        "document gives the facts about one person, city or guild; every answer is the name of one."
    )
    return turn_format_prompt(
        task=task,
        call_template=ToolCall(LOOKUP_TOOL, {"key": "<entity name>"}),
        call_result="the document of that entity",
        example_mem="Question 1: founder of the city where Alar Venn was born. Next: look up Alar Venn.",
        example_think="Alar Venn's document will say where Alar Venn was born.",
        example_call=ToolCall(LOOKUP_TOOL, {"key": "Alar Venn"}),
        num_objectives=num_objectives,
    )


def brief_task_prompt(num_objectives: int) -> str:
    """A one-paragraph task prompt (``SyntheticConfig.prompt="brief"``): the turn format and the tool in ~60 words.

    Why: a small model reads the task prompt on every turn, and the full prompt (``synthetic_task_prompt``, ~190
    words with its example turn) is most of each context; the tiny world (``mempo_verl.tiny``) uses this one.
    """
    answer = render_block("answer", "NAME" if num_objectives == 1 else answer_format_example(num_objectives))
    call = render_tool_call(ToolCall(LOOKUP_TOOL, {"key": "NAME"}))
    return (
        "Answer the question(s) about an invented world. Each turn write <mem>your memory</mem>, rewritten in full, "
        f"then <think>your reasoning</think>, then one action: {call} shows the document of NAME next turn, or "
        f"{answer} ends the episode."
    )


def tiny_task_prompt(num_objectives: int) -> str:
    """The tiny world's task prompt (``SyntheticConfig.prompt="tiny"``): the turn's parts named in ~20 tokens.

    Why: a 4-layer model learns to copy names only once the context is mostly the question, memory and document.
    Measured with the same oracle rows and optimiser (held-out turns exact under teacher forcing after 250 steps):
    0.165 with no task prompt and no turns-left hint, 0.005 with the brief prompt and the hint (~95 more tokens).
    """
    return "Write <mem>, <think>, then a lookup or <answer>."


PromptStyle = Literal["full", "brief", "tiny"]
TASK_PROMPTS = {"full": synthetic_task_prompt, "brief": brief_task_prompt, "tiny": tiny_task_prompt}
"""``SyntheticConfig.prompt`` -> the task prompt of a k-question episode."""


def make_synthetic_rows(
    num_rows: int,
    objectives: int = 1,
    hops: int = 2,
    seed: int = 0,
    split: str = "train",
    prompt: PromptStyle = "full",
    names: NameStyle = "syllables",
) -> list[dict[str, Any]]:
    """verl rows in the data builder's shape (`mempo_verl.data.builder`), one world per row.

    Row i is generated from its own seed string (seed, split, i): the same arguments give the same rows, and rows
    do not change when `num_rows` grows. `extra_info` adds `documents`, `chains`, `relations`, `hops` and
    `min_turns` to the builder's keys. ``prompt`` picks the system message written into the row (the agent loop
    shows ``SyntheticEnv.task_prompt`` instead, which follows ``SyntheticConfig.prompt``); ``names`` how entities
    are named (``NameStyle``).
    """
    from mempo_verl.data import user_content

    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    if names not in get_args(NameStyle):
        raise ValueError(f"names={names!r}; allowed: {', '.join(get_args(NameStyle))}")
    rows = []
    for index in range(num_rows):
        rng = random.Random(f"mempo-synthetic/{seed}/{split}/{index}")  # str seeds are stable across processes
        chains, documents = generate_episode(rng, objectives, hops, names)
        questions = [c.question for c in chains]
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [
                    {"role": "system", "content": TASK_PROMPTS[prompt](objectives)},
                    {"role": "user", "content": user_content(questions)},
                ],
                "ability": "memory-lookup",
                "reward_model": {"style": "rule", "ground_truth": {"target": [[c.answer] for c in chains]}},
                "extra_info": {
                    "index": index,
                    "split": split,
                    "questions": questions,
                    "question_ids": [f"synthetic-{seed}-{split}-{index}-{j}" for j in range(objectives)],
                    "question_sources": [DATA_SOURCE] * objectives,
                    "num_objectives": objectives,
                    "hops": hops,
                    "min_turns": min_turns(objectives, hops),
                    "chains": [list(c.chain) for c in chains],
                    "relations": [list(c.relations) for c in chains],
                    "documents": documents,
                },
                "agent_name": "mempo_agent",
            }
        )
    return rows


RELATION_NOUNS: dict[str, str] = {
    "born_in": "birthplace",
    "mentor": "mentor",
    "guild": "guild",
    "founder": "founder",
    "partner": "partner",
    "leader": "leader",
    "seat": "seat",
}
"""Relation name -> the one word the oracle's memory uses for a hop still to come."""


def _mention(name: str) -> str:
    """How documents refer to an entity (guilds take an article), from its name alone."""
    return f"the {name}" if name.endswith(" Guild") else name


def _sentence_start(text: str) -> str:
    return text[0].upper() + text[1:]


def oracle_turns(sample: Mapping[str, Any]) -> list[str]:
    """The turns of an optimal agent on the row's episode (``min_turns`` of them), as model text.

    The objectives are solved in order, one lookup per hop, then one answer turn. The memory follows one rule,
    *keep every fact still needed*: the answers found so far, and for the objective in progress the fact being
    looked up, written as the sentence its document will contain with ``?`` for the unknown (then the relations
    still to follow). The entity just looked up is named in that sentence; the next turn's document holds the
    same sentence with the answer in place of ``?``::

        <mem>Q1: Keshmar. Q2: The mentor of Dorin Tal is ?.</mem>
        <think>Look up Dorin Tal.</think>
        <tool_call>{"name": "lookup", "arguments": {"key": "Dorin Tal"}}</tool_call>

    Names are written as documents write them (``the Tavren Guild``); lookups and scoring ignore the article.
    """
    info = sample_extra_info(sample)
    chains, relations = info.get("chains"), info.get("relations")
    if not chains or relations is None or len(chains) != len(relations):
        raise ValueError(f"oracle_turns needs a synthetic row (extra_info chains/relations), got keys {sorted(info)}")
    found: list[str] = []
    turns = []
    for q, (chain, rels) in enumerate(zip(chains, relations, strict=True), start=1):
        for i, relation in enumerate(rels):
            subject = _mention(chain[i])
            pending = _sentence_start(RELATIONS[relation].sentence.format(s=subject, o="?"))
            later = [RELATION_NOUNS[r] for r in rels[i + 1 :]]
            if later:
                pending += f" Then: {', '.join(later)}."
            memory = " ".join([*found, f"Q{q}: {pending}"])
            turns.append(render_turn(memory, f"Look up {subject}.", tool_call=ToolCall(LOOKUP_TOOL, {"key": chain[i]})))
        found.append(f"Q{q}: {_mention(chain[-1])}.")
    answers = "; ".join(_mention(chain[-1]) for chain in chains)
    turns.append(render_turn(" ".join(found), "All found.", answer=answers))
    return turns


@dataclass(frozen=True)
class SyntheticConfig:
    """Options of `synthetic` (the keyword arguments of `make_env("synthetic", ...)`)."""

    reward_mode: RewardMode = "all_em"
    """How `score` combines the objectives: "all_em" (paper, default), "em_mean", "f1_mean", "em_sum" (MEM1)."""
    prompt: PromptStyle = "full"
    """The task prompt: "full" (default: the shared turn-format wording with an example turn), "brief" (one
    paragraph, for small models: ``brief_task_prompt``) or "tiny" (one line, the tiny world's:
    ``tiny_task_prompt``)."""
    normalization: AnswerNormalization = "squad"
    """Answer normalisation of `score` (`rewards.AnswerNormalization`): "squad" (default) or "unicode"."""

    def __post_init__(self) -> None:
        validate_reward_mode(self.reward_mode)
        validate_normalization(self.normalization)
        if self.prompt not in TASK_PROMPTS:
            raise ValueError(f"synthetic: prompt={self.prompt!r}; allowed: {sorted(TASK_PROMPTS)}")


def _failure(kind: SyntheticErrorKind, text: str) -> Observation:
    return Observation(text=text, ok=False, error=kind, metrics={"lookup_found": 0.0})


@register_env("synthetic")
class SyntheticEnv(Environment):
    """The lookup-chain task of the module docstring; the episode's documents travel in `extra_info`."""

    def __init__(self, **kwargs: Any) -> None:
        self.config = config_from_kwargs(SyntheticConfig, kwargs, "synthetic")

    def task_prompt(self, sample: Mapping[str, Any]) -> str:
        return TASK_PROMPTS[self.config.prompt](len(sample_questions(sample)))

    def questions(self, sample: Mapping[str, Any]) -> list[str]:
        return sample_questions(sample)

    def tool_schemas(self) -> list[dict[str, Any]]:
        key = {"type": "string", "description": "The full name of a person, city or guild."}
        function = {
            "name": LOOKUP_TOOL,
            "description": "Return the document of one entity of this world.",
            "parameters": {"type": "object", "properties": {"key": key}, "required": ["key"]},
        }
        return [{"type": "function", "function": function}]

    async def step(self, tool_call: ToolCall, sample: Mapping[str, Any]) -> Observation:
        """Look one entity up in the row's documents. Never raises on a bad call: see `SyntheticErrorKind`."""
        example = '{"name": "lookup", "arguments": {"key": "<entity name>"}}'
        if tool_call.name != LOOKUP_TOOL:
            return _failure("unknown_tool", f"Unknown tool {tool_call.name!r}. The only tool is lookup: {example}")
        key = tool_call.arguments.get("key")
        if not isinstance(key, str) or not normalize_key(key):
            got = "nothing" if key is None else repr(key)
            return _failure("bad_arguments", f'Bad lookup call: "key" must be an entity name, got {got}. {example}')
        documents = {normalize_key(d["key"]): d for d in sample_extra_info(sample).get("documents", [])}
        document = documents.get(normalize_key(key))
        if document is None:
            # a not-found is the model's mistake (a misremembered name), counted as a failed call
            hint = "Use the full name as written in the question or in a document."
            return _failure("not_found", f'No document for "{key.strip()}". {hint}')
        return Observation(text=f"{document['key']}: {document['text']}", metrics={"lookup_found": 1.0})

    def score(self, answer: str | None, ground_truth: Any) -> AnswerScore:
        """Exact match of each objective's name (`rewards.score_answer`, `reward_mode`, `normalization`)."""
        golds = golds_from_ground_truth(ground_truth)
        return score_answer(answer, golds, self.config.reward_mode, self.config.normalization)

    def gold_answer_text(self, ground_truth: Any) -> str:
        """The answer names joined with "; "."""
        return "; ".join(aliases[0] for aliases in golds_from_ground_truth(ground_truth))
