"""The memory plan: model shapes, what each learner rank and engine will hold, and that plan against the hardware."""
