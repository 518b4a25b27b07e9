"""First-error localisation on the synthetic arithmetic task (launch/data/first_error.py)."""
import random

import pytest

from launch.data.first_error import arith_first_error, first_error_token
from launch.data.tasks import TaskConfig, make_arith_problems

Q = "Compute 7 + 8 - 3."
RIGHT = "7 + 8 = 15. 15 - 3 = 12. The answer is \\boxed{12}."


def at(response: str, marker: str, plus: int = 0) -> int:
    """Offset of `marker` (which must occur once) in `response`, plus `plus`."""
    assert response.count(marker) == 1, marker
    return response.index(marker) + plus


def test_right_responses_have_no_first_error():
    assert arith_first_error(Q, RIGHT) is None
    for p in make_arith_problems(TaskConfig(num_train=200, num_heldout=0, max_operands=4, max_digits=3,
                                            allow_negative=True)).train:
        assert arith_first_error(p.question, p.solution) is None, (p.question, p.solution)


def test_a_slip_is_blamed_once_where_it_happens():
    r = "7 + 8 = 14. 14 - 3 = 11. The answer is \\boxed{11}."
    assert arith_first_error(Q, r) == at(r, "14.", 1)  # the 4 of 14; 14 - 3 = 11 is right given 14
    r = "7 + 8 = 15. 15 - 3 = 13. The answer is \\boxed{13}."
    assert arith_first_error(Q, r) == at(r, "13.", 1)  # only the second step is wrong: 13 for 12


def test_wrong_operand_and_operator():
    r = "7 + 9 = 16. 16 - 3 = 13. The answer is \\boxed{13}."
    assert arith_first_error(Q, r) == at(r, "9")
    r = "7 + 8 = 15. 16 - 3 = 13. The answer is \\boxed{13}."  # copies the wrong running total
    assert arith_first_error(Q, r) == at(r, "16", 1)
    r = "8 + 8 = 16. 16 - 3 = 13. The answer is \\boxed{13}."  # the question's first number, miscopied
    assert arith_first_error(Q, r) == 0
    r = "7 + 8 = 15. 15 + 3 = 18. The answer is \\boxed{18}."
    assert arith_first_error(Q, r) == at(r, "+ 3")


def test_box_and_missing_or_extra_steps():
    r = "7 + 8 = 15. 15 - 3 = 12. The answer is \\boxed{13}."
    assert arith_first_error(Q, r) == at(r, "{13", 2)
    r = "7 + 8 = 15. 15 - 3 = 12. The answer is \\boxed{12.}"
    assert arith_first_error(Q, r) == at(r, ".}")
    r = "7 + 8 = 15. The answer is \\boxed{15}."  # boxed before the second step
    assert arith_first_error(Q, r) == at(r, "The answer")
    r = "7 + 8 = 15. \\boxed{12}"
    assert arith_first_error(Q, r) == at(r, "\\boxed")
    r = "7 + 8 = 15. 15 - 3 = 12."  # stops without a box: wrong at the end
    assert arith_first_error(Q, r) == len(r)
    r = "7 + 8 = 15. 15 - 3 = 12. 12 + 1 = 13. The answer is \\boxed{13}."
    assert arith_first_error(Q, r) == at(r, "12 + 1")
    # No steps: a one-operation question may be answered straight in the box, not a longer one.
    assert arith_first_error("Compute 5 + 8.", "The answer is \\boxed{13}.") is None
    r = "The answer is \\boxed{14}."
    assert arith_first_error("Compute 5 + 8.", r) == at(r, "4}")
    assert arith_first_error(Q, "The answer is \\boxed{12}.") == 0


def test_multi_digit_and_negative_numbers():
    q = "Compute 147 + 38 - 219."
    right = "147 + 38 = 185. 185 - 219 = -34. The answer is \\boxed{-34}."
    assert arith_first_error(q, right) is None
    r = "147 + 38 = 175. 175 - 219 = -44. The answer is \\boxed{-44}."
    assert arith_first_error(q, r) == at(r, "175.", 1)  # expected 185: the 7
    r = "147 + 38 = 1852. 1852 - 219 = 1633. The answer is \\boxed{1633}."
    assert arith_first_error(q, r) == at(r, "1852.", 3)  # expected 185: the extra 2
    r = "147 + 38 = 185. 185 - 219 = 34. The answer is \\boxed{34}."
    assert arith_first_error(q, r) == at(r, "= 34", 2)  # the sign is missing
    r = "147 + 38 = 185. 185 - 21 = 164. The answer is \\boxed{164}."
    assert arith_first_error(q, r) == at(r, "21 ", 2)  # 21 for 219: wrong where 9 was due
    r = "147 + 3 = 150. 150 - 219 = -69. The answer is \\boxed{-69}."
    assert arith_first_error(q, r) == at(r, "3 =", 1)  # 3 for 38: wrong where the 8 was due
    r = "147 + 38 = 9. 9 - 219 = -210. The answer is \\boxed{-210}."
    assert arith_first_error(q, r) == at(r, "9.")  # 9 for 185: its first char


def test_unparseable_is_unknown_and_nothing_raises():
    for r in ["", "hello", "I do not know.", "The answer is 12.", "Compute 7 + 8 - 3."]:
        assert arith_first_error(Q, r) is None, r
    assert arith_first_error("What is the area of the circle?", RIGHT) is None
    assert arith_first_error("", "") is None
    huge = "9" * 5000
    assert arith_first_error(f"Compute {huge} + 1.", "1 + 1 = 2.") is None
    r = f"7 + 8 = {huge}. The answer is \\boxed{{{huge}}}."
    assert arith_first_error(Q, r) == len("7 + 8 = ")  # expected 15: its first char differs
    rng = random.Random(0)
    alphabet = "0123456789 +-=.{}\\boxedThe answer is \n\u00e9\u00b2\u0663"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        if rng.random() < 0.5:
            text = RIGHT[: rng.randint(0, len(RIGHT))] + text
        got = arith_first_error(Q, text)
        assert got is None or 0 <= got <= len(text)


@pytest.fixture(scope="module")
def tok():
    from launch.model.tiny_model import build_tokenizer

    return build_tokenizer()


def test_first_error_token_is_the_wrong_digit(tok):
    q = "Compute 47 + 38 - 19."
    eos = tok.eos_token
    ids = tok.encode("47 + 38 = 85. 85 - 19 = 67. The answer is \\boxed{67}." + eos, add_special_tokens=False)
    assert ids[-1] == tok.eos_token_id
    k = first_error_token(tok, q, ids)
    assert tok.decode([ids[k]]) == "7" and tok.decode(ids[:k]).endswith("= 6")
    ids = tok.encode("47 + 38 = 84. 84 - 19 = 65. The answer is \\boxed{65}." + eos, add_special_tokens=False)
    k = first_error_token(tok, q, ids)
    assert tok.decode([ids[k]]) == "4" and tok.decode(ids[:k]) == "47 + 38 = 8"
    right = tok.encode("47 + 38 = 85. 85 - 19 = 66. The answer is \\boxed{66}." + eos, add_special_tokens=False)
    assert first_error_token(tok, q, right) is None
    assert first_error_token(tok, q, tok.encode("no idea" + eos, add_special_tokens=False)) is None
    # Ends without its box: the stop token is the first wrong token.
    ids = tok.encode("47 + 38 = 85. 85 - 19 = 66." + eos, add_special_tokens=False)
    assert first_error_token(tok, q, ids) == len(ids) - 1


def test_first_error_token_with_characters_split_over_tokens(tok):
    # "é" and "日" are several bytes, which byte-level BPE may split over tokens.
    q = "Compute 47 + 38 - 19."
    ids = tok.encode("\u65e5\u00e9 47 + 38 = 85. 85 - 19 = 76. The answer is \\boxed{76}.", add_special_tokens=False)
    k = first_error_token(tok, q, ids)
    assert tok.decode([ids[k]]) == "7" and tok.decode(ids[:k]).endswith("19 = ")
