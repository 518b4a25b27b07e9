"""Graders in place of the math rules (`verifier.reward_fn`): the loader that runs a user's
reward function in the grading subprocess (`reward_fn`), and an example (`string_match`)."""
