"""The experiment's stimuli and trials: prompt variants and dialogue formats, probe prompts, trials with deterministic ids."""
