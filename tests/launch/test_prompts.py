"""Prompts (issue 15 part 3): the chat template with the system prompt, a template override
(text or .jinja file), template keyword arguments (a thinking switch), and a raw mode for base
models; every option reachable from the config."""
import pytest

from conftest import compose
from launch.config import to_train_config
from launch.data.tasks import DEFAULT_SYSTEM_PROMPT, TaskConfig, task_prompt

THINK = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
         "{% if enable_thinking %}<think>{% else %}<answer>{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from launch.model.tiny_model import TinyModelConfig, ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model(TinyModelConfig(hidden_size=64, num_layers=2, num_heads=1)))


def test_chat_default_has_system_and_user_turns(tokenizer):
    text = task_prompt(tokenizer, "What is 2+2?", TaskConfig())
    assert DEFAULT_SYSTEM_PROMPT in text and text.index(DEFAULT_SYSTEM_PROMPT) < text.index("What is 2+2?")
    assert text == tokenizer.apply_chat_template(
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+2?"}],
        tokenize=False, add_generation_prompt=True)


def test_template_override_and_kwargs(tokenizer, tmp_path):
    on = task_prompt(tokenizer, "Q?", TaskConfig(chat_template=THINK, chat_template_kwargs={"enable_thinking": True}))
    off = task_prompt(tokenizer, "Q?", TaskConfig(chat_template=THINK, chat_template_kwargs={"enable_thinking": False}))
    assert on == f"[system] {DEFAULT_SYSTEM_PROMPT}\n[user] Q?\n<think>" and off.endswith("<answer>")
    f = tmp_path / "t.jinja"
    f.write_text(THINK)
    assert task_prompt(tokenizer, "Q?", TaskConfig(chat_template=str(f), system_prompt="")) == "[user] Q?\n<answer>"
    with pytest.raises(FileNotFoundError, match="task.chat_template"):
        task_prompt(tokenizer, "Q?", TaskConfig(chat_template=str(tmp_path / "missing.jinja")))


def test_raw_mode_for_base_models(tokenizer):
    cfg = TaskConfig(prompt_format="raw", raw_template="Problem: {question}\nSolution:")
    assert task_prompt(tokenizer, "What is 2+2?", cfg) == "Problem: What is 2+2?\nSolution:"
    assert task_prompt(tokenizer, "Q?", TaskConfig(prompt_format="raw", system_prompt="")) == "Question: Q?\nAnswer:"


def test_prompt_keys_from_the_command_line():
    cfg = to_train_config(compose(["task.prompt_format=raw", "+task.chat_template_kwargs={enable_thinking: false}"]))
    assert cfg.task.prompt_format == "raw" and cfg.task.chat_template_kwargs == {"enable_thinking": False}
    with pytest.raises(ValueError, match="task.prompt_format"):
        TaskConfig(prompt_format="plain")
    with pytest.raises(ValueError, match="task.raw_template"):
        TaskConfig(raw_template="no placeholder")
