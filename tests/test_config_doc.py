"""docs/config.md is generated from the config declarations: every field is described where it is
declared, and the committed file is what the generator writes."""

import pytest
from pydantic import BaseModel, Field

from e2e_sae.config_doc import field_rows, markdown_table
from sweeps.config_doc import DOC, main, render


def test_docs_config_md_is_current():
    assert DOC.read_text() == render(), "docs/config.md is stale: run `python -m sweeps.config_doc` and commit it"
    assert main(["--check"]) == 0


def test_every_field_of_run_config_group_and_sweep_file_is_described():
    text = render()
    for key in ("`train.n_samples`", "`loss.sparsity.coeff`", "`group.members.name`", "`axes.mode`"):
        assert key in text
    assert all(row.count(" | ") >= 3 for row in text.splitlines() if row.startswith("| `"))


def test_a_field_without_a_description_is_an_error_naming_it():
    class Inner(BaseModel):
        k: int = Field(default=16, description="how many")
        undocumented: float = 1.0

    class Outer(BaseModel):
        inner: Inner = Field(description="nested")

    with pytest.raises(ValueError, match=r"Inner.undocumented \(inner.undocumented\) has no description"):
        field_rows(Outer)


def test_rows_show_nested_keys_types_and_defaults_as_yaml_spells_them():
    class Inner(BaseModel):
        k: int | None = Field(default=None, description="a | pipe")
        on: bool = Field(default=True, description="switch")

    class Outer(BaseModel):
        inner: dict[str, Inner] = Field(description="by name")
        n: int = Field(description="required one")

    table = markdown_table(Outer)
    assert "| `inner.<name>.k` | int \\| null | `null` | a \\| pipe |" in table
    assert "| `inner.<name>.on` | bool | `true` | switch |" in table
    assert "| `n` | int | required | required one |" in table
