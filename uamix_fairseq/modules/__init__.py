"""Plain-PyTorch building blocks of the method: the AudioMAE encoder, the NNCLR head,
queue and losses, views, mixtures, MAE, SwARo, UnReMix, attacks, freezing, and the
small helpers they share. None of them imports fairseq."""
