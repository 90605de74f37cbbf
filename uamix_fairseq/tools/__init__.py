"""Tools around trained encoders: export to the official AudioMAE layout (`export`),
clip embeddings (`embed`, `export_embeddings` = `uamix-embed`), t-SNE plots (`tsne`)
and the HEAR 2021 API (`hear`). Evaluation (`uamix_fairseq.evaluation`) and data
preparation (`uamix_fairseq.prepare`) are the other two tool packages."""
