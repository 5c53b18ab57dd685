"""Prompt files (`prompt_files.load_prompts`) and the data the package ships: `own/` (the project's
prompt sets) and `public/` (public splits); see README.md here. `data:NAME` paths name them."""
