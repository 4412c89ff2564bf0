"""The GGUF's tokenizer, built once and then loaded from its saved form: both encode, decode and
apply the chat template alike."""
import pytest

from airfoil.compiler.model import smollm2_gguf_path
from airfoil.compiler.tokenizer import load_tokenizer
from airfoil.host.runtime import chat_prompt, end_of_turn_tokens


@pytest.fixture(scope="module")
def text():
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))[:20_000] + " naïve café 東京 \\t\\n  <|im_end|>"


def test_the_saved_tokenizer_equals_the_one_built_from_the_gguf(tmp_path, text):
    gguf = smollm2_gguf_path()
    built = load_tokenizer.__wrapped__(gguf, cache_root=None)
    first = load_tokenizer.__wrapped__(gguf, cache_root=tmp_path)  # builds and saves
    (saved_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    assert (saved_dir / "tokenizer_config.json").exists()
    saved = load_tokenizer.__wrapped__(gguf, cache_root=tmp_path)  # loads the saved form
    for tok in (first, saved):
        ids = tok.encode(text)
        assert ids == built.encode(text) and len(ids) > 4000
        assert tok.decode(ids) == built.decode(ids)
        assert chat_prompt(tok, "What is the capital of France?") == chat_prompt(built, "What is the capital of France?")
        assert end_of_turn_tokens(tok) == end_of_turn_tokens(built) and len(end_of_turn_tokens(tok)) >= 1
        assert (tok.bos_token_id, tok.eos_token_id, len(tok)) == (built.bos_token_id, built.eos_token_id, len(built))
