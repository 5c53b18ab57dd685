"""The training pipeline: collection and labels (`collect`), InfoNCE per layer (`losses`, `infonce`),
the settings search on validation prompts (`search`), and the whole run (`pipeline.train_and_choose`)."""
