"""Zero-shot cross-lingual transfer, XTREME style: fine-tune on English, test on every language.

`tasks.py` (per-task settings), `data.py` (hub and official local formats), `qa_processing.py`
(SQuAD-style features and answer extraction), `finetune.py` (the shared fine-tune/evaluate core),
`squad_metric.py` (official SQuAD v1.1 F1 and exact match).
"""
