"""The bundled model's card (README.md), filled in by bundled.py from what it measured, and its chat template (a user
message becomes `Question: ...\nAnswer:`, the format the model was trained on)."""

CARD = """---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags: [llama, math, selective-language-modeling, rho-1]
---
# rho-math-tiny

The default model of rho-serve: a {params:.2f}M-parameter Llama trained on CPU with **Selective Language Modeling**
(Rho-1, arXiv 2404.07965) by this repository's `slm_train` pipeline, on the `arith` task: 2-3-step word problems with
operands 2-9 and results below 100, answered in the format it was trained on:

    Question: Tom has $44. Tom buys 7 pens for $6 each. How many dollars does Tom have left?
    Answer: 7 * 6 = 42. 44 - 42 = 2. The answer is 2.

## Measured here (held-out problems, greedy, through rho-serve's engine)
| | value |
|---|---|
| answer accuracy on {n} held-out problems (unused seed, never in training), 0-shot | **{acc:.1%}** |
| exact solution (every step and the answer as the generator writes them) | {exact:.1%} |
| floor: always the most frequent answer / the last number in the question | {most:.1%} / {last:.1%} |
| held-out clean loss per token (first problems of the held-out set) | {eval_loss:.3f} |

Sample (0-shot, first held-out problem): `{sample}`

## Use
```
rho-serve                                  # serves this folder by default
curl localhost:3000/generate -H 'Content-Type: application/json' -d '{{"inputs": "Question: Tom has 3 boxes of 4 \\
apples and 5 loose apples. How many apples does Tom have?\\nAnswer:", "parameters": {{"max_new_tokens": 48}}}}'
```
Greedy; it writes the steps, `The answer is N.` and EOS. The chat routes work too: `chat_template.jinja` renders a
user message as `Question: ...\\nAnswer:`, the format above (pass `"temperature": 0`: OpenAI's default samples). Other kinds of questions (GSM8K, larger numbers, other
wording) are outside what it has seen.

## Model
LlamaForCausalLM (RoPE, RMSNorm, SwiGLU), hidden {hidden}, {layers} layers, {heads} heads, MLP {mlp}, vocabulary
{vocab} (SentencePiece BPE, split digits, byte fallback, BOS added), context {ctx} (trained on rows of {seq_len}
tokens), float32 weights.

## Recipe (`python -m slm_train.bundled`; `slm_train/bundled.py`, the `arith` preset of `slm-train experiment`)
1. Corpora (generated, seeded; documents packed whole first-fit, padding masked): a curated clean set of {clean:,}
   tokens of correct problems; noisy corpora of the labelled web-like mix (clean problems, exact duplicates,
   templated boilerplate, off-domain text with numbers, random ids, markup; 30% of the problems with one wrong step,
   propagated to the answer).
2. Base: causal LM on a noisy corpus for {base:,} tokens. Reference: the base + {ref_epochs} epochs of the clean
   set. Scores: the reference's loss on every token of another noisy corpus ({noisy_tokens:,} tokens).
3. This model: the base trained with SLM on that corpus, keeping the top {ratio_pct}% of tokens of each batch by
   excess loss `L_theta - L_ref` (eq. 4), for {arm_tokens:,} processed tokens; AdamW lr {lr}, cosine,
   {batch} rows of {seq_len} tokens per step. The ratio is Rho-1's 60%, chosen before the `arith` sweep
   (reports/slm/report.md), which ranks 20/40/60% within noise of each other, all above causal LM and random selection.

## Evaluation (rho-eval)
GSM8K and MATH-500 (`rho-eval run ... --data gsm8k,minerva_math --prompt-type cot`) have not been re-run for this
model: it has only seen the `arith` problems, so on real GSM8K text it should be expected near 0%.

## Limitations
Tiny and trained for minutes on CPU: it knows one narrow kind of problem with small numbers. A demonstration of the
pipeline and the server, not a general math model.
"""

CHAT_TEMPLATE = "{#- a space after BOS: the tokenizer then writes '<s> ▁Question', exactly as in training (BOS + the text) -#}\n{{- bos_token ~ ' ' -}}\n{%- for message in messages -%}\n{%- if message['role'] == 'system' -%}\n{{ message['content'] }}\n\n{% elif message['role'] == 'user' -%}\nQuestion: {{ message['content'] }}\n{% elif message['role'] == 'assistant' -%}\nAnswer: {{ message['content'] }}\n\n{% else -%}\n{{ raise_exception('rho-math-tiny has no ' ~ message['role'] ~ ' role: it was trained on Question/Answer text') }}\n{%- endif -%}\n{%- endfor -%}\n{%- if add_generation_prompt %}Answer:{% endif -%}\n"
