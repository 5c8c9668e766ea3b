"""The contract every LLM backend meets, as one shared test mixin (like LensKit's and
implicit's shared test classes).

A backend's test module subclasses :class:`GeneratorConformance`, sets ``backend`` (what
``info.backend`` says) and provides a ``generator`` fixture: a ready generator, shared by
the module or the session (loading a model takes seconds to a minute). Every test here
uses short chat prompts and a few generated tokens.

The class name does not start with ``Test``: pytest collects its tests only through the
subclasses.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, ClassVar

import numpy as np
import pytest

from ragrec.errors import ConfigError
from ragrec.generation import BaseGenerator, Generator
from ragrec.prompting import LABELS, Message, PromptBuilder, PromptConfig, RenderedPrompt

HISTORY = [(1, "Alien (1979)"), (2, "Heat (1995)")]
TITLES = [
    "Toy Story (1995)",
    "Jumanji (1995)",
    "Casablanca (1942)",
    "The Matrix (1999)",
    "Groundhog Day (1993)",
    "Fargo (1996)",
    "Up (2009)",
    "Psycho (1960)",
]
LONG_TITLE = "The Lord of the Rings: The Fellowship of the Ring (2001)"
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["D"]}},
    "required": ["label"],
    "additionalProperties": False,
}


def ranking_prompts(generator: Any, sizes: tuple[int, ...] = (5, 2, 8)) -> list[RenderedPrompt]:
    """Ranking prompts with ``sizes`` candidates each (labels A..), by the generator's
    own tokenizer and chat template."""
    builder = PromptBuilder(generator.tokenizer, PromptConfig(shuffle=False))
    return [
        builder.render(
            history=HISTORY, candidates=[(100 + i, TITLES[i % len(TITLES)]) for i in range(n)]
        )
        for n in sizes
    ]


def _shared(a: str, b: str) -> int:
    """Length of the common beginning of two texts."""
    pairs = zip(a, b, strict=False)
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], pairs))


def chat(generator: Any, text: str) -> str:
    """One user message in the generator's chat format, ready for the reply."""
    return str(generator.tokenizer.chat_text([Message("user", text)]))


class GeneratorConformance:
    """Shared tests of the generator contract; subclasses set ``backend`` and provide a
    ``generator`` fixture."""

    backend: ClassVar[str]
    """What ``info.backend`` names."""
    end_of_turn: ClassVar[str] = "<|im_end|>"
    """The chat template's end-of-turn text, which a completion never includes."""

    @pytest.fixture
    def prompts(self, generator: Any) -> list[RenderedPrompt]:
        return ranking_prompts(generator)

    # the protocol and info -----------------------------------------------------------

    def test_is_a_generator(self, generator: Any) -> None:
        assert isinstance(generator, BaseGenerator)
        assert isinstance(generator, Generator)

    def test_info_names_what_ran(self, generator: Any, prompts: list[RenderedPrompt]) -> None:
        generator.label_logprobs(prompts[:1])  # after first use: the resolved device, dtype
        info = generator.info
        assert info.backend == self.backend
        for value in (info.model, info.device, info.dtype):
            assert isinstance(value, str)
            assert value
            assert value != "auto"

    # the tokenizer ---------------------------------------------------------------------

    def test_tokenizer_counts_and_truncates_consistently(self, generator: Any) -> None:
        tok = generator.tokenizer
        ids = tok.encode(LONG_TITLE)
        assert tok.count_tokens(LONG_TITLE) == len(ids) > 4
        assert tok.decode(ids) == LONG_TITLE
        assert tok.truncate("Heat (1995)", 24) == "Heat (1995)"
        assert tok.truncate(LONG_TITLE, len(ids)) == LONG_TITLE
        cut = tok.truncate(LONG_TITLE, 4)
        assert cut.endswith("...")
        assert LONG_TITLE.startswith(cut.removesuffix("..."))
        assert tok.count_tokens(cut.removesuffix("...")) <= 4

    def test_labels_are_single_distinct_tokens(self, generator: Any) -> None:
        tok = generator.tokenizer
        ids = tok.label_ids(LABELS[:20])
        assert len(set(ids)) == 20
        for label, token in zip(LABELS[:20], ids, strict=True):
            assert tok.encode(label) == [token]
        with pytest.raises(ConfigError, match="single-token labels"):
            tok.label_ids(["A", "Zanzibar quux"])

    def test_prompts_render_with_its_chat_template(self, generator: Any) -> None:
        tok = generator.tokenizer
        messages = [Message("system", "You rank movies."), Message("user", "Alien (1979)?")]
        bare = tok.chat_text(messages, generation_prompt=False)
        asking = tok.chat_text(messages)
        assert asking.startswith(bare)
        assert len(asking) > len(bare)
        assert "You rank movies." in bare
        assert "Alien (1979)?" in bare
        prompt = ranking_prompts(generator, (1,))[0]
        assert prompt.labels == ("A",)
        assert prompt.token_count == tok.count_tokens(prompt.text)

    # ranking ---------------------------------------------------------------------------

    def test_label_logprobs_shape_normalised_and_padded(
        self, generator: Any, prompts: list[RenderedPrompt]
    ) -> None:
        got = generator.label_logprobs(prompts)
        assert got.shape == (len(prompts), max(len(p.labels) for p in prompts))
        for row, prompt in zip(got, prompts, strict=True):
            n = len(prompt.labels)
            assert np.isfinite(row[:n]).all()
            assert (row[:n] <= 0).all()
            assert np.exp(row[:n]).sum() == pytest.approx(1.0, abs=1e-5)
            assert np.isneginf(row[n:]).all()

    def test_label_logprobs_keep_prompt_order(
        self, generator: Any, prompts: list[RenderedPrompt]
    ) -> None:
        together = generator.label_logprobs(prompts)
        alone = [generator.label_logprobs([p])[0] for p in reversed(prompts)][::-1]
        for row, prompt in enumerate(prompts):
            n = len(prompt.labels)
            np.testing.assert_allclose(together[row, :n], alone[row][:n], atol=1e-3)

    def test_label_logprobs_of_no_prompts(self, generator: Any) -> None:
        out = generator.label_logprobs([])
        assert isinstance(out, np.ndarray)
        assert out.shape == (0, 0)

    # generation ------------------------------------------------------------------------

    def test_generate_is_greedy_text(self, generator: Any) -> None:
        text = chat(generator, "List three fruits, one per line.")
        out = generator.generate([text, text], max_tokens=8)
        assert len(out) == 2
        assert all(isinstance(t, str) for t in out)
        assert out[0]
        assert out[0] == out[1]
        assert self.end_of_turn not in out[0]

    def test_generate_respects_max_tokens(self, generator: Any) -> None:
        text = chat(generator, "Describe the film Casablanca (1942) in a few sentences.")
        (short,) = generator.generate([text], max_tokens=3)
        (longer,) = generator.generate([text], max_tokens=12)
        assert generator.tokenizer.count_tokens(short) <= 3
        assert generator.tokenizer.count_tokens(longer) <= 12
        assert len(longer) > len(short)
        assert longer.startswith(short)

    def test_generate_stops_before_the_first_stop_string(self, generator: Any) -> None:
        text = chat(generator, "Describe the film Casablanca (1942) in a few sentences.")
        (full,) = generator.generate([text], max_tokens=16)
        # stop strings: a word the completion is known to reach, a line break, and text it
        # never produces; it ends before the first of them it produces
        word = next(w for w in (w.strip(".,;:!?'\"") for w in full.split()[2:]) if len(w) >= 4)
        stops = ["@@@", "\n", word]
        expected = full[: min(full.find(s) for s in stops if s in full)]
        (stopped,) = generator.generate([text], max_tokens=16, stop=stops)
        assert stopped == expected
        assert all(s not in stopped for s in stops)

    def test_generate_keeps_prompt_order(self, generator: Any) -> None:
        texts = [
            chat(generator, "List three fruits, one per line."),
            chat(generator, "What is the capital of France?"),
        ]
        together = generator.generate([*texts, texts[0]], max_tokens=6)
        alone = [generator.generate([t], max_tokens=6)[0] for t in reversed(texts)][::-1]
        assert together[0] != together[1]
        assert together[2] == together[0]
        # each answer is its own prompt's (a batched engine may round differently from a
        # single pass, so it is compared by how much it shares, not for equality)
        for i, j in ((0, 1), (1, 0)):
            own, other = _shared(together[i], alone[i]), _shared(together[i], alone[j])
            assert own > other, (together, alone)

    def test_generate_of_no_prompts(self, generator: Any) -> None:
        assert generator.generate([], max_tokens=4) == []

    def test_generate_follows_a_json_schema(self, generator: Any) -> None:
        text = chat(generator, "Which label is best? Answer in JSON.")
        (out,) = generator.generate([text], max_tokens=64, json_schema=JSON_SCHEMA)
        assert json.loads(out) == {"label": "D"}

    @pytest.mark.parametrize(
        ("kwargs", "names"),
        [
            ({"prompts": ["x"], "max_tokens": 0}, "max_tokens=0"),
            ({"prompts": ["x"], "max_tokens": -1}, "max_tokens=-1"),
            ({"prompts": "one prompt"}, "prompts='one prompt'"),
            ({"prompts": ["x", 3]}, r"prompts\[1\] is of type int"),
            ({"prompts": ["x"], "stop": "\n"}, r"stop='\\n' is one string"),
            ({"prompts": ["x"], "stop": ["\n", ""]}, "every stop string"),
            ({"prompts": ["x"], "json_schema": '{"type": "object"}'}, "json_schema is of type str"),
        ],
        ids=[
            "max_tokens-zero",
            "max_tokens-negative",
            "prompts-one-string",
            "prompts-not-text",
            "stop-one-string",
            "stop-empty-string",
            "json_schema-not-a-dict",
        ],
    )
    def test_bad_input_is_a_config_error_naming_it(
        self, generator: Any, kwargs: dict[str, Any], names: str
    ) -> None:
        with pytest.raises(ConfigError, match=names):
            generator.generate(**kwargs)
