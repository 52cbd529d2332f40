"""Clear errors: unknown environment/task/parameter, Java missing, a crashed environment process, misuse."""

from __future__ import annotations

import pytest

from dmpo_trl.envs import (
    DMPOEnvError,
    EnvCrashedError,
    JavaNotFoundError,
    UnknownTaskError,
    default_task,
    make_env,
)
from tests.envs.toy_env import KeyDoorEnv


def test_unknown_environment_and_tasks_name_the_known_ones():
    with pytest.raises(UnknownTaskError, match="known environments: textworld-express, scienceworld"):
        make_env("alfworld")
    with pytest.raises(UnknownTaskError, match="no task 'treasure'.*coin.*mapreader"):
        make_env("textworld-express", "treasure")
    with pytest.raises(UnknownTaskError, match="no task 'boil-water'.*lifespan-longest-lived"):
        make_env("scienceworld", "boil-water")
    assert default_task("twx") == "coin" and default_task("sciworld") == "lifespan-longest-lived"


def test_unknown_game_parameter_and_variation():
    with pytest.raises(UnknownTaskError, match=r"Unrecognized property name \(numRooms\).*numLocations"):
        make_env("textworld-express", "coin", game_params="numRooms=3")
    env = make_env("scienceworld", "lifespan-longest-lived")
    try:
        with pytest.raises(UnknownTaskError, match="has variations 0..124, got 500"):
            env.reset(500)
    finally:
        env.close()


@pytest.mark.parametrize("env_name", ["textworld-express", "scienceworld"])
def test_java_missing(env_name, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.setenv("JAVA_HOME", "/opt/jdk-17")
    with pytest.raises(JavaNotFoundError) as info:
        make_env(env_name)
    message = str(info.value)
    assert "needs Java" in message and "openjdk" in message
    assert "JAVA_HOME is set to '/opt/jdk-17'" in message and "/opt/jdk-17/bin" in message


def test_java_missing_without_java_home(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(JavaNotFoundError, match="no `java` executable was found on PATH") as info:
        make_env("twx")
    assert "JAVA_HOME" not in str(info.value)


@pytest.mark.parametrize("env_name", ["textworld-express", "scienceworld"])
def test_crashed_environment_process(env_name):
    env = make_env(env_name)
    env.reset(env.variations("train")[0])
    proc = env._raw._gateway.java_process
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(EnvCrashedError, match=r"crashed or stopped answering \(the Java process exited with status"):
        env.step("look around")
    env.close()  # closing a dead environment is fine


def test_step_outside_an_episode():
    env = KeyDoorEnv()
    with pytest.raises(DMPOEnvError, match="call reset"):
        env.step("look around")
    env.reset(0)
    for action in env.gold_actions():
        env.step(action)
    assert env.done and env.success
    with pytest.raises(DMPOEnvError, match="the episode is over"):
        env.step("look around")


def test_base_bookkeeping():
    env = KeyDoorEnv()
    env.reset(2)
    first = env.step("take green key")
    assert (first.score, first.reward, first.valid, env.num_steps) == (
        pytest.approx(1 / 3),
        pytest.approx(1 / 3),
        True,
        1,
    )
    bad = env.step("dance")
    assert not bad.valid and bad.reward == 0 and env.num_steps == 2


def test_scienceworld_observation_comparison_ignores_listing_order_only():
    from dmpo_trl.envs.scienceworld import ScienceWorldAgentEnv

    same = ScienceWorldAgentEnv.same_observation
    a = "In it, you see: \n\ta wood cup (containing red paint)\n\ta wood cup (containing blue paint)\nYou also see:"
    b = "In it, you see: \n\ta wood cup (containing blue paint)\n\ta wood cup (containing red paint)\nYou also see:"
    c = "In it, you see: \n\ta wood cup (containing blue paint)\n\ta wood cup (containing green paint)\nYou also see:"
    assert same(None, a, b) and not same(None, a, c)
    assert KeyDoorEnv().same_observation("x y", "x y") and not KeyDoorEnv().same_observation("x y", "y x")


def test_textworld_express_is_deterministic_per_seed():
    env = make_env("twx", "coin")
    try:
        first = [env.reset(s).observation for s in (1, 2, 20001)]
        again = [env.reset(s).observation for s in (1, 2, 20001)]
        assert first == again and len(set(first)) > 1
    finally:
        env.close()
