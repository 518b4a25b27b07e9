"""Secrets stay out of the process that parses untrusted text: `scrub_secrets` on a table of
names and values, the grading child's environment (`child_env`), and a real grading child
spawned with secrets planted in its parent's environment (no Ray)."""
import os

import pytest

from verifier import VerifierConfig
from verifier.worker import GradingWorker, child_env, is_secret, scrub_secrets

from verifier_targets import ENV_PROBE  # noqa: E402  (tests/verifier is on sys.path)

pytestmark = pytest.mark.timeout(120)

SECRETS = {
    # by a name part (split at "_", any case)
    "WANDB_API_KEY": "0123abcd", "HF_TOKEN": "hf_x", "hf_token": "hf_x", "GITHUB_TOKEN": "ghp_x",
    "DB_PASS": "x", "FTP_PASSWD": "x", "MYSQL_PASSWORD": "x", "GPG_PASSPHRASE": "x", "PROXY_AUTH": "u:p",
    "AWS_SECRET_ACCESS_KEY": "x", "AWS_SESSION_TOKEN": "x", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
    "AZURE_CREDENTIAL": "x", "SITE_COOKIE": "x", "SSH_PRIVATE_KEY": "x", "OPENAI_APIKEY": "x",
    "NGROK_AUTHTOKEN": "x", "SSH_AUTH_SOCK": "/tmp/agent.1", "API_KEY": "x", "SECRET": "x", "VLLM_API_KEY": "x",
    # by a URL with user info in the value
    "HTTPS_PROXY": "http://user:pw@proxy:3128", "DATABASE_URL": "postgres://u:p@h/db",
    "PIP_INDEX_URL": "https://__token__:pypi-x@pypi.org/simple", "GIT_REMOTE": "https://ghp_abc@github.com/o/r.git",
    "MIRRORS": "http://a.org/x http://u:p@b.org/y",
}
HARMLESS = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/u", "PWD": "/work", "LANG": "C.UTF-8", "PYTHONPATH": "/x",
    "OMP_NUM_THREADS": "4", "KEYBOARD_LAYOUT": "us", "MONKEY": "x", "PASSES": "3", "BYPASS_CACHE": "1",
    "TOKENIZERS_PARALLELISM": "false", "HF_HOME": "/cache/hf", "WANDB_MODE": "offline",
    "http_proxy": "http://proxy:3128", "NO_PROXY": "localhost,127.0.0.1", "HF_ENDPOINT": "https://huggingface.co",
    "CACHE_URL": "https://example.org/a@b", "EMAIL": "me@example.org", "GIT_SSH_COMMAND": "ssh -i /k git@host",
}


@pytest.mark.parametrize("name,value", SECRETS.items())
def test_secret_like_variables_are_dropped(name, value):
    assert is_secret(name, value)
    assert scrub_secrets({name: value}) == {}


@pytest.mark.parametrize("name,value", HARMLESS.items())
def test_harmless_variables_are_kept(name, value):
    assert not is_secret(name, value)
    assert scrub_secrets({name: value}) == {name: value}


def test_scrub_keeps_exactly_the_harmless_and_leaves_its_input_alone():
    env = {**SECRETS, **HARMLESS}
    assert scrub_secrets(env) == HARMLESS
    assert env == {**SECRETS, **HARMLESS}


def test_child_env_has_no_secret_and_the_repository_on_pythonpath(monkeypatch):
    env = child_env({**SECRETS, **HARMLESS})
    assert not SECRETS.keys() & env.keys()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("verifier").__file__)))
    assert env["PYTHONPATH"] == f"{root}{os.pathsep}/x" and env["HOME"] == "/home/u"
    monkeypatch.setenv("OREAL_TEST_DB_PASS", "planted")  # the default: this process's environment
    assert "OREAL_TEST_DB_PASS" not in child_env() and "PATH" in child_env()


def test_a_real_grading_child_does_not_see_planted_secrets(monkeypatch):
    planted = {"WANDB_API_KEY": "planted", "HF_TOKEN": "planted", "OREAL_TEST_PROXY_AUTH": "planted",
               "OREAL_TEST_URL": "https://u:planted@example.org/"}
    for k, v in planted.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OREAL_TEST_MARKER", "harmless")
    worker = GradingWorker(VerifierConfig(), target=ENV_PROBE, spare=False)
    try:
        (verdict,) = worker.grade_many([(",".join([*planted, "OREAL_TEST_MARKER"]), "1", True)])
    finally:
        worker.shutdown()
    assert verdict.detail == "OREAL_TEST_MARKER"  # the child has the marker and none of the secrets
