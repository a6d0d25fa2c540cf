"""The quickstart's generated task, tokenizer, base model, steps and report; the command is
megatron_wmss/commands/quickstart.py (`wmss quickstart`, docs/quickstart.md)."""
