"""Tests of what the LLM ranker adds around its scores: explanations of each user's top
items (in users.jsonl and the report), the runner's per-user extras hook, few-shot
exemplars seeded in fit() without leakage, and setting both from a TOML config."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation.conftest import real_generator
from ragrec.config import load_config
from ragrec.errors import ConfigError
from ragrec.eval import (
    LLMRanker,
    LLMRankerConfig,
    PopularityRanker,
    ProtocolData,
    UserBatch,
    evaluate,
    make_ranker,
    write_report,
)
from ragrec.generation import GenerationInfo, Generator
from ragrec.generation._transformers import HFTokenizer
from ragrec.prompting import LABELS, RenderedPrompt

RETRIEVER = {"channels": [{"kind": "transition"}, {"kind": "popularity", "weight": 0.01}]}


class ScriptedGenerator:
    """A stand-in backend with the real tokenizer: label log-probabilities that favour
    the first labels, and explanation rewrites as ``script`` says (``"good"``: a
    grounded sentence; ``"invented"``: one naming a title outside the evidence;
    ``"echo"``: nothing but the item's title), then good once the script runs out."""

    def __init__(self, tokenizer: HFTokenizer, script: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self.script = list(script)
        self.prompts: list[str] = []
        self.budgets: list[int] = []

    @property
    def info(self) -> GenerationInfo:
        return GenerationInfo("scripted", "script", "cpu", "float32")

    @property
    def tokenizer(self) -> HFTokenizer:
        return self._tokenizer

    def label_logprobs(self, prompts: Sequence[RenderedPrompt]) -> np.ndarray:
        width = max(len(p.labels) for p in prompts)
        out = np.full((len(prompts), width), -np.inf)
        for row, p in enumerate(prompts):
            logits = -np.arange(len(p.labels), dtype=np.float64)
            out[row, : len(p.labels)] = logits - np.log(np.exp(logits).sum())
        return out

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int = 64,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] | None = None,
    ) -> list[str]:
        assert json_schema is None  # rewrites are free text, checked afterwards
        assert stop == ["\n"]
        self.prompts += prompts
        self.budgets.append(max_tokens)
        out = []
        for _ in prompts:
            mode = self.script.pop(0) if self.script else "good"
            out.append(
                {
                    "good": " for the same mood as what you watched.",
                    "invented": ' because you loved "Some Film Never Seen".',
                    "echo": ".",
                }[mode]
            )
        return out


def _ranker(generator: Generator, **config: Any) -> LLMRanker:
    cfg = {"retriever": RETRIEVER, "fit_blend": False, **config}
    ranker = make_ranker("llm", cfg)
    assert isinstance(ranker, LLMRanker)
    ranker.generator = generator
    ranker._ranker = None
    return ranker


def _users(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "users.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


class TestExplanations:
    def test_top_items_explained_from_evidence_with_checked_rewrites(
        self, llamarec_data: ProtocolData, tmp_path: Path
    ) -> None:
        # user 1: item 1 rewrite invented a title (evidence sentence stands), item 2 good;
        # user 2: item 1 echo (evidence sentence stands), item 2 good
        script = ["invented", "good", "echo", "good"]
        gen = ScriptedGenerator(real_generator().tokenizer, script)
        ranker = _ranker(gen, explain_top=2)
        result = evaluate(llamarec_data, ranker, split="test", limit_users=2)
        assert gen.script == []
        assert gen.budgets == [40, 40]  # one batched call per user, no retries

        report = ranker.report()
        assert report["explanations"] == 4
        assert report["explanations_llm"] == 2
        assert report["rewrites"] == 4
        assert report["rewrite_acceptance"] == pytest.approx(0.5)
        assert report["explain_seconds"] > 0
        assert result.config["explanations"] == 4

        lines = _users(write_report(result, tmp_path))
        assert [line["user"] for line in lines] == result.user_ids.tolist()
        first, second = (line["explanations"] for line in lines)
        assert [e["source"] for e in first] == ["template", "llm"]
        assert [e["source"] for e in second] == ["template", "llm"]
        assert "Some Film Never Seen" in first[0]["rejected"]
        assert "restates" in second[0]["rejected"]
        for e in first + second:
            assert e["text"]
            if e["source"] == "template":
                assert e["text"] == e["template"]
            else:
                assert e["text"].startswith("You may enjoy ")
                assert e["rejected"] is None
        summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
        assert summary["config"]["explanations_llm"] == 2
        assert summary["config"]["explain_top"] == 2

        # the explained items are each user's top two of the final ranking, under the
        # labels the ranking prompt showed them with
        cases = llamarec_data.cases("test").head(2)
        batch = UserBatch(cases.user_ids, cases.histories, cases.ratings)
        gen.script = []
        scores = ranker.score(batch)
        queries, deep = ranker._retrieve(batch, ranker.config.n_candidates)
        scored = ranker.ranker.score_batch(
            [
                {
                    "user_key": q.user_id.item(),  # the pipeline keys by the plain id
                    "history": [
                        (llamarec_data.catalog.item_ids[p], str(llamarec_data.catalog.titles[p]))
                        for p in q.history
                    ],
                    "candidates": [(c.item_id, c.title) for c in res.candidates],
                }
                for q, res in zip(queries, deep, strict=True)
            ]
        )
        extras = ranker.user_extras(batch)
        for row, (line, extra) in enumerate(zip(lines, extras, strict=True)):
            top = np.argsort(-scores[row], kind="stable")[:2]
            items = llamarec_data.catalog.item_ids[top].tolist()
            assert [e["item"] for e in line["explanations"]] == items
            assert [e["item"] for e in extra["explanations"]] == items
            prompt = scored[row].prompts[0]
            assert [e["label"] for e in line["explanations"]] == [prompt.label_of(i) for i in items]
            history = set(llamarec_data.catalog.item_ids[queries[row].history].tolist())
            for e in extra["explanations"]:
                assert set(e["cited"]) <= history

    def test_labels_when_the_ranking_prompt_does_not_fit(self, llamarec_data: ProtocolData) -> None:
        gen = ScriptedGenerator(real_generator().tokenizer)
        ranker = _ranker(gen, explain_top=3, prompt={"max_prompt_tokens": 64})
        cases = llamarec_data.cases("test").head(2)
        batch = UserBatch(cases.user_ids, cases.histories, cases.ratings)
        ranker.fit(llamarec_data.catalog, llamarec_data.fit_rows("test"))
        scores = ranker.score(batch)
        assert ranker.report()["degraded"] == 2  # no prompt fits: retrieval order
        queries, deep = ranker._retrieve(batch, ranker.config.n_candidates)
        for row, extra in enumerate(ranker.user_extras(batch)):
            ids = deep[row].item_ids
            order = ranker.ranker.builder.order(queries[row].user_id.item(), len(ids), 0)
            shown = {ids[i]: LABELS[j] for j, i in enumerate(order)}  # as a prompt would
            top = llamarec_data.catalog.item_ids[np.argsort(-scores[row], kind="stable")[:3]]
            assert top.tolist() == ids[:3]  # retrieval order
            assert [e["item"] for e in extra["explanations"]] == ids[:3]
            assert [e["label"] for e in extra["explanations"]] == [shown[i] for i in ids[:3]]
            assert all(e["source"] == "llm" for e in extra["explanations"])

    def test_off_by_default(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        gen = ScriptedGenerator(real_generator().tokenizer)
        ranker = _ranker(gen)
        assert ranker.config.explain_top == 0
        result = evaluate(llamarec_data, ranker, split="test", limit_users=2)
        assert gen.prompts == []
        assert result.extras == ()
        assert set(_users(write_report(result, tmp_path))[0]) == {
            "user",
            "target",
            "rank",
            "top",
            "seconds",
        }
        report = ranker.report()
        assert (report["explanations"], report["rewrites"]) == (0, 0)
        assert report["rewrite_acceptance"] == 0.0

    def test_explain_top_validated(self) -> None:
        with pytest.raises(ConfigError, match="explain_top=5 exceeds n_candidates=4"):
            make_ranker("llm", {"n_candidates": 4, "explain_top": 5})
        with pytest.raises(ConfigError, match="explain_top=-1"):
            make_ranker("llm", {"explain_top": -1})

    def test_real_model_explains_one_user(
        self, llamarec_data: ProtocolData, tmp_path: Path
    ) -> None:
        generator = real_generator()
        ranker = _ranker(generator, explain_top=1)
        result = evaluate(llamarec_data, ranker, split="test", limit_users=1)
        (line,) = _users(write_report(result, tmp_path))
        (explanation,) = line["explanations"]
        cases = llamarec_data.cases("test").head(1)
        history = set(llamarec_data.catalog.item_ids[cases.histories[0]].tolist())
        assert explanation["label"] in LABELS[: ranker.config.n_candidates]
        assert explanation["text"]
        assert set(explanation["cited"]) <= history
        # a 135M model's rewrite may fail a check (a title echo, a cut-off sentence):
        # then the evidence sentence is shown, with the reason
        if explanation["source"] == "llm":
            assert explanation["rejected"] is None
        else:
            assert explanation["text"] == explanation["template"]
            assert explanation["rejected"].startswith("rejected: ")
        report = ranker.report()
        assert report["explanations"] == 1
        assert report["rewrites"] == 1
        assert report["explanations_llm"] == int(explanation["source"] == "llm")
        assert report["backend"] == "transformers"


class _ExtrasRanker(PopularityRanker):
    """Popularity with per-user extras, some of them broken on request."""

    name = "popularity"

    def __init__(self, mode: str = "ok") -> None:
        super().__init__()
        self.mode = mode

    def user_extras(self, batch: UserBatch) -> list[dict[str, Any]]:
        if self.mode == "short":
            return [{}]
        if self.mode == "reserved":
            return [{"rank": 1} for _ in batch.user_ids]
        return [{"note": f"user {u}", "score": np.float32(0.5)} for u in batch.user_ids]


class TestUserExtrasHook:
    def test_extras_reach_users_jsonl(self, llamarec_data: ProtocolData, tmp_path: Path) -> None:
        result = evaluate(llamarec_data, _ExtrasRanker(), limit_users=3, batch_size=2)
        assert len(result.extras) == 3
        lines = _users(write_report(result, tmp_path))
        for line, uid in zip(lines, result.user_ids.tolist(), strict=True):
            assert line["note"] == f"user {uid}"
            assert line["score"] == 0.5
            assert set(line) == {"user", "target", "rank", "top", "seconds", "note", "score"}

    def test_default_hook_adds_nothing(self, llamarec_data: ProtocolData) -> None:
        ranker = PopularityRanker()
        batch = UserBatch(np.array([1, 2]), (np.empty(0, np.int64),) * 2)
        assert ranker.user_extras(batch) == [{}, {}]
        assert evaluate(llamarec_data, ranker, limit_users=2).extras == ()

    @pytest.mark.parametrize(
        ("mode", "message"),
        [
            ("short", "returned 1 user extras for a batch of 2 users"),
            ("reserved", r"reserved key\(s\) \['rank'\]"),
        ],
    )
    def test_broken_extras(self, llamarec_data: ProtocolData, mode: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            evaluate(llamarec_data, _ExtrasRanker(mode), limit_users=2)


class TestExemplars:
    @pytest.mark.parametrize("selection", ["fixed", "similar"])
    def test_seeded_in_fit_from_training_rows_only(
        self, llamarec_data: ProtocolData, selection: str
    ) -> None:
        gen = ScriptedGenerator(real_generator().tokenizer)
        exemplars = {"k": 2, "n_seed": 40, "selection": selection}
        ranker = _ranker(gen, exemplars=exemplars)
        data = llamarec_data
        ranker.fit(data.catalog, data.fit_rows("test"))
        pool = ranker.exemplars
        assert pool is not None
        assert len(pool) == 40
        held: dict[Any, set[Any]] = {}
        for rows in (data.validation, data.test):
            for u, i in zip(rows.user_ids.tolist(), rows.item_ids.tolist(), strict=True):
                held.setdefault(u, set()).add(i)
        train = data.train
        for ex in pool:
            own = set(train.item_ids[train.user_ids == ex.user_id].tolist())
            assert {*ex.history_ids, ex.chosen_id} <= own
            assert not held[ex.user_id] & {*ex.history_ids, ex.chosen_id}
            assert len(ex.candidates) == 5

        # score the owners of the exemplars a prompt would pick first, plus two others:
        # nobody is shown an exemplar built from their own data
        cases = data.cases("test")
        tokenizer = gen.tokenizer
        owners = set()
        for row in range(6):
            history = [str(data.catalog.titles[p]) for p in cases.histories[row]]
            owners |= {e.user_id for e in pool.select(history, tokenizer=tokenizer)}
        rows = [*[i for i, u in enumerate(cases.user_ids.tolist()) if u in owners][:4], 0, 1]
        batch = UserBatch(
            cases.user_ids[rows],
            tuple(cases.histories[i] for i in rows),
            tuple(cases.ratings[i] for i in rows),
        )
        queries, results = ranker._retrieve(batch, ranker.config.n_candidates)
        outcomes = ranker.pipeline.rerank(queries, results, data.catalog)
        own_users = 0
        for q, outcome in zip(queries, outcomes, strict=True):
            assert outcome.scores is not None
            (prompt,) = outcome.scores.prompts
            assert len(prompt.exemplar_ids) == 2
            assert all(pool.get(e).user_id != q.user_id for e in prompt.exemplar_ids)
            own_users += q.user_id in {e.user_id for e in pool}
        assert own_users >= 1  # some scored users do own exemplars
        assert ranker.report()["exemplar_pool"] == 40

    def test_off_by_default(self, llamarec_data: ProtocolData) -> None:
        assert LLMRankerConfig().exemplars.k == 0
        ranker = _ranker(ScriptedGenerator(real_generator().tokenizer))
        ranker.fit(llamarec_data.catalog, llamarec_data.fit_rows("test"))
        assert ranker.exemplars is None
        assert ranker.report()["exemplar_pool"] == 0


def test_toml_config_sets_explanations_and_exemplars(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        '[eval]\nranker = "llm"\n\n[eval.ranker_config]\nexplain_top = 2\n\n'
        '[eval.ranker_config.exemplars]\nselection = "fixed"\n\n'
        "[eval.ranker_config.explain]\nmax_tokens = 60\n",
        encoding="utf-8",
    )
    cfg = load_config(path)
    ranker = make_ranker(cfg.eval.ranker, cfg.eval.ranker_config)
    assert isinstance(ranker, LLMRanker)
    assert ranker.config.explain_top == 2
    assert ranker.config.explain.max_tokens == 60
    assert (ranker.config.exemplars.k, ranker.config.exemplars.selection) == (2, "fixed")
    path.write_text('[eval]\nranker = "llm"\nranker_config = {explain_tpo = 2}\n', encoding="utf-8")
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="unknown key 'explain_tpo'"):
        make_ranker(cfg.eval.ranker, cfg.eval.ranker_config)
