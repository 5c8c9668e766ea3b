"""Tests for ragrec.config: defaults, TOML files, overrides and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragrec.config import (
    DataConfig,
    EvalConfig,
    RagrecConfig,
    RecommenderConfig,
    load_config,
    to_toml,
)
from ragrec.errors import ConfigError
from ragrec.eval import DEFAULT_METRICS


def _write(tmp_path: Path, text: str, name: str = "ragrec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    cfg = load_config()
    assert cfg == RagrecConfig()
    assert cfg.data == DataConfig(path="movielens-small", on_invalid="error", cache_dir=None)
    ev = cfg.eval
    assert (ev.protocol, ev.split, ev.ranker) == ("llamarec", "test", "popularity")
    assert ev.ranker_config == {}
    assert ev.metrics == list(DEFAULT_METRICS)
    assert (ev.seed, ev.batch_size, ev.limit_users) == (0, 256, None)


def test_every_field_is_documented() -> None:
    for model in (DataConfig, EvalConfig):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name}"


def test_models_are_frozen() -> None:
    cfg = load_config()
    with pytest.raises(ValueError, match="frozen"):
        cfg.eval.split = "validation"  # type: ignore[misc]


def test_load_from_toml(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[data]
path = "/data/ml-latest-small"
on_invalid = "drop"

[eval]
split = "validation"
ranker = "random"
metrics = ["ndcg@10", "recall@20"]
limit_users = 50

[eval.ranker_config]
seed = 4
""",
    )
    cfg = load_config(path)
    assert cfg.data.path == "/data/ml-latest-small"
    assert cfg.data.on_invalid == "drop"
    assert cfg.eval.split == "validation"
    assert cfg.eval.ranker == "random"
    assert cfg.eval.ranker_config == {"seed": 4}
    assert cfg.eval.metrics == ["ndcg@10", "recall@20"]
    assert cfg.eval.limit_users == 50
    assert cfg.eval.batch_size == 256  # untouched defaults stay
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[eval]\nrankr = "random"\n', "eval.rankr"),
        ('[data]\npaht = "x"\n', "data.paht"),
        ("[evaluation]\nsplit = 'test'\n", "evaluation"),
    ],
)
def test_unknown_key_is_named(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown key '{key}'") as info:
        load_config(_write(tmp_path, text))
    assert "ragrec.toml" in str(info.value)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ('[eval]\nsplit = "tst"\n', "eval.split", "'tst'"),
        ('[data]\non_invalid = "skip"\n', "data.on_invalid", "'skip'"),
        ("[eval]\nbatch_size = 0\n", "eval.batch_size", "0"),
        ('[eval]\nseed = "one"\n', "eval.seed", "'one'"),
    ],
)
def test_invalid_value_names_field_and_value(
    tmp_path: Path, text: str, field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert f"{field}={value}" in str(info.value)


def test_invalid_override_is_named() -> None:
    with pytest.raises(ConfigError, match=r"eval\.split='tst'"):
        load_config(eval={"split": "tst"})


def test_malformed_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[eval\nsplit = \n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path = tmp_path
    else:
        path = tmp_path / "bad.toml"
        path.write_bytes(b"\xff\xfe[eval]\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(path)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = _write(tmp_path, "eval = 3\n")
    with pytest.raises(ConfigError, match="eval"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"\[eval\] must be a table"):
        load_config(path, eval={"split": "test"})


def test_overrides_replace_file_values_and_none_is_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, '[data]\npath = "a"\n\n[eval]\nsplit = "validation"\nseed = 5\n')
    cfg = load_config(
        path,
        data={"path": None, "on_invalid": "drop"},
        eval={"split": "test", "ranker": None, "seed": None, "limit_users": 9},
    )
    assert cfg.data.path == "a"
    assert cfg.data.on_invalid == "drop"
    assert cfg.eval.split == "test"
    assert cfg.eval.ranker == "popularity"
    assert cfg.eval.seed == 5
    assert cfg.eval.limit_users == 9
    assert load_config(path, eval=None) == load_config(path)


def test_overrides_without_a_file() -> None:
    cfg = load_config(eval={"ranker": "random", "split": None})
    assert cfg.eval.ranker == "random"
    assert cfg.eval.split == "test"


@pytest.mark.parametrize(
    "cfg",
    [
        RagrecConfig(),
        RagrecConfig(
            data=DataConfig(path="/x/ml", on_invalid="drop", cache_dir="/tmp/cache"),
            eval=EvalConfig(
                split="validation",
                ranker="popularity",
                ranker_config={"window_days": 30.5},
                metrics=["mrr@10"],
                seed=11,
                batch_size=64,
                limit_users=100,
            ),
            recommender=RecommenderConfig.model_validate(
                {
                    "retriever": {"channels": [{"kind": "popularity"}, {"kind": "ease"}]},
                    "llm_candidates": 5,
                    "score_with_llm": True,
                    "feedback_url": "postgresql://db/ragrec",
                }
            ),
        ),
    ],
)
def test_to_toml_round_trips(tmp_path: Path, cfg: RagrecConfig) -> None:
    text = to_toml(cfg)
    assert "[eval]" in text
    assert load_config(_write(tmp_path, text)) == cfg


def test_recommender_table_is_validated(tmp_path: Path) -> None:
    path = _write(tmp_path, "[recommender]\nllm_candidates = 7\n\n[recommender.prompt]\nseed = 3\n")
    cfg = load_config(path)
    assert cfg.recommender.llm_candidates == 7
    assert cfg.recommender.prompt.seed == 3
    assert cfg.recommender.retriever == RecommenderConfig().retriever
    with pytest.raises(ConfigError, match="llm_candidatez"):
        load_config(_write(tmp_path, "[recommender]\nllm_candidatez = 7\n"))
    with pytest.raises(ConfigError, match="llm_candidates"):
        load_config(recommender={"llm_candidates": 99})


def test_the_table_models_live_with_their_packages() -> None:
    from ragrec import RecommenderConfig as Recommender
    from ragrec.data import DataConfig as Data
    from ragrec.eval import EvalConfig as Eval

    assert (DataConfig, EvalConfig, RecommenderConfig) == (Data, Eval, Recommender)
