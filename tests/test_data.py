"""Token streams: every local source kind, fixed n_ctx chunks, seeded order, exact resume."""

import json

import pytest
import torch

from e2e_sae.config import ConfigError, DataSource
from e2e_sae.data import RowStream, TensorStream, check_held_out, load_eval_tokens, open_train_stream


@pytest.fixture
def text_tokenizer(tmp_path):
    """A real word-level tokenizer saved as an HF tokenizer directory (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["the cat sat on the mat . a dog ran"] * 4, trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"])
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="[UNK]")
    fast.save_pretrained(tmp_path / "tok")
    return fast


def test_raw_text_is_tokenised_with_eos_and_chunked(tmp_path, text_tokenizer):
    (tmp_path / "a.txt").write_text("the cat sat on the mat .\na dog ran\n")
    stream = open_train_stream(DataSource(name=str(tmp_path / "a.txt")), n_ctx=4, seed=0, tokenizer=text_tokenizer)
    batch = stream.next_batch(3)
    assert batch.shape == (3, 4) and batch.dtype == torch.long
    eos = text_tokenizer.eos_token_id
    assert (batch == eos).sum() >= 2  # one EOS after each text row


def test_load_from_disk_and_parquet_pretokenised(tmp_path):
    import datasets

    rows = {"input_ids": [[i, i + 1, i + 2, i + 3] for i in range(10)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "rows.parquet"))
    for name in ("saved", "rows.parquet"):
        batch = open_train_stream(DataSource(name=str(tmp_path / name)), 4, seed=0, tokenizer=None).next_batch(10)
        assert sorted(batch[:, 0].tolist()) == list(range(10))  # each row one chunk, shuffled
        assert (batch[:, 1:] - batch[:, :-1] == 1).all()


@pytest.mark.parametrize("kind", ["rows", "tensor"])
def test_order_is_seeded_and_resume_continues_exactly(tmp_path, kind):
    def make(seed):
        if kind == "tensor":
            return TensorStream(torch.arange(200).view(50, 4), seed)
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps({"input_ids": list(range(i * 3, i * 3 + 3))}) + "\n" for i in range(30)))
        return RowStream(DataSource(name=str(path)), 4, seed, tokenizer=None)

    a, b, c = make(1), make(1), make(2)
    first = [a.next_batch(7) for _ in range(3)]
    assert all(torch.equal(x, b.next_batch(7)) for x in first)
    assert not torch.equal(first[0], c.next_batch(7))
    state = a.state()
    expected = [a.next_batch(7) for _ in range(20)]  # crosses epoch boundaries
    resumed = make(1)
    resumed.restore(state)
    assert all(torch.equal(x, resumed.next_batch(7)) for x in expected)


def test_eval_tokens_are_the_first_rows_unshuffled(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [i] * 4}) + "\n" for i in range(5)))
    tokens = load_eval_tokens(DataSource(name=str(path)), 4, 3, tokenizer=None)
    assert tokens[:, 0].tolist() == [0, 1, 2]


def test_eval_must_be_held_out():
    with pytest.raises(ConfigError, match="data.eval: same source and split"):
        check_held_out(DataSource(name="openwebtext"), DataSource(name="openwebtext"))
    check_held_out(DataSource(name="openwebtext"), DataSource(name="openwebtext", split="test"))


def test_eval_set_larger_than_the_source_is_an_error_not_a_repeat(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps({"input_ids": [i] * 4}) + "\n" for i in range(3)))
    with pytest.raises(ConfigError, match="data.n_eval_samples"):
        load_eval_tokens(DataSource(name=str(path)), 4, 5, tokenizer=None)
