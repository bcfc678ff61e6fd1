"""Evaluation of students: retrieval and downstream fine-tuning (XNLI, PAWS-X, XQuAD)."""
