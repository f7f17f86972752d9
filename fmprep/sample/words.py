"""The words of the generated files: review bodies, headlines and product titles.

Bodies are runs of consecutive sentences cut from one cached corpus per seed (three sentiment
segments: negative, neutral, positive), chosen by the review's stars; headlines come from a
small table per star rating; titles are a pure function of (seed, product rank). None of them
contains a tab, a newline or a ``"``: those only appear where faults put them.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache

import numpy as np

from .hashing import _Hasher
from .model import _Plan

_TITLE_ADJ = ("Dark", "Silent", "Lost", "Last", "Hidden", "Broken", "Golden", "Wild", "Secret",
              "Little", "Endless", "Frozen", "Burning", "Midnight", "Crimson", "Savage", "Quiet",
              "Lonely", "Electric", "Forgotten", "Brave", "Royal", "Deadly", "Perfect", "Final",
              "Strange", "Sweet", "Restless", "Eternal", "Hollow", "Wicked", "Distant")
_TITLE_NOUN = ("Road", "Empire", "Island", "River", "Kingdom", "Heart", "Storm", "Night", "Game",
               "Promise", "Frontier", "Legacy", "Garden", "Station", "Voyage", "Witness",
               "Shadow", "Harbor", "Winter", "Summer", "Detective", "Family", "Mountain",
               "Planet", "Secret", "Sisters", "Brothers", "Mission", "Horizon", "Café", "Dream",
               "Affair", "Escape", "Town", "Ocean", "Signal", "Crown", "Circus", "Machine")
_TITLE_NAME = ("Amélie", "Hélène", "José", "Zoë", "Renée", "Jack", "Emma", "Charlie", "Lucy",
               "Max", "Olivia", "Sam", "Grace", "Henry", "Nina", "Oscar", "Mia", "Leo", "Ruby",
               "Pokémon", "Dr. Blake", "Captain Rex", "Agent Cole")
_TITLE_PLACE = ("Paris", "Montréal", "Tokyo", "Texas", "Brooklyn", "Mars", "Avalon", "Rome",
                "the North", "São Paulo", "Alaska", "Berlin", "the Valley", "New Orleans")
_TITLE_SUFFIX = ("", "", "", " [HD]", " (Director’s Cut)", " (Extended Edition)", " [Blu-ray]",
                 " (Unrated)", " - The Complete Collection", " (Subtitled)")

_HEADLINES = {
    5: ("Five Stars", "Five Stars", "Five Stars", "Great movie!", "Loved it", "Excellent",
        "A must see", "Wonderful series", "Best show ever", "Highly recommend",
        "Absolutely wonderful", "Fantastic!", "Great show", "Awesome", "Amazing film",
        "One of my favorites", "Loved every episode", "Superb", "Great", "Brilliant!",
        "A true classic", "Can’t wait for the next season", "Très bien!"),
    4: ("Four Stars", "Four Stars", "Very good", "Good movie", "Enjoyed it", "Pretty good",
        "Worth watching", "Good show", "Solid", "Entertaining", "Good but not great",
        "Nice family movie", "Fun to watch", "Good series"),
    3: ("Three Stars", "Three Stars", "It was okay", "Just OK", "Average", "Meh",
        "Not bad", "Could have been better", "Mixed feelings", "So-so"),
    2: ("Two Stars", "Two Stars", "Disappointing", "Not great", "Boring", "Not worth it",
        "Expected more", "Weak plot", "Too slow"),
    1: ("One Star", "One Star", "Terrible", "Waste of money", "Awful", "Don’t bother",
        "Would not play", "Worst movie ever", "Horrible", "Very disappointed",
        "Stopped watching after 10 minutes"),
}

_POS = {
    "adj": ("great", "wonderful", "excellent", "fantastic", "funny", "moving", "beautiful",
            "brilliant", "charming", "gripping", "clever", "heartwarming", "entertaining",
            "well written", "superb", "delightful", "suspenseful", "touching"),
    "verb": ("loved", "enjoyed", "liked", "adored", "appreciated"),
    "react": ("laughed the whole time", "all cried at the end", "couldn’t stop watching",
              "watched it twice", "can't wait for more", "were on the edge of our seats"),
    "open": ("Great movie", "Loved it", "Highly recommended", "What a show", "Wow",
             "Just wonderful", "Five stars from me", "A real gem", "Bravo"),
}
_NEU = {
    "adj": ("okay", "average", "decent", "predictable", "a bit slow", "fine", "uneven",
            "watchable", "forgettable", "passable", "a little long"),
    "verb": ("didn't mind", "sort of liked", "half enjoyed", "tolerated", "watched"),
    "react": ("thought it was fine", "were mildly entertained", "fell asleep halfway",
              "might watch the sequel", "expected a bit more"),
    "open": ("It was okay", "Not bad", "Meh", "So-so", "Nothing special", "Fair enough"),
}
_NEG = {
    "adj": ("boring", "terrible", "awful", "dull", "confusing", "cheesy", "poorly acted",
            "a waste of time", "painful", "ridiculous", "clichéd", "disappointing"),
    "verb": ("hated", "disliked", "regretted buying", "couldn't stand", "gave up on"),
    "react": ("turned it off after 20 minutes", "wanted our money back", "were bored stiff",
              "couldn’t finish it", "kept checking our phones"),
    "open": ("Don't waste your money", "Terrible", "What a letdown", "Awful", "Skip this one",
             "Very disappointed", "Not worth it"),
}
_NOUN = ("movie", "film", "show", "series", "story", "plot", "cast", "ending", "script",
         "soundtrack", "season", "episode", "acting", "cinematography", "dialogue", "pilot",
         "finale", "documentary", "sequel", "remake", "video quality", "streaming")
_WHO = ("the lead actor", "the director", "the whole cast", "the writers", "the villain",
        "the narrator", "the kids in it", "the supporting actress", "the composer")
_FAMILY = ("my wife", "my husband", "the kids", "my family", "my mom", "friends", "my son",
           "my daughter", "my grandparents", "my roommate", "my girlfriend", "my boyfriend")
_EXTRA = ("The picture quality was fine on my Kindle Fire.", "Streaming was smooth on Prime.",
          "Arrived quickly and played without problems.", "The download took a while.",
          "Subtitles were available, which was nice.", "It’s rated PG-13 for some language.",
          "Watched it on my Roku.", "The price was right.", "Déjà vu all over again…",
          "There were a few glitches with the sound.", "Runtime is about two hours.",
          "I bought the HD version.", "Rented it for the weekend — no regrets.",
          "It had a certain je ne sais quoi.", "Saw it in theaters years ago.",
          "Not for young children.", "My rating: 10/10!", "It’s on my watch list again.")


def _sentence(rng: random.Random, w: dict) -> str:
    pick = rng.choice
    t = rng.randrange(9)
    if t == 0:
        return f"The {pick(_NOUN)} was {pick(w['adj'])}."
    if t == 1:
        return f"I {pick(w['verb'])} this {pick(_NOUN)} and {pick(_FAMILY)} did too."
    if t == 2:
        return f"Watched it with {pick(_FAMILY)} and we {pick(w['react'])}."
    if t == 3:
        return f"{pick(w['open'])}!"
    if t == 4:
        return (f"{pick(_WHO).capitalize()} made the {pick(_NOUN)} {pick(w['adj'])}, "
                f"and the {pick(_NOUN)} was {pick(w['adj'])}.")
    if t == 5:
        return pick(_EXTRA)
    if t == 6:
        return (f"I think the {pick(_NOUN)} is {pick(w['adj'])} but the {pick(_NOUN)} "
                f"felt {pick(w['adj'])}.")
    if t == 7:
        return f"{pick(w['open'])}, {pick(w['open']).lower()}."
    return (f"If you like {pick(_NOUN)}s that are {pick(w['adj'])}, this one is for you; "
            f"{pick(_FAMILY)} {pick(w['react'])}.")


_CORPUS_SENTENCES = 4000    # per sentiment


@lru_cache(maxsize=4)
def _corpus(seed: int):
    """One string of review sentences in three sentiment segments, and sentence bounds.

    A body is a run of consecutive sentences: a slice of this string, which is far cheaper per
    row than joining words. Separators (space or ``<br />``) sit between sentences.
    """
    rng = random.Random(seed * 1_000_003 + 71)
    parts, starts, ends, pos = [], [], [], 0
    for words in (_NEG, _NEU, _POS):
        for _ in range(_CORPUS_SENTENCES):
            s = _sentence(rng, words)
            starts.append(pos)
            pos += len(s)
            ends.append(pos)
            sep = rng.choices((" ", "<br /><br />", "<br />", "  "), (80, 12, 6, 2))[0]
            parts.append(s)
            parts.append(sep)
            pos += len(sep)
    text = "".join(parts)
    assert "\t" not in text and "\n" not in text and '"' not in text
    return text, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _headline_table():
    flat, offsets, counts = [], [], []
    for r in range(1, 6):
        offsets.append(len(flat))
        counts.append(len(_HEADLINES[r]))
        flat.extend(_HEADLINES[r])
    return np.array(flat, dtype=object), np.array(offsets), np.array(counts)


_HEADLINE_FLAT, _HEADLINE_OFF, _HEADLINE_CNT = _headline_table()


def _titles(plan: _Plan, ranks: np.ndarray) -> list[str]:
    """Product titles, a pure function of (seed, product rank)."""
    h = plan.h
    a = h.below(ranks, "title_a", 1 << 30).tolist()
    b = h.below(ranks, "title_b", 1 << 30).tolist()
    out = []
    for x, y in zip(a, b):
        adj, noun = _TITLE_ADJ[x % len(_TITLE_ADJ)], _TITLE_NOUN[(x >> 5) % len(_TITLE_NOUN)]
        noun2 = _TITLE_NOUN[(y >> 3) % len(_TITLE_NOUN)]
        suffix = _TITLE_SUFFIX[(y >> 9) % len(_TITLE_SUFFIX)]
        t = (x >> 12) % 8
        if t == 0:
            s = f"The {adj} {noun}"
        elif t == 1:
            s = f"{adj} {noun}: Season {1 + (y >> 14) % 9}"
        elif t == 2:
            s = f"The {noun} of {_TITLE_PLACE[(y >> 14) % len(_TITLE_PLACE)]}"
        elif t == 3:
            s = f"{_TITLE_NAME[(y >> 14) % len(_TITLE_NAME)]}’s {noun}"
        elif t == 4:
            s = f"{adj} {noun} ({1950 + (y >> 14) % 66})"
        elif t == 5:
            s = f"{noun} & {noun2}"
        elif t == 6:
            s = f"{adj} {noun} {2 + (y >> 14) % 4}: Return to {noun2}"
        else:
            s = f"{adj} {noun}"
        out.append(s + suffix)
    return out



def _bodies(h: _Hasher, key: np.ndarray, rating: np.ndarray) -> list[str]:
    """Review bodies: 1 to 40 consecutive corpus sentences of the rating's sentiment."""
    corpus, s_start, s_end = _corpus(h.seed)
    seg = np.where(rating <= 2, 0, np.where(rating == 3, 1, 2))
    # 30 % one sentence, the rest geometric: most bodies are short, a few run long.
    lb = h.uniform(key, "body_len")
    nsent = np.where(lb < 0.3, 1,
                     1 + np.floor(np.log1p(-h.uniform(key, "body_len2")) / math.log(0.75)))
    nsent = np.minimum(nsent, 40).astype(np.int64)
    first_s = seg * _CORPUS_SENTENCES + np.floor(
        h.uniform(key, "body") * (_CORPUS_SENTENCES - nsent + 1)).astype(np.int64)
    return [corpus[a:b] for a, b in zip(s_start[first_s].tolist(),
                                        s_end[first_s + nsent - 1].tolist())]


def _headlines(h: _Hasher, key: np.ndarray, rating: np.ndarray) -> list[str]:
    """Review headlines drawn from the table of the review's star rating."""
    hi = _HEADLINE_OFF[rating - 1] + h.below(key, "headline", _HEADLINE_CNT[rating - 1])
    return _HEADLINE_FLAT[hi].tolist()
