"""The tokenizer and chat template stored in a GGUF file."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

__all__ = ["load_tokenizer", "quiet_transformers"]


def quiet_transformers() -> None:
    """Silence transformers' warnings and progress bars (its GGUF conversion bar ignores its own switch)."""
    import logging
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)


# Building the tokenizer from a GGUF parses all of its metadata (SmolLM2: about 15 s here); its
# saved form loads in well under a second.  Keyed by the file's path, size and time and the
# transformers version; a build output like the Verilator builds (``make clean`` removes it).
CACHE_ROOT = Path(__file__).resolve().parents[1] / "build" / "tokenizers"


def _cache_dir(gguf: Path, root: Path) -> Path:
    import transformers

    st = gguf.stat()
    key = f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}"
    return root / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


@lru_cache(maxsize=4)
def load_tokenizer(gguf_path: str | Path, cache_root: Path | None = CACHE_ROOT):
    """A ``transformers`` fast tokenizer built from the GGUF's own vocabulary and merges (and its
    chat template), saved under ``cache_root`` the first time and loaded from there after."""
    from transformers import AutoTokenizer

    quiet_transformers()
    p = Path(gguf_path)
    cached = _cache_dir(p, cache_root) if cache_root is not None else None
    if cached is not None and (cached / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(cached))
    tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    if cached is not None:
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=_mkdir(cache_root)))
        try:
            tok.save_pretrained(str(tmp))
            os.replace(tmp, cached)  # atomic; another process that got there first wins
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tok


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
