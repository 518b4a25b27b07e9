"""Scoring a policy: held-out pass@1, pass@k and maj@k, the standalone evaluator's config and reports, the token RM's held-out instruments."""
