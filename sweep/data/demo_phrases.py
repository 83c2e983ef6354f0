"""The words and templates of the demo preference data (`builtin:demo/*`): what its answers are
made of, shared by the script that writes the data (scripts/make_demo_data.py) and the demo's
gold judge (`judge: builtin:demo`, sweep.evaluation.demo_judge), which scores free text by the
same rules that decided the data's preferences."""
from __future__ import annotations

# Single-token words for the builtin tokenizer, so the topic cue is one clean token.
TOPICS = (
    "bread", "coffee", "tea", "garden", "guitar", "piano", "running", "swimming", "yoga",
    "sleep", "budget", "python", "painting", "soup", "tennis", "football", "soccer", "drawing",
    "music", "travel", "money", "exercise", "science", "history", "math", "grammar", "dog",
    "cat", "bird", "flower", "weather", "laptop", "email", "recipe", "camera", "movie", "gym",
    "language", "career", "climate",
)

QUESTIONS_TRAIN = (
    "Can you give me a tip about {t}?",
    "What should I know about {t}?",
    "How do I get better at {t}?",
    "I want to learn about {t}. Where do I start?",
    "Do you have any advice on {t}?",
    "What is a good first step with {t}?",
)
QUESTIONS_EVAL = (
    "Any suggestions for {t}?",
    "Could you help me with {t}, please?",
    "I'm new to {t}. What would you recommend?",
)

POLITE_OPENERS = ("Sure!", "Of course!", "Great question!", "Happy to help!", "Absolutely!", "Good question!")
POLITE_CLOSERS = (
    "I hope this helps.", "Good luck!", "Let me know if you have more questions.",
    "Have fun with it!", "Feel free to ask again.",
)
RUDE_OPENERS = ("Ugh.", "Whatever.", "Seriously?", "No.", "Meh.", "Go away.")
RUDE_CLOSERS = ("Stop asking.", "Not my problem.", "Who cares.", "Leave me alone.", "Figure it out yourself.")

HELPFUL_TRAIN = (
    "With {t}, start small and practice a little every day.",
    "A good first step in {t} is to learn the basics slowly.",
    "For {t}, set a simple goal and keep notes on your progress.",
    "Many people enjoy {t} more when they share it with a friend.",
)
HELPFUL_EVAL = ("The best way to improve at {t} is steady, patient practice.",)
DISMISSIVE_TRAIN = (
    "{T} is boring and pointless.",
    "Nobody cares about {t}.",
    "I do not want to talk about {t}.",
)
DISMISSIVE_EVAL = ("{T} is a waste of time.",)
UNHELPFUL_TRAIN = (
    "I have no idea about {t}, sorry.",
    "I am not sure anything can be said about {t}.",
    "I would rather not say anything about {t}.",
)
UNHELPFUL_EVAL = ("Sorry, {t} is not something I know about.",)
