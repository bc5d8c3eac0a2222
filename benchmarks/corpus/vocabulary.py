"""A closed English vocabulary and a seeded sentence generator over it (the reproduction's task).

The time-reversal experiments train small attention encoder-decoder models on the CPU, so the
task must be learnable in minutes: a few hundred common words, simple declarative sentences of
3 to 10 words, and a character-level label set of 30 symbols. Every word is plain lowercase a-z so
that the speech synthesiser reads it as one word and the labels spell it exactly.

Usage::

    generate_sentences(count=2, seed=0)     # ['my clean plate fell', 'every green window rested']

The character labels the sentences are spelled in are :data:`attnprobe.labels.CHARACTER_LABELS`.
"""

from __future__ import annotations

import random

DETERMINERS = ("the", "a", "this", "that", "every", "one", "my", "your", "his", "her", "our")

ADJECTIVES = (
    "old", "new", "big", "small", "red", "blue", "green", "black", "white", "brown", "yellow",
    "long", "short", "tall", "warm", "cold", "hot", "dark", "bright", "quiet", "loud", "happy",
    "sad", "angry", "busy", "lazy", "clever", "gentle", "heavy", "light", "empty", "full", "clean",
    "dirty", "soft", "hard", "sweet", "fresh", "young", "tiny", "huge", "funny", "strange",
    "famous", "simple", "rich", "poor", "wild", "kind", "brave", "calm", "early", "late",
    "broken", "wooden", "golden", "hungry", "thirsty", "sleepy", "round",
)

NOUNS = (
    "dog", "cat", "bird", "horse", "cow", "fish", "mouse", "rabbit", "fox", "bear", "lion",
    "tiger", "duck", "goat", "sheep", "frog", "snake", "man", "woman", "child", "boy", "girl",
    "friend", "teacher", "doctor", "farmer", "driver", "baker", "king", "queen", "soldier",
    "sailor", "student", "neighbour", "father", "mother", "brother", "sister", "house", "car",
    "boat", "train", "bus", "bike", "road", "river", "lake", "hill", "mountain", "tree", "flower",
    "garden", "field", "forest", "city", "village", "school", "church", "market", "shop",
    "kitchen", "table", "chair", "door", "window", "wall", "floor", "bed", "lamp", "clock", "book",
    "letter", "paper", "pen", "box", "bag", "cup", "plate", "bottle", "glass", "knife", "spoon",
    "bread", "cake", "apple", "orange", "egg", "cheese", "milk", "water", "coffee", "soup",
    "ball", "kite", "drum", "piano", "song", "story", "picture", "phone", "computer", "radio",
    "coat", "hat", "shoe", "ring", "key", "rope", "stone", "star", "moon", "sun", "cloud",
    "storm", "island", "bridge", "castle", "tower", "ship", "camera", "basket", "candle",
    "blanket", "pillow", "ladder", "hammer", "wheel", "engine",
)

TRANSITIVE_VERBS = (
    "saw", "found", "lost", "took", "gave", "made", "bought", "sold", "painted",
    "washed", "cleaned", "opened", "closed", "carried", "pushed", "pulled", "dropped", "caught",
    "threw", "kicked", "watched", "followed", "helped", "visited", "called", "liked", "loved",
    "hated", "wanted", "needed", "moved", "fixed", "broke", "built", "cooked", "ate", "drank",
    "read", "wrote", "heard", "touched", "held", "kept", "left", "chose", "hid", "met",
    "brought", "showed",
)

INTRANSITIVE_VERBS = (
    "slept", "laughed", "smiled", "cried", "waited", "walked", "ran", "jumped", "danced", "sang",
    "swam", "fell", "stayed", "arrived", "shouted", "worked", "played", "rested", "stopped",
    "listened", "sat", "stood", "returned", "disappeared", "whispered",
)

PREPOSITIONS = (
    "in", "near", "behind", "under", "over", "beside", "inside", "outside", "across", "along",
    "through", "past", "towards", "around", "below", "above", "beyond", "with", "without",
)

ADVERBS = (
    "today", "yesterday", "again", "later", "quickly", "slowly", "quietly", "loudly", "early",
    "twice", "often", "never", "always", "suddenly", "happily", "carefully", "gladly", "soon",
    "once", "everywhere",
)

SUBJECT_PRONOUNS = ("he", "she", "they", "we", "you", "it", "nobody", "someone", "everyone")

NAMES = (
    "anna", "peter", "maria", "james", "lucy", "david", "emma", "thomas", "sarah", "paul",
    "laura", "george", "helen", "simon", "kate",
)

VOWELS = "aeiou"
# Word counts the grammar can make: "he slept" up to
# determiner-adjective-adjective-noun verb determiner-adjective-adjective-noun preposition
# determiner-adjective-adjective-noun adverb.
SHORTEST_SENTENCE, LONGEST_SENTENCE = 2, 15


def closed_vocabulary() -> tuple[str, ...]:
    """Every word a generated sentence can contain, sorted and without repeats."""
    words = (
        DETERMINERS + ("an",) + ADJECTIVES + NOUNS + TRANSITIVE_VERBS + INTRANSITIVE_VERBS
        + PREPOSITIONS + ADVERBS + SUBJECT_PRONOUNS + NAMES
    )
    return tuple(sorted(set(words)))


def _noun_phrase(rng: random.Random, adjective_probability: float) -> list[str]:
    determiner = rng.choice(DETERMINERS)
    words = [rng.choice(ADJECTIVES)] if rng.random() < adjective_probability else []
    if rng.random() < adjective_probability / 3:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    if determiner == "a" and words[0][0] in VOWELS:
        determiner = "an"
    return [determiner, *words]


def _subject(rng: random.Random) -> list[str]:
    choice = rng.random()
    if choice < 0.2:
        return [rng.choice(SUBJECT_PRONOUNS)]
    if choice < 0.35:
        return [rng.choice(NAMES)]
    return _noun_phrase(rng, adjective_probability=0.5)


def random_sentence(rng: random.Random, min_words: int = 3, max_words: int = 10) -> str:
    """One sentence from a small grammar, e.g. ``"the old dog found a red box near the river"``.

    Grammar: subject (pronoun, name or noun phrase), then a transitive verb with an object or an
    intransitive verb, then optionally a prepositional phrase and an adverb. Sentences outside
    ``[min_words, max_words]`` are redrawn, so the length range is exact.
    """
    if not SHORTEST_SENTENCE <= min_words <= max_words or min_words > LONGEST_SENTENCE:
        raise ValueError(
            f"min_words {min_words} and max_words {max_words} leave no sentence: the grammar makes "
            f"{SHORTEST_SENTENCE} to {LONGEST_SENTENCE} words; choose "
            f"{SHORTEST_SENTENCE} <= min_words <= max_words and min_words <= {LONGEST_SENTENCE}"
        )
    while True:
        words = _subject(rng)
        if rng.random() < 0.65:
            words += [rng.choice(TRANSITIVE_VERBS), *_noun_phrase(rng, adjective_probability=0.4)]
        else:
            words.append(rng.choice(INTRANSITIVE_VERBS))
        if rng.random() < 0.45:
            words += [rng.choice(PREPOSITIONS), *_noun_phrase(rng, adjective_probability=0.3)]
        if rng.random() < 0.3:
            words.append(rng.choice(ADVERBS))
        if min_words <= len(words) <= max_words:
            return " ".join(words)


def generate_sentences(
    count: int, seed: int, min_words: int = 3, max_words: int = 10
) -> list[str]:
    """``count`` sentences drawn with a private ``random.Random(seed)``: same seed, same list."""
    rng = random.Random(seed)
    return [random_sentence(rng, min_words, max_words) for _ in range(count)]
