"""Generate ``data/text_corpus.npz``: a small 4-topic sentence classification corpus (fixed seed).

Sentences are built from templates that mix topic words (sports, technology, food, weather), shared everyday
words, a few words that belong to two topics ("hot", "chips", "cool", "field", "record" ...) and random filler.
A fraction of sentences carry a distractor word from another topic, and a few are nearly topic-free, so the
task is learnable but not trivial (a bag-of-words model lands in the 90s, not at 100%).

    python data/make_text_corpus.py            # rewrites data/text_corpus.npz

The npz holds ``text`` (unicode array, one lower-case sentence per entry, tokens separated by single spaces),
``label`` (int64), ``split`` (unicode "train"/"test"), ``topics`` (label names) and ``seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 2024
PER_TOPIC = 1000          # sentences per topic
TEST_FRACTION = 0.2       # stratified: 200 of each topic go to the test split
DISTRACTOR_RATE = 0.25    # sentences that also get one word of another topic
WEAK_RATE = 0.08          # sentences that keep a single (possibly shared) topic word

TOPICS = ["sports", "technology", "food", "weather"]

VOCAB = {
    "sports": dict(
        subj=["the team", "the coach", "the striker", "our captain", "the goalkeeper", "the runner", "the players",
              "the referee", "the champion", "the fans", "the defender", "the league"],
        verb=["won", "lost", "scored", "trained for", "celebrated", "played", "defended", "missed", "kicked",
              "qualified for", "watched", "cheered"],
        obj=["the match", "the final", "a goal", "the tournament", "the penalty", "the season", "the trophy",
             "the race", "the game", "a medal", "the derby", "the playoffs"],
        adj=["fast", "tired", "unbeaten", "strong", "injured", "brilliant", "defensive", "aggressive"],
        place=["at the stadium", "on the pitch", "in the arena", "on the court", "at the gym", "on the field"],
    ),
    "technology": dict(
        subj=["the engineer", "the startup", "the developer", "the company", "the laptop", "the server",
              "the app", "the robot", "the programmer", "the network", "the phone", "the algorithm"],
        verb=["released", "installed", "updated", "crashed", "debugged", "launched", "compiled", "downloaded",
              "encrypted", "tested", "deployed", "rebooted"],
        obj=["the software", "a new chip", "the database", "the update", "the code", "the processor",
             "the website", "the battery", "the firmware", "the cloud service", "a patch", "the browser"],
        adj=["digital", "wireless", "faster", "buggy", "open source", "encrypted", "smart", "virtual"],
        place=["in the lab", "in the data center", "at the conference", "online", "in the office",
               "on the server"],
    ),
    "food": dict(
        subj=["the chef", "the baker", "my grandmother", "the restaurant", "the waiter", "the cook",
              "the kitchen", "the bakery", "the family", "the guests", "the cafe", "the critic"],
        verb=["cooked", "baked", "tasted", "served", "ordered", "seasoned", "grilled", "roasted", "ate",
              "prepared", "fried", "boiled"],
        obj=["the soup", "a cake", "the pasta", "fresh bread", "the salad", "the curry", "the dessert",
             "the noodles", "the sauce", "a pizza", "the cheese", "the vegetables"],
        adj=["delicious", "spicy", "sweet", "crispy", "salty", "tasty", "creamy", "savory"],
        place=["in the kitchen", "at the restaurant", "at the market", "at dinner", "at the bakery",
               "for lunch"],
    ),
    "weather": dict(
        subj=["the forecast", "the storm", "the wind", "the clouds", "the meteorologist", "the rain",
              "the temperature", "the snow", "the sky", "the fog", "the heatwave", "the radar"],
        verb=["brought", "predicted", "flooded", "covered", "cooled", "warned about", "reached", "soaked",
              "froze", "cleared", "battered", "delayed"],
        obj=["the coast", "heavy rain", "the valley", "a thunderstorm", "the highway", "strong winds",
             "the hills", "a cold front", "the harbor", "hail", "the mountains", "a sunny spell"],
        adj=["cloudy", "rainy", "humid", "freezing", "windy", "stormy", "sunny", "foggy"],
        place=["in the north", "along the coast", "over the hills", "in the valley", "across the region",
               "near the lake"],
    ),
}

# Words that honestly belong to two topics: they blur the boundary.
AMBIGUOUS = {
    "sports": ["record", "field", "cool", "hot"],
    "technology": ["record", "chips", "cool", "cloud"],
    "food": ["chips", "hot", "fresh", "cool"],
    "weather": ["hot", "cloud", "fresh", "field"],
}

SHARED = ["today", "yesterday", "this morning", "last night", "again", "finally", "apparently", "suddenly",
          "as usual", "once more", "this week", "on monday", "on friday", "everyone said", "people noticed",
          "we heard", "they reported", "i think", "it seems"]
FILLER = ["really", "very", "quite", "just", "still", "also", "maybe", "probably", "almost", "even", "so",
          "actually", "certainly", "nearly", "perhaps"]

TEMPLATES = [
    "{shared} {subj} {verb} {obj}",
    "{subj} {verb} {obj} {place}",
    "{shared} {subj} {verb} {obj} {place}",
    "{subj} {filler} {verb} {obj} {shared}",
    "{subj} was {filler} {adj} {place}",
    "{shared} {obj} was {adj} and {adj2}",
    "{subj} {verb} {obj} and {obj2}",
    "i think {obj} was {filler} {adj}",
    "{place} {subj} {verb} {obj}",
    "{subj} {verb} {filler} {adj} {obj2} {shared}",
    "{shared} it was {adj} {place}",
    "{subj} and {subj2} {verb} {obj}",
]

WEAK_TEMPLATES = [
    "{shared} it was {filler} {amb}",
    "{shared} everyone talked about {amb}",
    "{subj} was {filler} there {shared}",
    "{shared} {filler} {amb} again",
]


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def sentence(rng: np.random.Generator, topic: str) -> str:
    v = VOCAB[topic]
    fields = dict(
        subj=_pick(rng, v["subj"]), subj2=_pick(rng, v["subj"]), verb=_pick(rng, v["verb"]),
        obj=_pick(rng, v["obj"]), obj2=_pick(rng, v["obj"]), adj=_pick(rng, v["adj"]),
        adj2=_pick(rng, v["adj"]), place=_pick(rng, v["place"]), shared=_pick(rng, SHARED),
        filler=_pick(rng, FILLER), amb=_pick(rng, AMBIGUOUS[topic]),
    )
    if rng.random() < WEAK_RATE:
        text = _pick(rng, WEAK_TEMPLATES).format(**fields)
    else:
        text = _pick(rng, TEMPLATES).format(**fields)
        if rng.random() < 0.3:
            text += " " + _pick(rng, AMBIGUOUS[topic])
    if rng.random() < DISTRACTOR_RATE:
        other = _pick(rng, [t for t in TOPICS if t != topic])
        ov = VOCAB[other]
        word = _pick(rng, ov[_pick(rng, ["adj", "obj", "subj"])]).split()[-1]   # "the match" -> "match"
        words = text.split()
        at = int(rng.integers(len(words) + 1))
        text = " ".join(words[:at] + [word] + words[at:])
    return " ".join(text.split())


def generate(seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels, splits = [], [], []
    for label, topic in enumerate(TOPICS):
        n_test = int(round(TEST_FRACTION * PER_TOPIC))
        for i in range(PER_TOPIC):
            texts.append(sentence(rng, topic))
            labels.append(label)
            splits.append("test" if i < n_test else "train")
    order = rng.permutation(len(texts))
    return dict(text=np.array([texts[i] for i in order]), label=np.array([labels[i] for i in order], np.int64),
                split=np.array([splits[i] for i in order]), topics=np.array(TOPICS), seed=np.array(seed))


def main() -> int:
    corpus = generate()
    out = Path(__file__).resolve().parent / "text_corpus.npz"
    np.savez_compressed(out, **corpus)
    n_train = int((corpus["split"] == "train").sum())
    print(f"wrote {out}: {len(corpus['text'])} sentences ({n_train} train), topics {list(corpus['topics'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
