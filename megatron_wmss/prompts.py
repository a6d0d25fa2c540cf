"""Prompt constants shared by the data pipeline (training) and `wmss eval`, kept in one place so both
render identical prompts.

DEFAULT_SYSTEM_PROMPT is the tag-style system prompt the paper uses for Qwen-family bases (App. E.4:
"instructs the model to emit <think>...</think> followed by <answer>...</answer>"). The paper does not
print the text; this is the exact string of the public reference implementation
(chenzehao82/Weak-Driven-Learning, utils/prompts.py), which is also the AM-DeepSeek-R1-Distilled
convention. Note the typographic apostrophe (U+2019) in "user’s": it is part of the trained prompt.

CHATML_TEMPLATE is a plain ChatML Jinja chat template (`<|im_start|>{role}\\n{content}<|im_end|>\\n`,
generation prompt `<|im_start|>assistant\\n`), as used by Qwen2/2.5/3 tokenizers without any
tool/thinking logic.
"""

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. "
    "To answer the user\u2019s question, you first think about the reasoning process and then "
    "provide the user with the answer. The reasoning process and answer are enclosed within "
    "<think> and <answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
