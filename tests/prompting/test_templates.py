"""Tests for ragrec.prompting._templates: validation on load, ids and content hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragrec.errors import ConfigError
from ragrec.prompting import (
    DEFAULT_EXPLAIN_TEMPLATE,
    DEFAULT_RANK_TEMPLATE,
    PromptTemplate,
    load_template,
)

RANK_USER = "History:\n{history}\n\nCandidates:\n{candidates}\n\nPick {first_label}-{last_label}."


def _toml(path: Path, user: str, *, system: str = "You rank movies.", **extra: str) -> Path:
    lines = [f"system = {system!r}", f"user = '''{user}'''"]
    lines += [f"{k} = {v!r}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestDefaults:
    @pytest.mark.parametrize("template", [DEFAULT_RANK_TEMPLATE, DEFAULT_EXPLAIN_TEMPLATE])
    def test_defaults_validate(self, template: PromptTemplate) -> None:
        assert PromptTemplate.model_validate(template.model_dump()) == template

    def test_default_variables(self) -> None:
        assert DEFAULT_RANK_TEMPLATE.variables == {
            "history",
            "candidates",
            "query",
            "first_label",
            "last_label",
        }
        assert DEFAULT_EXPLAIN_TEMPLATE.variables == {"item", "evidence", "query"}
        assert DEFAULT_EXPLAIN_TEMPLATE.assistant == "You may enjoy {item}"

    def test_default_hashes_snapshot(self) -> None:
        # A changed default template is a new prompt version: give it a new id, then
        # update these values.
        assert (DEFAULT_RANK_TEMPLATE.id, DEFAULT_RANK_TEMPLATE.hash) == (
            "rank-v1",
            "800895dc98f58d2f",
        )
        assert (DEFAULT_EXPLAIN_TEMPLATE.id, DEFAULT_EXPLAIN_TEMPLATE.hash) == (
            "explain-v2",
            "1218299bf322f5d4",
        )


class TestLoadFromFile:
    def test_valid_file(self, tmp_path: Path) -> None:
        template = load_template(_toml(tmp_path / "mine.toml", RANK_USER))
        assert template.id == "mine"  # the file name when no id is given
        assert template.kind == "rank"
        assert template.system == "You rank movies."
        assert template.user == RANK_USER

    def test_str_path_and_explicit_id(self, tmp_path: Path) -> None:
        path = _toml(tmp_path / "mine.toml", RANK_USER, id="rank-custom-2")
        assert load_template(str(path)).id == "rank-custom-2"

    @pytest.mark.parametrize(
        ("user", "named"),
        [
            ("History: {history}. Pick one.", "candidates"),
            ("Candidates: {candidates}. Pick one.", "history"),
            ("{history} {candidates} {rating}", "rating"),
            ("{history} {candidates} {Candidates}", "Candidates"),
        ],
    )
    def test_missing_or_unknown_variable(self, tmp_path: Path, user: str, named: str) -> None:
        path = _toml(tmp_path / "bad.toml", user)
        with pytest.raises(ConfigError, match=rf"'{named}'") as err:
            load_template(path)
        assert "'bad'" in str(err.value)  # the template is named too

    def test_unknown_variable_in_system_message(self, tmp_path: Path) -> None:
        path = _toml(tmp_path / "bad.toml", RANK_USER, system="You serve {user_name}.")
        with pytest.raises(ConfigError, match=r"unknown variable.*'user_name'"):
            load_template(path)

    def test_unknown_key(self, tmp_path: Path) -> None:
        path = _toml(tmp_path / "bad.toml", RANK_USER, sytem="typo")
        with pytest.raises(ConfigError, match="sytem"):
            load_template(path)

    def test_missing_user_message(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.toml"
        path.write_text("system = 'You rank movies.'\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="user: Field required"):
            load_template(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="not found"):
            load_template(tmp_path / "absent.toml")

    def test_bad_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.toml"
        path.write_text("user = 'unterminated\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
            load_template(path)

    def test_explain_kind(self, tmp_path: Path) -> None:
        path = _toml(tmp_path / "why.toml", "{item}: {evidence}")
        assert load_template(path, kind="explain").kind == "explain"
        with pytest.raises(ConfigError, match="'candidates'"):
            load_template(path, kind="rank")
        # explain templates rewrite the evidence sentence: one without it is refused
        old = _toml(tmp_path / "old.toml", "{history} -> {item} ({label})")
        with pytest.raises(ConfigError, match=r"unknown variable\(s\) \['history', 'label'\]"):
            load_template(old, kind="explain")


class TestLoadFromString:
    def test_valid_string_gets_default_system_and_custom_id(self) -> None:
        template = load_template(RANK_USER)
        assert template.user == RANK_USER
        assert template.system == DEFAULT_RANK_TEMPLATE.system
        assert template.id.startswith("custom-")
        assert load_template(RANK_USER).id == template.id

    def test_missing_candidates(self) -> None:
        with pytest.raises(ConfigError, match=r"lacks required variable\(s\) \['candidates'\]"):
            load_template("History: {history}. Which one next?")

    def test_unknown_variable(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown variable\(s\) \['mood'\]"):
            load_template("{history} {candidates} Mood: {mood}")

    @pytest.mark.parametrize(
        "user",
        ["{history} {candidates:>20}", "{history!r} {candidates}", "{history[0]} {candidates}"],
    )
    def test_fields_must_be_plain_names(self, user: str) -> None:
        with pytest.raises(ConfigError, match="plain name"):
            load_template(user)

    def test_unbalanced_braces(self) -> None:
        with pytest.raises(ConfigError, match="not a valid format string"):
            load_template("{history} {candidates")

    def test_escaped_braces_are_text(self) -> None:
        template = load_template('{history} {candidates} Reply as {{"label": "A"}}')
        assert template.variables == {"history", "candidates"}


class TestHash:
    def test_stable_and_independent_of_id(self) -> None:
        a = PromptTemplate(id="a", system="s", user=RANK_USER)
        b = PromptTemplate(id="b", system="s", user=RANK_USER)
        assert a.hash == b.hash
        assert len(a.hash) == 16
        assert a.hash == PromptTemplate(id="a", system="s", user=RANK_USER).hash

    def test_changes_with_content(self) -> None:
        base = PromptTemplate(id="a", system="s", user=RANK_USER)
        others = [
            PromptTemplate(id="a", system="s.", user=RANK_USER),
            PromptTemplate(id="a", system="s", user=RANK_USER + " "),
            PromptTemplate(id="a", kind="explain", system="s", user="{evidence} {item}"),
            PromptTemplate(
                id="a", kind="explain", system="s", user="{evidence} {item}", assistant="So"
            ),
            PromptTemplate(id="a", system="s", user="{candidates} {history}"),
        ]
        hashes = {base.hash, *(o.hash for o in others)}
        assert len(hashes) == 1 + len(others)

    def test_file_and_string_with_same_content_hash_alike(self, tmp_path: Path) -> None:
        path = _toml(tmp_path / "same.toml", RANK_USER, system=DEFAULT_RANK_TEMPLATE.system)
        assert load_template(path).hash == load_template(RANK_USER).hash
