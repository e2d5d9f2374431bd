"""The data stages, corpus to training batches, each in its own module.

corpus (read documents) -> preprocess (split, train the tokenizer, tokenize, pack) -> chunks (the
on-disk store) -> pipeline (prepare once and cache; the U-token budget; the per-epoch iterator) ->
evalset (the fixed validation sequences); tokenizer and label_noise serve those stages.

`python -m dlmscale.data` prepares data on its own (__main__.py).
"""
