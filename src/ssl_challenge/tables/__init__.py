"""The tables made from the pipeline's results, one module each: ``leaderboard`` (every model, the best layer of
each track, stage times), ``codc_ablation`` (the seed's Table 2: before / after CODC, concatenation, the control)
and ``dc_vs_odc`` (pretraining time and time to accuracy); ``formats`` renders them (CSV, Markdown, LaTeX)."""
