"""Evaluation: transmission schemes, the SNR x fc x scheme sweep, Table II and the figures.

- :mod:`.schemes`: centralized, feature, meg, linear and digital transmission of one batch;
- :mod:`.sweep`: ``meg eval``, the resumable sweep writing ``{out_dir}/eval/results.csv``;
- :mod:`.table2`: Table II (symbols sent and model sizes) from the real model shapes;
- :mod:`.figures`: ``meg figures``, Figs. 5-10 from saved results;
- :mod:`.report`: W&B logging of the results (tables, line plots, image grids).
"""
