"""Fixtures shared by the whole suite: tokenizers and the real environments (started once per session)."""

import pytest

from dmpo_trl.testing import make_tokenizer


@pytest.fixture(scope="session")
def tok():
    """A byte-level BPE with Qwen2.5's real chat template (`dmpo_trl.testing.make_tokenizer`)."""
    return make_tokenizer("qwen2_5")


@pytest.fixture(scope="session")
def twx():
    """TextWorld-Express `coin` (a JVM process, shared by the tests that only read from it)."""
    from dmpo_trl.envs import make_env

    env = make_env("textworld-express", "coin")
    yield env
    env.close()


@pytest.fixture(scope="session")
def sciworld():
    """ScienceWorld `lifespan-longest-lived`."""
    from dmpo_trl.envs import make_env

    env = make_env("scienceworld", "lifespan-longest-lived")
    yield env
    env.close()


@pytest.fixture(autouse=True, scope="session")
def _reference_score_store(tmp_path_factory):
    """Reference scores go to a store of this session (subprocesses inherit it), never to ~/.cache."""
    import os

    from dmpo_trl.core.ref_cache import REF_CACHE_ENV

    previous = os.environ.get(REF_CACHE_ENV)
    os.environ[REF_CACHE_ENV] = str(tmp_path_factory.mktemp("reference_scores"))
    yield
    if previous is None:
        os.environ.pop(REF_CACHE_ENV, None)
    else:
        os.environ[REF_CACHE_ENV] = previous
