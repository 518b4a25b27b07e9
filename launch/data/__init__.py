"""Problems: the tasks and their prompts, benchmark presets and row loaders, difficulty re-balancing, the arithmetic task's first-error finder."""
