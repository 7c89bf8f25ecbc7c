"""Slot errors on E2E-style meaning representations and outputs written by hand."""

import numpy as np
import pytest

from tunewise.metrics.slots import SlotChecker, looks_like_mr, parse_mr, resampled_slots, slot_examples

MR = "name[The Eagle], food[French], priceRange[cheap], area[riverside]"
INPUTS = [MR, "name[Aromi], eatType[coffee shop], food[Italian], familyFriendly[yes], near[Burger King]",
          "name[Blue Spice], priceRange[£20-25], customer rating[5 out of 5], familyFriendly[no]"]


@pytest.fixture(scope="module")
def checker():
    return SlotChecker.from_inputs(INPUTS)


def test_mrs_are_parsed_and_recognised():
    assert parse_mr(MR) == [("name", "The Eagle"), ("food", "French"), ("priceRange", "cheap"),
                            ("area", "riverside")]
    assert parse_mr("inform(name[Tom Clancy's], rating[good])") == [("name", "Tom Clancy's"), ("rating", "good")]
    assert looks_like_mr(MR) and looks_like_mr("customer rating[high]")
    assert not looks_like_mr("The Eagle is cheap.") and not looks_like_mr("inform(name[X])")


def test_an_unrealised_value_is_one_omission(checker):
    out = checker.check(MR, "The Eagle is a cheap French place")
    assert (out.slots, out.missing, out.added) == (4, ["area[riverside]"], [])
    assert checker.check(MR, "By the river, The Eagle serves cheap French food.").missing == []


def test_a_wrong_value_is_an_omission_and_an_addition(checker):
    out = checker.check(MR, "Aromi is a cheap Italian place by the river.")
    assert out.missing == ["name[The Eagle]", "food[French]"]
    assert out.added == ["name[Aromi]", "food[Italian]"]  # known values of the same attributes


def test_values_the_input_lacks_are_additions_but_a_generic_restaurant_is_not(checker):
    out = checker.check(MR, "The Eagle is a cheap French restaurant by the river near Burger King, "
                            "not family-friendly and rated 5 out of 5.")
    assert out.missing == []
    assert out.added == ["near[Burger King]", "familyFriendly[no]", "customer rating[5 out of 5]"]


def test_family_friendly_follows_negation(checker):
    mr = INPUTS[2]
    assert checker.check(mr, "Blue Spice costs £20-25, is rated 5 stars and is not kid friendly.").missing == []
    out = checker.check(mr, "Blue Spice costs £20-25, is rated 5 stars and is family friendly.")
    assert out.missing == ["familyFriendly[no]"] and out.added == ["familyFriendly[yes]"]
    yes = checker.check(INPUTS[1], "Aromi is an Italian coffee shop near Burger King that welcomes children.")
    assert yes.missing == [] and yes.added == []


def test_price_and_rating_phrasings(checker):
    mr = "name[Blue Spice], priceRange[high], customer rating[low]"
    assert checker.check(mr, "Blue Spice is expensive and has a low customer rating.").missing == []
    assert checker.check(mr, "Blue Spice has high prices and is rated low by customers.").missing == []
    out = checker.check(mr, "Blue Spice has low prices and a high customer rating.")
    assert out.missing == ["priceRange[high]", "customer rating[low]"]
    assert "priceRange[cheap]" in out.added and "customer rating[high]" in out.added


def test_a_venue_name_hides_the_cuisine_inside_it():
    checker = SlotChecker.from_inputs(["name[The Mill], near[Raja Indian Cuisine]", "food[Indian]"])
    out = checker.check("name[The Mill], food[English]", "The Mill serves English food near Raja Indian Cuisine.")
    assert out.added == ["near[Raja Indian Cuisine]"]  # not also food[Indian]


def test_slot_error_rate_is_errors_over_slots_on_every_resample(checker):
    preds = ["The Eagle is a cheap French place",  # 1 error of 4
             "Aromi is an Italian coffee shop for families near Burger King.",  # 0 of 5
             "Blue Spice."]  # 3 of 4
    ex = slot_examples(checker, INPUTS, preds)
    assert ex["slot_total"] == [4, 5, 4] and ex["slot_errors"] == [1, 0, 3]
    got = resampled_slots(ex, np.array([[0, 1, 2], [2, 2, 1]]))["slot_error_rate"]
    assert got == pytest.approx([4 / 13, 6 / 13])
