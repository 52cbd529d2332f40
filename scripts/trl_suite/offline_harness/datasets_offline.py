"""Offline stand-ins for the `trl-internal-testing/*` Hub datasets used by TRL's DPOTrainer tests.

The rows are those of TRL's generation scripts (scripts/generate_zen_dataset.py, generate_toolcall_dataset.py,
generate_harmony_dataset.py): 19 Zen-of-Python rows split `train_test_split(test_size=0.1, shuffle=False)` into 17 train
and 2 test rows; toolcall: 8 rows (7 / 1). Each (repo, config) is written once as parquet files and `load_dataset` is
redirected to the real `datasets.load_dataset("parquet", data_files=...)`, so `split=`, `streaming=True` (a real
`IterableDataset`), `DatasetDict` and the arrow cache behave as with the Hub.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .tiny_hub import HARNESS_VERSION


# fmt: off
ZEN_PROMPTS = ["Beautiful is better than", "Explicit is", "Simple is better", "Complex", "Flat is better than",
    "Sparse is better", "Readability", "Special cases aren't special", "Although practicality beats",
    "Errors should never", "Unless explicitly", "In the face of ambiguity, refuse",
    "There should be one-- and preferably", "Although that way may not be obvious at first unless you're", "Now is",
    "Although never is often", "If the implementation is hard to explain,", "If the implementation is easy",
    "Namespaces are one honking great"]
ZEN_CHOSEN = [" ugly.", " better than implicit.", " than complex.", " is better than complicated.", " nested.",
    " than dense.", " counts.", " enough to break the rules.", " purity.", " pass silently.", " silenced.",
    " the temptation to guess.", " only one --obvious way to do it.", " Dutch.", " better than never.",
    " better than *right* now.", " it's a bad idea.", " to explain, it may be a good idea.",
    " idea -- let's do more of those!"]
ZEN_REJECTED = [" the moon.", " worse than nothing.", " than a long vacation.", " is always the answer.", " chocolate.",
    " without any context.", " is optional.", " enough to become unicorns.", " reality.", " pass their driving test.",
    " forgotten.", " the opportunity to laugh.", " two or more confusing methods.", " a time traveler.",
    " never better.", " not even a possibility.", " it's clearly the best choice.", " it's probably magic.",
    " watermelon -- let's plant some!"]
ZEN_IMPLICIT_CHOSEN = ["Beautiful is better than ugly.", "Explicit is better than implicit.",
    "Simple is better than complex.", "Complex is better than complicated.", "Flat is better than nested.",
    "Sparse is better than dense.", "Readability counts.", "Special cases aren't special enough to break the rules.",
    "Although practicality beats purity.", "Errors should never pass silently.", "Unless explicitly silenced.",
    "In the face of ambiguity, refuse the temptation to guess.",
    "There should be one-- and preferably only one --obvious way to do it.",
    "Although that way may not be obvious at first unless you're Dutch.", "Now is better than never.",
    "Although never is often better than *right* now.", "If the implementation is hard to explain, it's a bad idea.",
    "If the implementation is easy to explain, it may be a good idea.",
    "Namespaces are one honking great idea -- let's do more of those!"]
ZEN_IMPLICIT_REJECTED = ["Beautiful is better than the moon.", "Explicit is worse than nothing.",
    "Simple is better than a long vacation.", "Complex is always the answer.", "Flat is better than chocolate.",
    "Sparse is better without any context.", "Readability is optional.",
    "Special cases aren't special enough to become unicorns.", "Although practicality beats reality.",
    "Errors should never pass their driving test.", "Unless explicitly forgotten.",
    "In the face of ambiguity, refuse the opportunity to laugh.",
    "There should be one-- and preferably two or more confusing methods.",
    "Although that way may not be obvious at first unless you're a time traveler.", "Now is never better.",
    "Although never is often not even a possibility.",
    "If the implementation is hard to explain, it's clearly the best choice.",
    "If the implementation is easy it's probably magic.",
    "Namespaces are one honking great watermelon -- let's plant some!"]
UNPAIRED_COMPLETION = [" ugly.", " worse than nothing.", " than a long vacation.", " is better than complicated.",
    " nested.", " without any context.", " counts.", " enough to become unicorns.", " purity.", " pass silently.",
    " forgotten.", " the temptation to guess.", " only one --obvious way to do it.", " a time traveler.",
    " better than never.", " not even a possibility.", " it's a bad idea.", " it's probably magic.",
    " watermelon -- let's plant some!"]
UNPAIRED_LABEL = [True, False, False, True, True, False, True, False, True, True, False, True, True, False, True, False,
    True, False, False]
CONV_QUESTIONS = ["What is better than ugly?", "What is better than implicit?", "What is better than complex?",
    "What is better than complicated?", "What is better than nested?", "What is better than dense?", "What counts?",
    "Are special cases enough to break the rules?", "What beats purity?", "What should never pass silently?",
    "When can errors pass silently?", "What should you do in the face of ambiguity?",
    "How many ways should there be to do it?", "For whom may the way not be obvious at first?",
    "What is better than never?", "Is never better than *right* now?",
    "What does it mean if the implementation is hard to explain?",
    "What does it mean if the implementation is easy to explain?", "Any great ideas?"]
CONV_CHOSEN = ["Beautiful.", "Explicit.", "Simple.", "Complex.", "Flat.", "Sparse.", "Readability.",
    "No, special cases aren't special enough to break the rules.", "Practicality.", "Errors.",
    "When explicitly silenced.", "Refuse the temptation to guess.", "One, and preferably only one.", "Dutch.",
    "Now is better than never.", "Yes, often.", "It means it's a bad idea.", "It means it may be a good idea.",
    "Namespaces are one honking great idea."]
CONV_REJECTED = ["Acceptable.", "Explained.", "Very complex.", "Very complicated.", "Circular.", "Heavy.",
    "Looking complicated.", "Yes, special cases are special enough to break the rules.", "Nothing.", "Warnings.",
    "Never.", "Give up.", "As many as possible.", "French.", "Some day.", "No, never.", "It means it's a good idea.",
    "It means it's a bad idea.", "Recursion."]
HARMONY_THINKING = ["Beauty improves clarity and appeal.", "Clarity avoids confusion.", "Simplicity is easier to manage.",
    "Complexity has structure; complication doesn’t.", "Flat structures are easier to read.",
    "Spacing aids understanding.", "Readable code lasts longer.", "Consistency is more valuable.",
    "Real-world needs outweigh ideals.", "Silent errors cause hidden issues.", "Silence must be intentional.",
    "Guessing leads to wrong choices.", "One way reduces confusion.", "A playful nod to Python’s creator.",
    "Action is better than endless delay.", "Rushed action can be worse.", "Good ideas should be clear.",
    "Clarity suggests soundness.", "Namespaces prevent conflicts."]
# fmt: on


def _user(q):
    return [{"role": "user", "content": q}]


def _assistant(a, **kw):
    return [{"role": "assistant", **kw, "content": a}]


def _toolcall_preference():
    from transformers.utils import get_json_schema

    def start_timer(duration: int) -> int:
        """
        Starts a timer for the specified duration in seconds.

        Args:
            duration: Duration in seconds to set the timer for.

        Returns:
            The duration set for the timer.
        """

    def get_current_time(location: str) -> str:
        """
        Returns the current time in the specified location.

        Args:
            location: The location for which to get the current time.

        Returns:
            The current time in the specified location.
        """

    def get_air_quality_index(location: str) -> int:
        """
        Returns the air quality index for the specified location.

        Args:
            location: The location for which to get the air quality index.

        Returns:
            The air quality index for the specified location.
        """

    def play_music(title: str, artist: str) -> dict:
        """
        Plays music by the specified title and artist.

        Args:
            title: The title of the music to play.
            artist: The artist of the music to play.

        Returns:
            A dictionary indicating the status of the music playback.
        """

    def get_weather_forecast(city: str, date: str) -> dict:
        """
        Returns the weather forecast for the specified city and date.

        Args:
            city: The city for which to get the weather forecast.
            date: The date for which to get the weather forecast.

        Returns:
            A dictionary containing the temperature and weather condition.
        """

    def control_light(room: str, state: str) -> dict:
        """
        Controls the light in the specified room.

        Args:
            room: The room where the light should be controlled.
            state: The desired state of the light ("on" or "off").

        Returns:
            A dictionary indicating the state of the light.
        """

    def create_reminder(time: str, note: str) -> str:
        """
        Creates a reminder for the specified time and note.

        Args:
            time: The time for the reminder.
            note: The note for the reminder.

        Returns:
            A confirmation message indicating that the reminder has been set.
        """

    def get_wind_conditions(city: str, unit: str) -> tuple[int, str]:
        """
        Returns the wind conditions for the specified city.

        Args:
            city: The city for which to get the wind conditions.
            unit: The unit of measurement for the wind speed (e.g., "mph").

        Returns:
            A tuple containing the wind speed and direction.
        """

    s = {f.__name__: get_json_schema(f) for f in (start_timer, get_current_time, get_air_quality_index, play_music,
                                                  get_weather_forecast, control_light, create_reminder,
                                                  get_wind_conditions)}  # fmt: skip

    def call(name, args, result, answer):
        return [
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]},
            {"role": "tool", "name": name, "content": result},
            {"role": "assistant", "content": answer},
        ]

    prompts = ["Set a timer for 10 minutes.", "What time is it in Tokyo?", "Is the air clean today in Lisbon?",
               "Play some music.", "What's the weather like tomorrow in Berlin?", "Turn on the living room lights.",
               "Remind me to call mom at 7 PM.", "How strong is the wind in Chicago right now?"]  # fmt: skip
    chosen = [
        call("start_timer", {"duration": 600}, "600", "Timer set for 10 minutes."),
        call("get_current_time", {"location": "Tokyo"}, "06:22:48", "The current time in Tokyo is 06:22 AM."),
        call("get_air_quality_index", {"location": "Lisbon, Portugal"}, "53", "The air quality is moderate."),
        call("play_music", {"title": "Take Five", "artist": "Dave Brubeck"}, "{'status': 'Playing'}", "Enjoy the jazz tunes!"),
        call("get_weather_forecast", {"city": "Berlin", "date": "2025-06-16"}, "{'temperature': 22, 'condition': 'partly cloudy'}", "Tomorrow in Berlin will be partly cloudy with a high of 22°C."),
        call("control_light", {"room": "living room", "state": "on"}, "{'state': 'on'}", "The living room lights are now on."),
        call("create_reminder", {"time": "19:00", "note": "Call mom"}, "Reminder set", "Okay, I’ll remind you to call mom at 7 PM."),
        call("get_wind_conditions", {"city": "Chicago", "unit": "mph"}, "(14, 'NW')", "The wind in Chicago is blowing at 14 mph from the northwest."),
    ]  # fmt: skip
    rejected = [
        call("start_timer", {"duration": 10}, "10", "Timer set for 10 seconds."),
        _assistant("It is 6:22 AM in Tokyo."),
        call("get_air_quality_index", {"location": "Lisbon"}, "53", "The air quality is great."),
        call("play_music", {"title": "Take Five", "artist": "Daft Punk"}, "{'status': 'Playing'}", "Playing your song."),
        _assistant("Tomorrow in Berlin will be hot and sunny."),
        call("control_light", {"room": "living room", "state": "off"}, "{'state': 'off'}", "The living room lights are now off."),
        call("create_reminder", {"time": "07:00", "note": "Call mom"}, "Reminder set", "Okay, I'll remind you to call mom at 7 AM."),
        call("get_weather_forecast", {"city": "Chicago", "date": "2025-06-16"}, "{'temperature': 22, 'condition': 'partly cloudy'}", "Tomorrow in Chicago will be partly cloudy with a high of 22°C."),
    ]  # fmt: skip
    tools = [
        [s["start_timer"], s["create_reminder"]],
        [s["get_current_time"]],
        [s["get_air_quality_index"], s["get_weather_forecast"], s["get_wind_conditions"]],
        [s["play_music"], s["control_light"]],
        [s["get_weather_forecast"], s["get_wind_conditions"]],
        [s["control_light"]],
        [s["start_timer"], s["create_reminder"]],
        [s["get_weather_forecast"], s["get_wind_conditions"]],
    ]
    return {"prompt": [_user(p) for p in prompts], "chosen": chosen, "rejected": rejected, "tools": tools}, "use_json"


def _zen_image(config):
    from PIL import Image

    n = len(CONV_QUESTIONS)
    images = [[Image.new("RGB", (16 + 2 * (i % 3), 16), color=(10 * i, 100, 200))] for i in range(n)]
    if config == "conversational_preference":
        prompt = [
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}] for q in CONV_QUESTIONS
        ]
        chosen = [[{"role": "assistant", "content": [{"type": "text", "text": a}]}] for a in CONV_CHOSEN]
        rejected = [[{"role": "assistant", "content": [{"type": "text", "text": a}]}] for a in CONV_REJECTED]
        return {"images": images, "prompt": prompt, "chosen": chosen, "rejected": rejected}, None
    raise KeyError(config)


def _data(repo: str, config: str):
    n = len(ZEN_PROMPTS)
    if repo == "trl-internal-testing/zen":
        table = {
            "standard_preference": {"prompt": ZEN_PROMPTS, "chosen": ZEN_CHOSEN, "rejected": ZEN_REJECTED},
            "standard_implicit_prompt_preference": {"chosen": ZEN_IMPLICIT_CHOSEN, "rejected": ZEN_IMPLICIT_REJECTED},
            "standard_unpaired_preference": {"prompt": ZEN_PROMPTS, "completion": UNPAIRED_COMPLETION,
                                             "label": UNPAIRED_LABEL},
            "conversational_preference": {
                "prompt": [_user(q) for q in CONV_QUESTIONS],
                "chosen": [_assistant(a) for a in CONV_CHOSEN],
                "rejected": [_assistant(a) for a in CONV_REJECTED],
            },
            "conversational_implicit_prompt_preference": {
                "chosen": [_user(q) + _assistant(a) for q, a in zip(CONV_QUESTIONS, CONV_CHOSEN, strict=True)],
                "rejected": [_user(q) + _assistant(a) for q, a in zip(CONV_QUESTIONS, CONV_REJECTED, strict=True)],
            },
            "standard_prompt_only": {"prompt": ZEN_PROMPTS},
            "conversational_prompt_only": {"prompt": [_user(q) for q in CONV_QUESTIONS]},
        }  # fmt: skip
        return table[config], None
    if repo == "trl-internal-testing/harmony" and config == "preference":
        kwargs = [{"reasoning_effort": ("low", "medium", "high")[i % 3],
                   "model_identity": "You are Tiny ChatGPT, a tiny language model."} for i in range(n)]  # fmt: skip
        return {
            "prompt": [_user(q) for q in CONV_QUESTIONS],
            "chosen": [_assistant(a, thinking=t) for a, t in zip(CONV_CHOSEN, HARMONY_THINKING, strict=True)],
            "rejected": [_assistant(a, thinking=t) for a, t in zip(CONV_REJECTED, HARMONY_THINKING, strict=True)],
            "chat_template_kwargs": kwargs,
        }, None
    if repo == "trl-internal-testing/toolcall" and config == "preference":
        return _toolcall_preference()
    if repo == "trl-internal-testing/zen-image":
        return _zen_image(config)
    raise FileNotFoundError(f"offline harness: no stand-in for dataset {repo!r} config {config!r}")


def materialize(root: Path, repo: str, config: str) -> dict[str, str]:
    """Write the train/test parquet files of (repo, config) once; return {split: path}."""
    from datasets import Dataset

    out = Path(root) / HARNESS_VERSION / repo.replace("/", "--") / config
    files = {split: out / f"{split}.parquet" for split in ("train", "test")}
    if not all(f.exists() for f in files.values()):
        columns, mixed = _data(repo, config)
        ds = Dataset.from_dict(columns, on_mixed_types=mixed) if mixed else Dataset.from_dict(columns)
        dd = ds.train_test_split(test_size=0.1, shuffle=False)
        out.mkdir(parents=True, exist_ok=True)
        for split, f in files.items():
            tmp = f.with_suffix(".tmp")
            dd[split].to_parquet(str(tmp))
            tmp.replace(f)
    return {split: str(f) for split, f in files.items()}


def make_load_dataset(real_load_dataset, root: Path):
    @functools.wraps(real_load_dataset)
    def load_dataset(path, name=None, *args, split=None, streaming=False, **kwargs):
        if isinstance(path, str) and path.startswith("trl-internal-testing/"):
            if name is None:
                raise ValueError(f"offline harness: {path} needs a config name")
            data_files = materialize(root, path, name)
            return real_load_dataset("parquet", data_files=data_files, split=split, streaming=streaming, **kwargs)
        return real_load_dataset(path, name, *args, split=split, streaming=streaming, **kwargs)

    return load_dataset
