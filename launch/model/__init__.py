"""The initial policy: the tiny model and tokenizer made on the spot, a hub download, tokenizer loading, the supervised warm-up, build-once cache folders."""
