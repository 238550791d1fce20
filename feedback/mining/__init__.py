"""Failure mining: group what the model gets wrong into its distinct blind spots, describe each in
measured words, and write the prompts and edit instructions that make more of exactly that."""
