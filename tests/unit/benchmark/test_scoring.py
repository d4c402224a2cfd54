"""The scorer agrees with MMAU's official rules on the cases that trip evaluators."""

from __future__ import annotations

import pytest

from lens_audio.benchmark.scoring import extract_answer, score_output, string_match

CHOICES = ["Dog barking", "Cat meowing", "Dog growling", "Bird singing"]


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("Dog barking", True),
        ("dog barking.", True),
        ("The dog is barking", True),          # extra words are allowed
        ("Dog barking and growling", False),   # 'growling' belongs only to a competing choice
        ("Dog", False),                        # 'barking' missing
        ("B", False),                          # letters do not match text under the raw rule
        ("", False),                           # empty prediction is wrong
    ],
)
def test_official_rule(prediction, expected):
    assert string_match("Dog barking", prediction, CHOICES) is expected


def test_overlapping_choice_words():
    choices = ["Male speaker", "Female speaker", "Two speakers"]
    assert string_match("Male speaker", "male speaker", choices)
    assert not string_match("Male speaker", "male and female speaker", choices)
    # 'speaker' is shared with the answer, so it never counts against it
    assert string_match("Two speakers", "two speakers talking", choices)


def test_two_and_five_choice_items():
    assert string_match("Yes", "yes", ["Yes", "No"]) and not string_match("Yes", "yes or no", ["Yes", "No"])
    five = ["one", "two", "three", "four", "five"]
    assert string_match("five", "five", five) and not string_match("five", "four", five)


@pytest.mark.parametrize(
    "output, expected",
    [
        ("B", "Cat meowing"),
        ("(C)", "Dog growling"),
        ("D. Bird singing", "Bird singing"),
        ("The answer is A.", "Dog barking"),
        ("The answer is Cat meowing.", "Cat meowing"),
        ("<think>hmm</think><answer> Bird singing </answer>", "Bird singing"),
        ("<answer>B</answer>", "Cat meowing"),
        ("A dog barking loudly", "A dog barking loudly"),  # an article, not option A
        ("Z", "Z"),
    ],
)
def test_extraction(output, expected):
    assert extract_answer(output, CHOICES) == expected


def test_letters_score_after_extraction_and_raw_sentence_fails_when_it_should():
    assert score_output("The answer is C.", "Dog growling", CHOICES) == ("Dog growling", True)
    assert score_output("E", "Dog growling", CHOICES) == ("E", False)  # no fifth option
    assert not string_match("Dog growling", "The answer is not dog barking but dog growling", CHOICES)
