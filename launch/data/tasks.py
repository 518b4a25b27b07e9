"""Problems the policy is trained and evaluated on, and the prompt it sees.

Two sources, chosen by `TaskConfig.name`:

- ``"arith"`` (the embedded default): synthetic multi-step integer arithmetic with
  carries, e.g. ``Compute 47 + 38 - 19.``, with a worked solution written as explicit
  steps (``47 + 38 = 85. 85 - 19 = 66. The answer is \\boxed{66}.``) for the supervised
  warm-up. The number of operands and digits set the difficulty; `teacher_slip` makes the
  worked solutions slip on carries, so that the warmed-up policy inherits a systematic error
  that the RL loop, which sees only final answers, has room to correct.
- ``"jsonl"``: a JSONL file, or a benchmark preset by name (``math500``, ``gsm8k_test``,
  ...), found and read by `launch.data.benchmarks` with the gold answer taken from the field
  each preset keeps it in; also a Parquet file, a `save_to_disk` folder, or any Hugging Face
  dataset by name (``hf:AI-MO/NuminaMath-CoT`` with `hf_config` / `hf_split` / `hf_revision`).

With `task.passrate_file` the train split is re-balanced by pass rate (`launch.data.rebalance`,
docs/algorithm.md "Data"): hard problems repeated, the always-solved dropped.

The prompt (`build_prompt`) is the policy's own chat template, a system prompt asking for
step-by-step reasoning and a final ``\\boxed{}`` answer, and the raw question as the user
turn (docs/algorithm.md, "Prompt").
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from launch.data.benchmarks import MAX_QUESTION_CHARS, HubDataset, load_problems
from launch.data.problem import Problem
from launch.data.rebalance import PAPER_BUCKETS, apply_pass_rate_file, check_buckets

DEFAULT_SYSTEM_PROMPT = (
    "Please reason step by step, and put your final answer within \\boxed{}."
)


@dataclass
class TaskConfig:
    """Which problems to train and hold out on (schema of `conf/task/*.yaml`)."""

    # "arith": synthetic multi-step arithmetic (embedded default); "jsonl": a JSONL file.
    name: str = "arith"
    # jsonl only: a file path, or a bare benchmark name ("math500") looked up in benchmarks_dir
    # (fetched from its public hub source when not there and the hub is reachable), or
    # "hf:<name>": a Hugging Face dataset by name (hf:AI-MO/NuminaMath-CoT), read with
    # datasets.load_dataset and the hf_* keys below.
    path: str | None = None
    # hf:<name> only (task.path, task.exclude_path and eval.benchmarks alike): the dataset's
    # config (null: its default), split, revision (branch, tag or commit; null: main), and
    # cache folder (null: datasets' own, $HF_DATASETS_CACHE or $HF_HOME/datasets).
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None
    hf_cache_dir: str | None = None
    # Folder for bare benchmark names; null = $OREAL_BENCHMARKS if set, else
    # ../shared/data/benchmarks beside the repository (launch.data.benchmarks).
    benchmarks_dir: str | None = None
    # jsonl only: where the gold answer is, "auto" = per-file rule from the data README
    # (else a spec: "answer", "boxed:solution", "after_hashes:answer", "join:final_answer").
    answer_field: str = "auto"
    # jsonl only: the question's field; "auto" = "problem", else "question".
    question_field: str = "auto"
    # jsonl only: drop problems whose question text also appears in this file (e.g. train on
    # math_test_full minus math500); a path or bare benchmark name, None = keep all.
    exclude_path: str | None = None
    # jsonl only: a row whose question is longer than this is skipped as broken (listed in
    # the loader's warning with the other bad rows: not UTF-8, not JSON, no question/answer).
    max_question_chars: int = MAX_QUESTION_CHARS
    # Problems in the train split (jsonl: at most this many; 0 = all that are left).
    num_train: int = 2000
    # Problems in the held-out split (drawn first, so it does not change with num_train).
    num_heldout: int = 200
    # Seed of the generator (arith) or of the row shuffle before splitting (jsonl).
    seed: int = 0
    # arith: numbers per problem, drawn uniformly from [min_operands, max_operands].
    min_operands: int = 2
    max_operands: int = 3
    # arith: > 0 draws the count of numbers from a power law instead, P(n) proportional to
    # (n - min_operands + 1) ** -operands_zipf on the same range: mostly short problems and a
    # long tail of long ones, so response lengths have a long tail (conf/task/arith_long_tail.yaml).
    operands_zipf: float = 0.0
    # arith: digits per number, drawn uniformly from [min_digits, max_digits].
    min_digits: int = 1
    max_digits: int = 2
    # arith: operators to draw from, any of "+-".
    operators: str = "+-"
    # arith: allow negative intermediate results (else a "-" that would go below 0 becomes "+").
    allow_negative: bool = False
    # arith: probability that the worked solution (the warm-up's teacher) gets a step that
    # carries or borrows wrong, one too low; the gold answer stays right. A teacher that
    # slips more often than not leaves the warmed-up policy with a systematic error that
    # only outcome rewards can correct (0 = a flawless teacher).
    teacher_slip: float = 0.0
    # System turn of every prompt.
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # "chat": the model's chat template (system + user turns, assistant header); "raw" (base
    # models): `raw_template` filled with {system_prompt} and {question}, no chat template.
    prompt_format: str = "chat"
    # raw only: the text the model continues.
    raw_template: str = "{system_prompt}\n\nQuestion: {question}\nAnswer:"
    # chat only: a Jinja chat template used instead of the tokenizer's (the template text, or
    # the path of a .jinja file); null = the tokenizer's own.
    chat_template: str | None = None
    # chat only: extra keyword arguments the chat template sees (e.g. {enable_thinking: false}).
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # Difficulty re-balancing (docs/algorithm.md "Data"): a passrate.jsonl written by
    # `python -m launch.passrate`; the train split repeats each problem as its pass-rate bucket
    # in `rebalance` says (a problem the file does not list is kept once). null = off.
    passrate_file: str | None = None
    # [low, high, repeats] per pass-rate bucket, [low, high) (the last also holds high),
    # covering [0, 1]; the paper's: x6, x4, x4, x2, and >= 0.8 dropped.
    rebalance: list[Any] = field(default_factory=lambda: [list(b) for b in PAPER_BUCKETS])

    def __post_init__(self) -> None:
        if self.name not in ("arith", "jsonl"):
            raise ValueError(f"task.name must be 'arith' or 'jsonl', got {self.name!r}")
        if self.name == "jsonl" and not self.path:
            raise ValueError("task.path is required when task.name is 'jsonl'")
        if self.name == "arith" and self.path and self.path.startswith("hf:"):
            raise ValueError(f"task.path={self.path!r} is a Hugging Face dataset, but task.name is 'arith' "
                             "(synthetic problems): set task.name=jsonl")
        if not self.hf_split or not self.hf_split.strip():
            raise ValueError("task.hf_split must name a split (e.g. train or test)")
        if self.operands_zipf < 0:
            raise ValueError(f"task.operands_zipf must be >= 0 (0: uniform), got {self.operands_zipf}")
        if not 2 <= self.min_operands <= self.max_operands:
            raise ValueError(
                f"need 2 <= task.min_operands <= task.max_operands, "
                f"got {self.min_operands}, {self.max_operands}"
            )
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(
                f"need 1 <= task.min_digits <= task.max_digits, got {self.min_digits}, {self.max_digits}"
            )
        if not self.operators or set(self.operators) - set("+-"):
            raise ValueError(f"task.operators must be made of '+' and '-', got {self.operators!r}")
        if not 0.0 <= self.teacher_slip <= 1.0:
            raise ValueError(f"task.teacher_slip must be in [0, 1], got {self.teacher_slip}")
        if self.num_train < 0 or self.num_heldout < 0:
            raise ValueError("task.num_train and task.num_heldout must be >= 0")
        if self.max_question_chars < 1:
            raise ValueError(f"task.max_question_chars must be >= 1, got {self.max_question_chars}")
        if self.prompt_format not in ("chat", "raw"):
            raise ValueError(f"task.prompt_format must be 'chat' or 'raw', got {self.prompt_format!r}")
        if "{question}" not in self.raw_template:
            raise ValueError("task.raw_template must contain {question}")
        check_buckets(self.rebalance)

    @property
    def hub(self) -> HubDataset:
        """How hf:<name> datasets are read (task.hf_config, hf_split, hf_revision, hf_cache_dir)."""
        return HubDataset(self.hf_config, self.hf_split, self.hf_revision, self.hf_cache_dir)


class TaskSplits(NamedTuple):
    train: list[Problem]
    heldout: list[Problem]


def load_task(cfg: TaskConfig, rebalanced: bool = True) -> TaskSplits:
    """The train and held-out problems that `cfg` describes (disjoint, deterministic). With
    `task.passrate_file` (and `rebalanced`), the train split is re-balanced by pass rate
    (`launch.data.rebalance`: problems repeated or dropped, a histogram printed); the held-out split
    never is. `rebalanced=False`: each train problem once (pass-rate measurement, warm-up)."""
    splits = make_arith_problems(cfg) if cfg.name == "arith" else _split_jsonl(cfg)
    if cfg.passrate_file and rebalanced:
        splits = TaskSplits(apply_pass_rate_file(splits.train, cfg.passrate_file, cfg.rebalance), splits.heldout)
        if not splits.train:
            raise ValueError(f"task.passrate_file={cfg.passrate_file!r}: every train problem was dropped "
                             "(all in a bucket of 0 repeats of task.rebalance)")
    return splits


# ---------------------------------------------------------------------------------------
# Synthetic arithmetic
# ---------------------------------------------------------------------------------------

def make_arith_problem(rng: random.Random, cfg: TaskConfig, pid: str,
                       teacher_rng: random.Random | None = None) -> Problem:
    """One problem such as ``Compute 47 + 38 - 19.``, evaluated left to right.

    The worked solution slips on a carrying or borrowing step with probability
    `cfg.teacher_slip`, drawn from `teacher_rng` (default: one seeded by `pid`), never from
    `rng`, so that the problems themselves do not depend on the slip rate.
    """
    n = _draw_operands(rng, cfg)
    numbers = [_draw_number(rng, cfg)]
    ops: list[str] = []
    total = numbers[0]
    for _ in range(n - 1):
        op, x = rng.choice(cfg.operators), _draw_number(rng, cfg)
        if op == "-" and x > total and not cfg.allow_negative:
            op = "+"
        numbers.append(x)
        ops.append(op)
        total = total + x if op == "+" else total - x
    expr = str(numbers[0]) + "".join(f" {op} {x}" for op, x in zip(ops, numbers[1:]))
    answer = str(total)
    teacher_rng = teacher_rng or random.Random(f"teacher-{pid}")
    # The teacher's worked solution: right, except where it slips (its own running total).
    steps, shown = [], numbers[0]
    for op, x in zip(ops, numbers[1:]):
        new = shown + x if op == "+" else shown - x
        if cfg.teacher_slip and carries(shown, op, x) and teacher_rng.random() < cfg.teacher_slip:
            new -= 1
        steps.append(f"{shown} {op} {x} = {new}.")
        shown = new
    solution = " ".join(steps) + f" The answer is \\boxed{{{shown}}}."
    return Problem(id=pid, question=f"Compute {expr}.", answer=answer, solution=solution)


def carries(a: int, op: str, b: int) -> bool:
    """Whether ``a op b`` carries (+) or borrows (-) in the units column, where the teacher
    can slip. One too low on such steps never cancels out later, so a slipped solution
    always ends in a wrong answer.

    >>> carries(7, "+", 8), carries(12, "-", 5), carries(12, "+", 5)
    (True, True, False)
    """
    return (abs(a) % 10 + abs(b) % 10 >= 10) if op == "+" else (abs(a) % 10 < abs(b) % 10)


def _draw_operands(rng: random.Random, cfg: TaskConfig) -> int:
    """How many numbers a problem has: uniform, or power-law with `operands_zipf`."""
    if not cfg.operands_zipf:
        return rng.randint(cfg.min_operands, cfg.max_operands)
    counts = range(cfg.min_operands, cfg.max_operands + 1)
    return rng.choices(counts, weights=[(n - cfg.min_operands + 1) ** -cfg.operands_zipf for n in counts])[0]


def _draw_number(rng: random.Random, cfg: TaskConfig) -> int:
    digits = rng.randint(cfg.min_digits, cfg.max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def make_arith_problems(cfg: TaskConfig) -> TaskSplits:
    """Distinct problems from one seeded stream: held-out first, then train."""
    rng = random.Random(cfg.seed)
    teacher_rng = random.Random(f"teacher-{cfg.seed}")
    wanted = cfg.num_heldout + cfg.num_train
    seen: set[str] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < wanted:
        attempts += 1
        if attempts > 50 * wanted + 1000:
            raise ValueError(
                f"could only draw {len(problems)} distinct arithmetic problems of the "
                f"{wanted} asked for (task.num_train + task.num_heldout); raise "
                f"task.max_operands or task.max_digits"
            )
        split = "heldout" if len(problems) < cfg.num_heldout else "train"
        p = make_arith_problem(rng, cfg, pid="draft", teacher_rng=teacher_rng)
        if p.question in seen:
            continue
        seen.add(p.question)
        index = len(problems) if split == "heldout" else len(problems) - cfg.num_heldout
        problems.append(Problem(f"arith-{split}-{index}", p.question, p.answer, p.solution))
    return TaskSplits(train=problems[cfg.num_heldout:], heldout=problems[: cfg.num_heldout])


def arith_corpus(num: int = 2000, seed: int = 1234) -> list[str]:
    """Questions and worked solutions over a broad difficulty range (tokenizer training)."""
    cfg = TaskConfig(min_operands=2, max_operands=4, min_digits=1, max_digits=3, allow_negative=True)
    rng = random.Random(seed)
    texts = []
    for i in range(num):
        p = make_arith_problem(rng, cfg, pid=f"corpus-{i}")
        texts += [p.question, p.solution]
    return texts


# ---------------------------------------------------------------------------------------
# JSONL files and benchmark presets (launch.data.benchmarks)
# ---------------------------------------------------------------------------------------

def _split_jsonl(cfg: TaskConfig) -> TaskSplits:
    assert cfg.path is not None
    problems = load_problems(cfg.path, cfg.benchmarks_dir, cfg.answer_field, cfg.question_field,
                             cfg.max_question_chars, hub=cfg.hub, key="task.path")
    if cfg.exclude_path:
        excluded = load_problems(cfg.exclude_path, cfg.benchmarks_dir, max_question_chars=cfg.max_question_chars,
                                 hub=cfg.hub, key="task.exclude_path")
        drop = {_norm(p.question) for p in excluded}
        problems = [p for p in problems if _norm(p.question) not in drop]
    random.Random(cfg.seed).shuffle(problems)
    if cfg.num_heldout > len(problems):
        raise ValueError(
            f"task.num_heldout={cfg.num_heldout} but {cfg.path} has only {len(problems)} problems"
        )
    heldout, rest = problems[: cfg.num_heldout], problems[cfg.num_heldout :]
    train = rest[: cfg.num_train] if cfg.num_train else rest
    return TaskSplits(train=train, heldout=heldout)


def _norm(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------
# Prompt
# ---------------------------------------------------------------------------------------

def load_policy_tokenizer(model_path: str) -> Any:
    """The policy's tokenizer (`AutoTokenizer`'s class, as vLLM loads it; see
    `launch.model.tokenizer_class`), refused with one line naming `model.path` when it cannot be
    loaded or has no stop token (`eos_token_id`): the stop token ends every response and is
    part of the trained response (docs/algorithm.md, "Prompt")."""
    from launch.model.tokenizer_class import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_path)
    except (OSError, ValueError) as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"model.path={model_path!r}: cannot load its tokenizer ({first})") from e
    if tokenizer.eos_token_id is None:
        raise ValueError(f"model.path={model_path!r}: the tokenizer has no stop token (eos_token_id is None); "
                         "set eos_token in its tokenizer_config.json")
    return tokenizer


def build_prompt(tokenizer: Any, question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT, *,
                 chat_template: str | None = None, chat_template_kwargs: dict[str, Any] | None = None) -> str:
    """The text the policy continues: chat template with system + user turns, then the
    assistant header (``add_generation_prompt=True``). An empty system prompt is left out.
    `chat_template` replaces the tokenizer's; `chat_template_kwargs` reach the template."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    extra = {"chat_template": chat_template} if chat_template else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **extra,
                                         **(chat_template_kwargs or {}))


def task_prompt(tokenizer: Any, question: str, cfg: TaskConfig) -> str:
    """The prompt of one question as `cfg` asks: `build_prompt` with the task's system prompt,
    template override and template arguments, or the raw template (task.prompt_format)."""
    if cfg.prompt_format == "raw":
        return cfg.raw_template.format(system_prompt=cfg.system_prompt, question=question).lstrip()
    template = cfg.chat_template
    if template and "{" not in template and template.endswith(".jinja"):
        from pathlib import Path

        path = Path(template).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"task.chat_template={template!r}: no such file")
        template = path.read_text()
    return build_prompt(tokenizer, question, cfg.system_prompt, chat_template=template,
                        chat_template_kwargs=dict(cfg.chat_template_kwargs))
